"""Job lock: ``OwnedRedisBackend.raise_or_lock`` + ``clear_lock(key, token)`` against ``SET NX PX`` + ``DEL``.

Both sides use the very same Redis client (the backend's, from
``scheduler_app.locks.get_client``), the same key, TTL and tokens, and run
in interleaved rounds; the ops/s reported are the medians of the rounds.
One op is one acquire plus one release, each checked to have succeeded.
"""

from __future__ import annotations

import statistics
import time

from django.conf import settings

from scheduler_app.locks import OwnedRedisBackend

KEY = "bench:lock"
TTL_SECONDS = 600


def _owned(backend: OwnedRedisBackend, tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        backend.raise_or_lock(KEY, TTL_SECONDS, token)
        if not backend.clear_lock(KEY, token=token):
            raise RuntimeError("bench lock: clear_lock did not release the lock it held")
    return len(tokens) / (time.perf_counter() - started)


def _raw(backend: OwnedRedisBackend, tokens: list[str]) -> float:
    client = backend.redis
    ttl_ms = TTL_SECONDS * 1000
    started = time.perf_counter()
    for token in tokens:
        if not client.set(KEY, token, nx=True, px=ttl_ms):
            raise RuntimeError("bench lock: SET NX found the key taken")
        if not client.delete(KEY):
            raise RuntimeError("bench lock: DEL found no key")
    return len(tokens) / (time.perf_counter() - started)


def run(*, ops: int, rounds: int, log=print) -> dict[str, float | int]:
    """``rounds`` interleaved rounds of ``ops`` acquire+release each; return the ``lock.*`` keys."""
    backend = OwnedRedisBackend(settings.CELERY_ONCE["settings"])
    backend.redis.delete(KEY)
    tokens = [f"bench-lock:{n}:{'x' * 32}" for n in range(ops)]  # the size of a job's task id
    log(f"lock: {rounds} interleaved rounds of {ops:,} acquire+release")
    _owned(backend, tokens[:200])  # warm-up: connection, script load
    _raw(backend, tokens[:200])
    owned, raw = [], []
    for n in range(rounds):
        # Alternate which side goes first, so neither always follows the other.
        if n % 2:
            raw.append(_raw(backend, tokens))
            owned.append(_owned(backend, tokens))
        else:
            owned.append(_owned(backend, tokens))
            raw.append(_raw(backend, tokens))
    owned_ops, raw_ops = statistics.median(owned), statistics.median(raw)
    return {
        "lock.ops": ops,
        "lock.rounds": rounds,
        "lock.ops_per_s": round(owned_ops),
        "lock.raw_redis_ops_per_s": round(raw_ops),
        "lock.ratio": round(owned_ops / raw_ops, 3),
    }
