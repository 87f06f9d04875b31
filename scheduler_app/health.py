"""``/healthz`` and beat's heartbeat (SPEC §9, issue 9).

``/healthz`` answers JSON ``{"status": "ok"|"fail", "checks": {...}}`` with
one check each for the database, Redis, beat and the workers, each with its
own ``status`` and ``detail``; 200 when all pass, 503 otherwise. Each check
runs in its own thread and gets at most :data:`CHECK_TIMEOUT_S` (1 s): one
that has not answered by then fails ("no answer within 1 s"), so the page
answers in about a second even when Redis or the database hangs. No
authentication and no personal data (host names and ages only).

Beat's liveness: every beat's tick writes its ``hostname:pid`` and the time
to :class:`~scheduler_app.ops_models.BeatHeartbeat` at most every
:data:`HEARTBEAT_INTERVAL_S` seconds (one UPDATE); the check passes when the
youngest heartbeat is younger than ``BEAT_HEARTBEAT_MAX_AGE_SECONDS`` (60).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from scheduler_app.context import worker_name
from scheduler_app.ops_models import BeatHeartbeat

logger = logging.getLogger("scheduler")

#: Seconds each check may take.
CHECK_TIMEOUT_S = 1.0
#: Seconds between two heartbeat writes of one beat.
HEARTBEAT_INTERVAL_S = 5.0


def record_beat_heartbeat(now: dt.datetime | None = None, beat: str | None = None) -> None:
    """Write this beat's heartbeat (one UPDATE; an INSERT the first time)."""
    now = now or timezone.now()
    beat = beat or worker_name()
    if not BeatHeartbeat.objects.filter(beat=beat).update(seen_at=now):
        BeatHeartbeat.objects.update_or_create(beat=beat, defaults={"seen_at": now})


class Heartbeat:
    """Called from beat's tick: writes the heartbeat every :data:`HEARTBEAT_INTERVAL_S`; never raises."""

    def __init__(self) -> None:
        self._last = -float("inf")

    def __call__(self) -> None:
        if time.monotonic() - self._last < HEARTBEAT_INTERVAL_S:
            return
        self._last = time.monotonic()
        try:
            record_beat_heartbeat()
        except Exception:  # the heartbeat must never stop beat
            logger.exception("Could not record beat's heartbeat")


def _ok(detail: str) -> dict:
    return {"status": "ok", "detail": detail}


def _fail(detail: str) -> dict:
    return {"status": "fail", "detail": detail}


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return _ok(f"{connection.vendor} answered")
    finally:
        connection.close()


def check_redis() -> dict:
    from scheduler_app.redis_urls import client_from_url, close_client, probe_options

    # For Redis Sentinel: the current master, as the sentinels name it now.
    client = client_from_url(settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_S,
                             socket_connect_timeout=CHECK_TIMEOUT_S, **probe_options(settings.REDIS_URL))
    try:
        client.ping()
    finally:
        close_client(client)
    return _ok("PING answered")


def check_beat() -> dict:
    try:
        latest = BeatHeartbeat.objects.order_by("-seen_at").values_list("beat", "seen_at").first()
    finally:
        connection.close()
    if latest is None:
        return _fail("no beat has ever recorded a heartbeat")
    beat, seen_at = latest
    age = (timezone.now() - seen_at).total_seconds()
    detail = f"last tick {age:.0f}s ago ({beat})"
    limit = settings.BEAT_HEARTBEAT_MAX_AGE_SECONDS
    return _ok(detail) if age <= limit else _fail(f"{detail}; more than {limit}s")


def check_workers() -> dict:
    from celery import current_app

    replies = current_app.control.ping(timeout=CHECK_TIMEOUT_S * 0.8, limit=1)
    if not replies:
        return _fail(f"no worker answered a ping within {CHECK_TIMEOUT_S * 0.8:g}s")
    return _ok(f"{next(iter(replies[0]))} answered a ping")


CHECKS = {"database": check_database, "redis": check_redis, "beat": check_beat, "workers": check_workers}


def run_checks(checks=None) -> dict:
    """Run every check in parallel, each bounded to :data:`CHECK_TIMEOUT_S`; return the ``/healthz`` body."""
    checks = checks or CHECKS
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="healthz")
    futures = {name: pool.submit(fn) for name, fn in checks.items()}
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    results = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError:
            results[name] = _fail(f"no answer within {CHECK_TIMEOUT_S:g}s")
        except Exception as exc:
            results[name] = _fail(type(exc).__name__)  # the message may carry a URL with a password
    pool.shutdown(wait=False, cancel_futures=True)
    status = "ok" if all(r["status"] == "ok" for r in results.values()) else "fail"
    return {"status": status, "checks": results}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    body = run_checks()
    return JsonResponse(body, status=200 if body["status"] == "ok" else 503)
