"""The seed's ad-hoc lock API for code outside the jobs (SPEC §6), on the job locks' backend.

``acquire_lock(name, ttl_seconds) -> bool``, ``release_lock(name)``,
``with_lock(name, fn, ttl_seconds)`` (fn's result, or None when the lock is
held) and the ``lock(name, ttl_seconds)`` context manager. Each lock is a
redis-py ``Lock`` on the Redis of ``CELERY_ONCE`` (key ``qo_adhoc_<name>``),
taken without waiting and released only by its own acquisition.

Ownership belongs to the acquisition, never to a thread: :func:`acquire_lock`
keeps the acquisition in a :class:`contextvars.ContextVar`, so two asyncio
tasks in one thread, or two threads, never release each other's locks (see
:func:`release_lock`).
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TypeVar

from redis.exceptions import LockError
from redis.lock import Lock

from scheduler_app.locks import _check_ttl, default_backend

T = TypeVar("T")

ADHOC_PREFIX = "qo_adhoc_"

#: Lock name -> the ``Lock`` of an acquisition made by :func:`acquire_lock` in
#: this context. Never mutated, only replaced: a context copied for a new
#: asyncio task or ``asyncio.to_thread`` shares the Lock objects it had then,
#: and nothing set afterwards on either side.
_held: contextvars.ContextVar[Mapping[str, Lock]] = contextvars.ContextVar(
    "scheduler_app_adhoc_locks", default=MappingProxyType({}))


def _take(name: str, ttl_seconds: float) -> Lock | None:
    """Take the lock without waiting; return the acquisition's Lock, or None when it is held."""
    if not name:
        raise ValueError("lock name must not be empty")
    _check_ttl("ttl_seconds", ttl_seconds)
    lock = default_backend().owned_lock(ADHOC_PREFIX + name, ttl_seconds)
    return lock if lock.acquire(blocking=False, token=uuid.uuid4().hex) else None


def _release(lock: Lock) -> bool:
    try:
        lock.release()
    except LockError:  # expired and maybe taken by another holder, or released already
        return False
    return True


def acquire_lock(name: str, ttl_seconds: float) -> bool:
    """Try to take the named lock for ``ttl_seconds`` seconds, without waiting (SPEC §6).

    Returns True when the caller now holds it. The acquisition is remembered
    in the current context (see :func:`release_lock`); the lock expires by
    itself after ``ttl_seconds``.
    Raises:
        ValueError: an empty name, or a TTL below 1 ms or not finite.
        redis.RedisError: Redis is unreachable.
    """
    lock = _take(name, ttl_seconds)
    if lock is None:
        return False
    _held.set(MappingProxyType({**_held.get(), name: lock}))
    return True


def release_lock(name: str) -> bool:
    """Release the named lock if the caller's acquisition still holds it; True when it was released (SPEC §6).

    Who is "the caller": the acquisition made by :func:`acquire_lock` in the
    current :mod:`contextvars` context, which is per asyncio task and per
    thread. So:

    * two asyncio tasks (or two threads) never release each other's locks,
      even in one thread: a task whose lock expired and was taken by another
      gets False and the other's lock stays;
    * a task or thread that started with a *copy* of the acquirer's context
      after it acquired (``asyncio.create_task`` in the acquirer,
      ``asyncio.to_thread``, ``contextvars.copy_context().run``) carries the
      same acquisition and may release it; the acquirer's own release then
      returns False, as the lock is no longer its to release;
    * code that shares one context without asyncio (successive calls in one
      plain thread) shares its acquisitions, as before.

    A lock that expired and was taken by someone else is always left alone
    (compare-and-delete). Raises ``redis.RedisError`` when Redis is unreachable.
    """
    held = _held.get()
    lock = held.get(name)
    if lock is None:
        return False
    _held.set(MappingProxyType({key: value for key, value in held.items() if key != name}))
    return _release(lock)


def with_lock(name: str, fn: Callable[[], T], ttl_seconds: float) -> T | None:
    """Run ``fn()`` under the named lock for at most ``ttl_seconds`` seconds (SPEC §6).

    Returns fn's result, or None (without calling it) when the lock is held.
    Raises what :func:`acquire_lock` raises, and what ``fn`` raises (the lock
    is released first).
    """
    with lock(name, ttl_seconds) as acquired:
        if not acquired:
            return None
        return fn()


@contextlib.contextmanager
def lock(name: str, ttl_seconds: float) -> Iterator[bool]:
    """Context-manager form (SPEC §6): ``with lock("x", 30) as acquired: ...``; released on exit if acquired.

    The block keeps its own acquisition, so an inner or concurrent use of the
    same name can never release this block's lock, nor this block another's.
    Raises what :func:`acquire_lock` raises.
    """
    acquisition = _take(name, ttl_seconds)
    try:
        yield acquisition is not None
    finally:
        if acquisition is not None:
            _release(acquisition)
