"""What went wrong with Redis, in plain words, for the commands' one-line errors (issue 11).

A refused password or a full Redis is not "not reachable": telling the
operator to start a Redis that is running sends them the wrong way.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: Words of Redis's replies (and redis-py's messages) that mean the password is missing or wrong.
_AUTH_MARKERS = ("NOAUTH", "WRONGPASS", "Authentication required", "invalid username-password",
                 "HELLO must be called", "invalid password", "AUTH <password> called without")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from (kombu wraps redis-py's in its OperationalError)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe_redis_problem(exc: BaseException, safe_url: str, raw_url: str) -> str:
    """One line saying what is wrong with the Redis at ``safe_url`` (the URL with its password masked).

    ``raw_url`` is only looked at for whether it carries a password; it is never printed.
    """
    from redis.exceptions import AuthenticationError, AuthorizationError, OutOfMemoryError
    from redis.sentinel import MasterNotFoundError

    for error in _chain(exc):
        text = str(error)
        detail = f"{type(error).__name__}: {text}"
        if (isinstance(error, OutOfMemoryError) or "OOM command not allowed" in text
                or "used memory > 'maxmemory'" in text):
            return (f"Redis at {safe_url} is out of memory: it refuses writes above its maxmemory ({detail}); "
                    "free memory there (e.g. old results or keys) or raise its maxmemory")
        if isinstance(error, AuthenticationError | AuthorizationError) or any(m in text for m in _AUTH_MARKERS):
            if urlsplit(raw_url).password is None:
                return (f"Redis at {safe_url} needs a password and REDIS_URL gives none ({detail}); "
                        "put it in REDIS_URL (redis://:PASSWORD@host:port/db) or set REDIS_PASSWORD")
            return (f"Redis at {safe_url} refused the password in REDIS_URL: wrong password or user ({detail}); "
                    "check REDIS_URL or REDIS_PASSWORD")
    for error in _chain(exc):
        if isinstance(error, MasterNotFoundError):
            # redis-py appends the repr of every sentinel's client to "No master found for 'NAME'".
            reason = str(error).split(" : ", 1)[0]
            return (f"Redis at {safe_url} is not reachable: no sentinel named the master ({reason}); "
                    "start the sentinels and the master, or fix master_name in REDIS_URL")
    return f"Redis at {safe_url} is not reachable ({type(exc).__name__}: {exc}); start it or set REDIS_URL"
