"""Job lock: ``OwnedRedisBackend.raise_or_lock`` + ``clear_lock(key, token)`` against ``SET NX PX`` + ``DEL``.

Both sides use the very same Redis client (the backend's, from
``scheduler_app.locks.get_client``), the same key, TTL and tokens. Each
round alternates blocks of :data:`BLOCK` ops in A-B-B-A order, so both sides
see the same machine load (this 2-core machine is shared); the ops/s
reported are the medians over the rounds and the ratio is the median of the
per-round ratios. One op is one acquire plus one release, each checked to
have succeeded.
"""

from __future__ import annotations

import statistics
import time

from django.conf import settings

from scheduler_app.locks import OwnedRedisBackend

KEY = "bench:lock"
TTL_SECONDS = 600
#: Ops per side between two switches.
BLOCK = 100


def _owned(backend: OwnedRedisBackend, tokens: list[str]) -> float:
    started = time.perf_counter()
    for token in tokens:
        backend.raise_or_lock(KEY, TTL_SECONDS, token)
        if not backend.clear_lock(KEY, token=token):
            raise RuntimeError("bench lock: clear_lock did not release the lock it held")
    return time.perf_counter() - started


def _raw(backend: OwnedRedisBackend, tokens: list[str]) -> float:
    client = backend.redis
    ttl_ms = TTL_SECONDS * 1000
    started = time.perf_counter()
    for token in tokens:
        if not client.set(KEY, token, nx=True, px=ttl_ms):
            raise RuntimeError("bench lock: SET NX found the key taken")
        if not client.delete(KEY):
            raise RuntimeError("bench lock: DEL found no key")
    return time.perf_counter() - started


def run(*, ops: int, rounds: int, log=print) -> dict[str, float | int]:
    """``rounds`` rounds of ``ops`` acquire+release per side; return the ``lock.*`` keys."""
    once: dict = settings.CELERY_ONCE
    backend = OwnedRedisBackend(once["settings"])
    backend.redis.delete(KEY)
    tokens = [f"bench-lock:{n}:{'x' * 32}" for n in range(BLOCK)]  # about the size of a job's task id
    blocks = max(ops // BLOCK, 1)
    log(f"lock: {rounds} rounds of {blocks * BLOCK:,} acquire+release per side, interleaved by {BLOCK}")
    _owned(backend, tokens)  # warm-up: connection, script load
    _raw(backend, tokens)
    owned, raw, ratios = [], [], []
    for _ in range(rounds):
        owned_seconds = raw_seconds = 0.0
        for block in range(blocks):
            if block % 4 in (0, 3):
                owned_seconds += _owned(backend, tokens)
                raw_seconds += _raw(backend, tokens)
            else:
                raw_seconds += _raw(backend, tokens)
                owned_seconds += _owned(backend, tokens)
        owned.append(blocks * BLOCK / owned_seconds)
        raw.append(blocks * BLOCK / raw_seconds)
        ratios.append(raw_seconds / owned_seconds)
    return {
        "lock.ops": blocks * BLOCK,
        "lock.rounds": rounds,
        "lock.ops_per_s": round(statistics.median(owned)),
        "lock.raw_redis_ops_per_s": round(statistics.median(raw)),
        "lock.ratio": round(statistics.median(ratios), 3),
    }
