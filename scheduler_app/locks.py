"""Owned locks on Redis: a celery-once backend, and the ad-hoc lock API (SPEC §6).

celery-once's stock Redis backend stores a random token it forgets and clears
a lock with a plain ``DEL``, so anyone may release anyone's lock.
:class:`OwnedRedisBackend` keeps celery-once's interface (``raise_or_lock``,
``clear_lock``) and adds ownership:

* the value of a lock is its holder's token (for jobs, the Celery task id);
* ``clear_lock(key, token=...)`` deletes only when the value is that token
  (compare-and-delete in one Lua script); without a token it is the
  operator's forced clear;
* ``renew`` extends the TTL only for the holder, so a job that runs longer
  than its TTL keeps its lock while its worker lives, and the lock expires
  within one TTL after the holder dies.

Acquiring is one ``SET key token NX PX ttl``, the same command a hand-written
lock would use (``make bench`` measures the difference).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import redis
from celery_once.tasks import AlreadyQueued

T = TypeVar("T")

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""

# 1: already ours (TTL refreshed), 2: was free and is now ours, 0: someone else's.
_CLAIM = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return 1
end
if not v then
    redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 2
end
return 0
"""

CLAIM_REFUSED, CLAIM_HELD_ALREADY, CLAIM_TAKEN = 0, 1, 2

#: Client options used unless REDIS_URL's query string sets them
#: (``?socket_timeout=5`` wins over the 10 here).
CLIENT_DEFAULTS = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def get_client(url: str) -> redis.Redis:
    """Return this process's Redis client for ``url`` (one connection pool per URL).

    ``url`` is ``redis://[:password@]host:port/db[?options]``, ``rediss://``
    (TLS) or ``unix://`` (celery-once's ``redis+socket://`` is accepted too).
    Options in the query string (``socket_timeout``, ``health_check_interval``,
    ``ssl_cert_reqs`` ...) are redis-py's and win over :data:`CLIENT_DEFAULTS`.
    Nothing is connected yet.

    Raises:
        ValueError: the scheme is unknown, an option's value is malformed,
            or an option is not a redis-py connection option.
    """
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url)
            if client is None:
                client = _build_client(url)
                _clients[url] = client
    return client


def _build_client(url: str) -> redis.Redis:
    redis_py_url = "unix://" + url.removeprefix("redis+socket://") if url.startswith("redis+socket://") else url
    # from_url applies the URL's options after the keyword arguments, so they win.
    client = redis.Redis.from_url(redis_py_url, **CLIENT_DEFAULTS)
    pool = client.connection_pool
    try:
        # Builds (never connects) one connection, so a misspelt option fails
        # here with its name instead of in the first command a job sends.
        pool.connection_class(**pool.connection_kwargs)
    except TypeError as exc:
        raise ValueError(f"Redis URL {_without_password(url)!r} has an option redis-py does not know: {exc}") from None
    return client


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    return f"{scheme}{sep}{'***' + at if at else ''}{hostpart}" if userinfo else url


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``token`` (a task id for job locks) and ``ttl_ms`` left."""

    token: str
    ttl_ms: int


class LockHeld(AlreadyQueued):
    """celery-once's ``AlreadyQueued`` with the holder's token attached."""

    def __init__(self, countdown: float, holder: LockHolder | None):
        super().__init__(countdown)
        self.holder = holder


class OwnedRedisBackend:
    """celery-once backend whose locks only their holder can release.

    Configured by ``CELERY_ONCE = {"backend": "scheduler_app.locks.OwnedRedisBackend",
    "settings": {"url": REDIS_URL, "default_timeout": 600}}``.
    """

    def __init__(self, settings: dict):
        self.url = settings["url"]
        self.redis = get_client(self.url)
        self._release = self.redis.register_script(_RELEASE)
        self._renew = self.redis.register_script(_RENEW)
        self._claim = self.redis.register_script(_CLAIM)

    def raise_or_lock(self, key: str, timeout: float, token: str | None = None, *,
                      wait: float = 0.0, keep_waiting: Callable[[LockHolder], bool] | None = None) -> str:
        """Take the lock ``key`` for ``timeout`` seconds or raise :class:`LockHeld`.

        Args:
            key: the Redis key.
            timeout: TTL in seconds.
            token: the value to store (a new random one when None).
            wait: seconds to keep trying while the lock is held (celery-once's
                ``blocking_timeout``; 0 = one try). Polls every 20 ms.
            keep_waiting: called with the holder; waiting stops at once when it
                returns False (e.g. the holder is a run for the same scheduled time).
        Returns the token stored.
        Raises:
            LockHeld: another token holds the lock; ``countdown`` is the seconds left.
        """
        token = token or uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while True:
            if self.redis.set(key, token, nx=True, px=int(timeout * 1000)):
                return token
            holder = self.holder(key)
            if holder is None:
                continue  # freed between SET and GET: try again at once
            if time.monotonic() >= deadline or (keep_waiting is not None and not keep_waiting(holder)):
                raise LockHeld(holder.ttl_ms / 1000, holder)
            time.sleep(0.02)

    def claim(self, key: str, token: str, timeout: float) -> int:
        """Confirm or take the lock for ``token``, resetting its TTL to ``timeout`` seconds.

        Returns :data:`CLAIM_HELD_ALREADY` (``token`` held it), :data:`CLAIM_TAKEN`
        (it was free and ``token`` holds it now) or :data:`CLAIM_REFUSED`
        (another token holds it).
        """
        return int(self._claim(keys=[key], args=[token, int(timeout * 1000)]))

    def renew(self, key: str, token: str, timeout: float) -> bool:
        """Extend the lock to ``timeout`` seconds from now if ``token`` holds it; False if it was lost."""
        return bool(self._renew(keys=[key], args=[token, int(timeout * 1000)]))

    def clear_lock(self, key: str, token: str | None = None) -> bool:
        """Release ``key``. With ``token``: only if that token holds it. Without: forced (operators only)."""
        if token is None:
            return bool(self.redis.delete(key))
        return bool(self._release(keys=[key], args=[token]))

    def holder(self, key: str) -> LockHolder | None:
        """Return the current holder of ``key`` or None when the lock is free."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, ttl = pipe.execute()
        if value is None:
            return None
        return LockHolder(token=value.decode() if isinstance(value, bytes) else value, ttl_ms=max(int(ttl), 0))


