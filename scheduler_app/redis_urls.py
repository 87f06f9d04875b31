"""Redis clients from ``REDIS_URL``, including the Redis Sentinel form (issue 11).

``REDIS_URL`` names either one Redis (``redis://``, ``rediss://``,
``unix://``: redis-py reads those itself) or a group of sentinels that know
which server is the master, as kombu spells it::

    sentinel://[:password@]host:port[/db];sentinel://host2:port[/db]?master_name=NAME

The parts are separated by ``;``, one per sentinel. The master's name is the
``master_name`` option; it may stand on any part (once). As in kombu and
Celery's result backend, the database, user and password come from the first
part: they are the master's (the sentinels themselves are asked without a
password). Other options in the query string (``socket_timeout`` ...) are
redis-py's and apply to the master's connections (and the ``socket_*`` ones
to the sentinels' too, redis-py's default).

A sentinel client asks the sentinels for the master's address whenever it
opens a connection, so after a failover (the master dies, a sentinel
promotes a replica) its next connection goes to the new master.

This module uses only the standard library and ``redis`` and imports neither
Django nor Celery: the settings, the lock backend, the health check and the
development launcher all read ``REDIS_URL`` through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

SENTINEL_SCHEME = "sentinel"
#: The query option of a Sentinel URL that names the master (kombu's transport option of that name).
MASTER_NAME_OPTION = "master_name"
#: An example for error messages.
SENTINEL_EXAMPLE = "sentinel://host:26379;sentinel://host2:26379/0?master_name=mymaster"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Redis Sentinel (``sentinel://...``)."""
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def split_master_name(url: str) -> tuple[str, str | None]:
    """``url`` without its ``master_name`` option, and that option's value (None when no part gives it).

    This is the URL Celery and kombu are given (kombu refuses options it does
    not know in a broker URL); the name goes into their transport options.

    Raises:
        ValueError: two parts give different master names.
    """
    parts = []
    names: set[str] = set()
    for part in url.split(";"):
        pieces = urlsplit(part)
        query = parse_qsl(pieces.query, keep_blank_values=True)
        names.update(value for key, value in query if key == MASTER_NAME_OPTION)
        kept = [(key, value) for key, value in query if key != MASTER_NAME_OPTION]
        parts.append(urlunsplit(pieces._replace(query=urlencode(kept))) if len(kept) != len(query) else part)
    if len(names) > 1:
        raise ValueError(f"the parts of the Sentinel URL name different masters: {', '.join(sorted(names))}")
    name = names.pop() if names else None
    return ";".join(parts), name or None


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL says: where the sentinels are, the master's name, the master's connection options."""

    sentinels: list[tuple[str, int]]
    master_name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a ``sentinel://`` URL (see the module's docstring).

    Raises:
        ValueError: a part is not ``sentinel://host:port``, the master's name
            is missing, or an option's value is malformed.
    """
    rest, master_name = split_master_name(url)
    if not master_name:
        raise ValueError(f"a Sentinel URL needs the master's name as ?{MASTER_NAME_OPTION}=NAME, "
                         f"e.g. {SENTINEL_EXAMPLE}")
    sentinels: list[tuple[str, int]] = []
    options: dict[str, Any] = {}
    for index, part in enumerate(rest.split(";")):
        scheme, sep, tail = part.strip().partition("://")
        if not sep or scheme.lower() != SENTINEL_SCHEME:
            raise ValueError(f"every part of a Sentinel URL starts with sentinel://, e.g. {SENTINEL_EXAMPLE}")
        # redis-py's own parser reads the address, the credentials, the database and the options.
        parsed = redis.connection.parse_url(f"redis://{tail}")
        host, port = parsed.pop("host", None), parsed.pop("port", None)
        if not host or not port:
            raise ValueError(f"every part of a Sentinel URL names a sentinel's host and port, e.g. {SENTINEL_EXAMPLE}")
        sentinels.append((host, port))
        if index > 0:
            # The database and the credentials are the first part's (as in kombu); options count from any part.
            for key in ("db", "username", "password"):
                parsed.pop(key, None)
        options.update(parsed)
    return SentinelTarget(sentinels, master_name, options)


def client_from_url(url: str, **defaults: Any) -> redis.Redis:
    """A client of the Redis ``url`` names; for a Sentinel URL, of its current master.

    ``defaults`` are redis-py connection options; the URL's own options win
    over them (as with :meth:`redis.Redis.from_url`). Nothing is connected yet.

    Raises:
        ValueError: the URL is malformed (see :func:`parse_sentinel_url` and
            :func:`redis.connection.parse_url`).
    """
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **defaults)
    from redis.sentinel import Sentinel

    target = parse_sentinel_url(url)
    options = {**defaults, **target.options}
    # The sentinels are asked with the socket_* options (redis-py's default: no password, no
    # database) and the retry policy, when one is given, so that a probe's "one try" holds there too.
    sentinel_kwargs = {key: value for key, value in options.items() if key.startswith("socket_") or key == "retry"}
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs, **options)
    return sentinel.master_for(target.master_name)


def probe_options(url: str) -> dict[str, Any]:
    """Options for a client that checks once whether ``url``'s Redis answers (a probe, a health check).

    For a Sentinel URL: no retries. redis-py retries "no master found" and a
    sentinel's refused connection 3 times with up to 7 s of backoff, far
    beyond a probe's timeout. Nothing for the other URLs (they keep
    redis-py's defaults).
    """
    if not is_sentinel_url(url):
        return {}
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"retry": Retry(NoBackoff(), 0)}


def close_client(client: redis.Redis) -> None:
    """Close ``client``'s connections, and for a Sentinel client its connections to the sentinels."""
    client.close()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


def safe_url(url: str, mask: str = "**") -> str:
    """``url`` with its password replaced by ``mask``, for printing (each sentinel's part's, for a Sentinel URL)."""
    parts = []
    # Only a Sentinel URL has parts: a ";" elsewhere may belong to a password.
    for part in url.split(";") if is_sentinel_url(url) else [url]:
        pieces = urlsplit(part)
        if pieces.password is None:
            parts.append(part)
            continue
        userinfo, _, hostinfo = pieces.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        parts.append(urlunsplit(pieces._replace(netloc=f"{user}:{mask}@{hostinfo}")))
    return ";".join(parts)