class LockRenewer:
    """Keeps a lock alive while a job runs: renews it every ``ttl/3`` seconds.

    Use as a context manager around the work. If the lock is found lost
    (forcibly cleared, or Redis was unreachable for a whole TTL),
    ``lost`` becomes True and ``on_lost`` is called once.
    """

    def __init__(self, backend: OwnedRedisBackend, key: str, token: str, ttl_seconds: float,
                 on_lost: Callable[[], None] | None = None):
        self.backend, self.key, self.token, self.ttl = backend, key, token, ttl_seconds
        self.interval = max(ttl_seconds / 3.0, 0.05)
        self.on_lost = on_lost
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lock-renewer:{key}", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                still_held = self.backend.renew(self.key, self.token, self.ttl)
            except redis.RedisError:
                continue  # try again next interval; the TTL leaves two more chances
            if not still_held:
                self.lost = True
                if self.on_lost:
                    self.on_lost()
                return

    def __enter__(self) -> LockRenewer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- The seed's ad-hoc lock API (SPEC §6) ------------------------------------

ADHOC_PREFIX = "qo_adhoc_"
#: (thread id, lock name) -> token: a release can only remove what the same
#: thread acquired, never a lock another thread or process took meanwhile.
_tokens: dict[tuple[int, str], str] = {}
_tokens_lock = threading.Lock()


def default_backend() -> OwnedRedisBackend:
    """The lock backend on the Redis of ``settings.CELERY_ONCE`` (the jobs' lock store)."""
    from django.conf import settings

    return OwnedRedisBackend(settings.CELERY_ONCE["settings"])


def _check(name: str, ttl_seconds: float) -> None:
    if not name:
        raise ValueError("lock name must not be empty")
    if not isinstance(ttl_seconds, (int, float)) or not math.isfinite(ttl_seconds) or ttl_seconds < 0.001:
        raise ValueError(f"ttl_seconds={ttl_seconds!r} is invalid: a number of seconds >= 0.001")


def _take(name: str, ttl_seconds: float) -> str | None:
    """Take the lock; return its token, or None when it is held."""
    _check(name, ttl_seconds)
    token = uuid.uuid4().hex
    try:
        default_backend().raise_or_lock(ADHOC_PREFIX + name, timeout=ttl_seconds, token=token)
    except AlreadyQueued:
        return None
    return token


def acquire_lock(name: str, ttl_seconds: float) -> bool:
    """Try to take the named lock for ``ttl_seconds`` seconds (no waiting).

    Returns True when this thread now holds it. Its token is remembered for
    this thread, so :func:`release_lock` from the same thread releases it and
    nothing else does; the lock expires by itself after ``ttl_seconds``.
    Raises ValueError for an empty name or a TTL below 1 ms (or not finite).
    """
    token = _take(name, ttl_seconds)
    if token is None:
        return False
    with _tokens_lock:
        _tokens[(threading.get_ident(), name)] = token
    return True


def release_lock(name: str) -> bool:
    """Release the named lock if this thread holds it; True when it was released.

    A lock that expired and was taken by someone else is left alone (compare-and-delete).
    """
    with _tokens_lock:
        token = _tokens.pop((threading.get_ident(), name), None)
    if token is None:
        return False
    return default_backend().clear_lock(ADHOC_PREFIX + name, token=token)


def with_lock(name: str, fn: Callable[[], T], ttl_seconds: float) -> T | None:
    """Run ``fn()`` under the named lock; return its result, or None when the lock is held."""
    with lock(name, ttl_seconds) as acquired:
        if not acquired:
            return None
        return fn()


@contextlib.contextmanager
def lock(name: str, ttl_seconds: float) -> Iterator[bool]:
    """Context-manager form: ``with lock("x", 30) as acquired: ...``; released on exit if acquired.

    The block keeps its own token, so an inner or concurrent use of the same
    name can never release this block's lock, nor this block another's.
    """
    token = _take(name, ttl_seconds)
    try:
        yield token is not None
    finally:
        if token is not None:
            default_backend().clear_lock(ADHOC_PREFIX + name, token=token)
