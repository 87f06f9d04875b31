"""/metrics, /healthz and check_schedules against real processes (issue 9, SPEC §9)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import override_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from prometheus_client.parser import text_string_to_metric_families

from scheduler_app.jobs import get_spec
from scheduler_app.models import JobRun
from scheduler_app.ops_models import BeatHeartbeat
from tests.processes import ROOT, process_env, start_beat, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def check_schedules(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", "check_schedules", "--no-alert"], cwd=ROOT,
                          env=process_env(**env), capture_output=True, text=True, timeout=60)


@override_settings(METRICS_TOKEN="s3cret-token")
def test_metrics_needs_the_token_or_a_staff_session(client, job_redis):
    JobRun.objects.create(job="test-noop", trigger="manual", status="SUCCEEDED", attempts=1,
                          started_at="2026-11-30T01:00:00Z", finished_at="2026-11-30T01:00:02Z", duration_ms=2000,
                          items_processed=7, task_id="t-1", worker="h:1")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    user = get_user_model().objects.create_user("plain", "plain@example.com", "pw")
    client.force_login(user)
    assert client.get("/metrics").status_code == 401  # logged in but not staff
    client.logout()
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    job = (("job", "test-noop"),)
    by_outcome = (("job", "test-noop"), ("status", "SUCCEEDED"), ("trigger", "manual"))
    assert samples[("scheduler_job_runs_total", by_outcome)] == 1
    assert samples[("scheduler_job_last_success_timestamp_seconds", job)] == 1796000402.0  # 2026-11-30T01:00:02Z
    assert samples[("scheduler_job_last_duration_seconds", job)] == 2.0
    assert samples[("scheduler_job_last_items", job)] == 7
    assert samples[("scheduler_job_lock_held", job)] == 0
    assert samples[("scheduler_job_missed_runs", job)] == 0
    assert "example.com" not in text
    staff = get_user_model().objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    client.force_login(staff)
    assert client.get("/metrics").status_code == 200


def test_healthz_beat_workers_and_check_schedules_with_beat_stopped(client, worker, job_redis):
    # given a job every 2 s, beat and a worker running
    every = IntervalSchedule.objects.create(every=2, period="seconds")
    PeriodicTask.objects.create(name="test-noop", task=get_spec("test-noop").task_name, interval=every)
    beat = start_beat("ops")
    try:
        wait_for(lambda: JobRun.objects.filter(job="test-noop", status="SUCCEEDED").count() >= 3, 60,
                 message="three scheduled runs")
        started = time.monotonic()
        response = client.get("/healthz")
        elapsed = time.monotonic() - started
        body = response.json()
        assert response.status_code == 200, body
        assert body["status"] == "ok"
        assert set(body["checks"]) == {"database", "redis", "beat", "workers"}
        assert all(c["status"] == "ok" and c["detail"] for c in body["checks"].values()), body
        assert elapsed < 1.5
        # and check_schedules is healthy while beat runs (a grace of 3 s)
        healthy = check_schedules(SCHEDULE_GRACE_SECONDS="3")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    finally:
        beat.stop()
        beat.cleanup()
    # when beat has been stopped for longer than the grace
    stopped_at = time.time()
    time.sleep(6)
    # then check_schedules reports the missed times, one line each, and exits 1
    sick = check_schedules(SCHEDULE_GRACE_SECONDS="3")
    assert sick.returncode == 1, sick.stdout + sick.stderr
    missed = [line for line in sick.stdout.splitlines() if line.startswith("test-noop missed ")]
    assert missed, sick.stdout
    assert all(line.endswith("Z") for line in missed)
    # and /healthz fails on beat when its heartbeat is older than the limit
    assert BeatHeartbeat.objects.exists()
    with override_settings(BEAT_HEARTBEAT_MAX_AGE_SECONDS=5):
        response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "fail"
    assert body["checks"]["beat"]["status"] == "fail"
    assert body["checks"]["workers"]["status"] == "ok"
    assert time.time() - stopped_at < 60


def test_healthz_fails_each_check_within_a_second(client, job_redis):
    from scheduler_app import health

    def hangs():
        time.sleep(5)
        return {"status": "ok", "detail": "too late"}

    started = time.monotonic()
    body = health.run_checks({"database": health.check_database, "redis": hangs})
    assert time.monotonic() - started < 1.3
    database = {"status": "ok", "detail": f"{connection.vendor} answered"}
    assert body == {"status": "fail", "checks": {"database": database,
                                                 "redis": {"status": "fail", "detail": "no answer within 1s"}}}


def test_run_job_returns_within_half_a_second_of_the_jobs_end(worker, job_redis):
    def timed(*args: str) -> tuple[int, float, dict[str, float]]:
        """Exit status, wall time and when (time.time()) each output line arrived."""
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "manage.py", "run_job", *args], cwd=ROOT, env=process_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        lines = {line.strip(): time.time() for line in proc.stdout}
        return proc.wait(60), time.monotonic() - started, lines

    # given a worker, and what starting the command costs (--list: Django and the registry loaded, nothing sent)
    _, startup, _ = timed("--list")
    # when run_job sends a no-op job and waits for it
    status, wall, lines = timed("test-noop")
    exited = time.time()
    assert status == 0, lines
    run = JobRun.objects.filter(job="test-noop").latest("started_at")
    # then it prints the outcome within half a second of the run's end and exits soon after (interpreter
    # shutdown, slower when the machine is busy)
    assert run.finished_at is not None and run.duration_ms is not None
    outcome_at = next(at for line, at in lines.items() if line.startswith("Job test-noop succeeded"))
    assert outcome_at - run.finished_at.timestamp() < 0.5, outcome_at - run.finished_at.timestamp()
    assert exited - run.finished_at.timestamp() < 1.5
    # and the ping before sending returns on the first reply instead of waiting out its timeout (2 s a run)
    assert wall - startup - run.duration_ms / 1000 < 1.0, (wall, startup, run.duration_ms)


def test_a_killed_local_runs_lock_is_stale_at_once(job_redis):
    import socket

    from scheduler_app.lock_services import clear_job_lock
    from scheduler_app.locks import default_backend

    # given a local run's lock, renewed a moment ago (full TTL left), whose process was killed
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    spec = get_spec("test-noop")
    token = "test-noop:manual:" + "b" * 32
    default_backend().raise_or_lock(spec.lock_key, spec.lock_ttl, token=token)
    JobRun.objects.create(job="test-noop", trigger="manual", status="RUNNING", attempts=1,
                          started_at="2026-11-30T01:00:00Z", task_id=token, worker=f"{socket.gethostname()}:{gone.pid}")
    # when an operator clears it without --force, then it is cleared: its holder's process is gone
    holder = clear_job_lock(spec, actor="test")
    assert holder is not None and holder.token == token


def test_missed_times_reach_sentry_once_across_check_runs(job_redis):
    from tests.sentry_recorder import SentryRecorder

    # given a job every 2 s and no beat, so its times go missed
    every = IntervalSchedule.objects.create(every=2, period="seconds")
    PeriodicTask.objects.create(name="test-noop", task=get_spec("test-noop").task_name, interval=every)
    time.sleep(5)
    recorder = SentryRecorder()
    try:
        def check() -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "manage.py", "check_schedules"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=60, env=process_env(SCHEDULE_GRACE_SECONDS="1",
                                                                         SENTRY_DSN=recorder.dsn))

        # when check_schedules runs (with alerts), then each missed time is one Sentry error event
        first = check()
        assert first.returncode == 1
        missed = [line for line in first.stdout.splitlines() if " missed " in line]
        wait_for(lambda: len(recorder.events()) >= len(missed), 10, message="Sentry events")
        assert sorted(e["logentry"]["formatted"] if "logentry" in e else e["message"] for e in recorder.events()) \
            == sorted(missed)
        assert all(e["level"] == "error" for e in recorder.events())
        # and a second check (another cron run) reports none of them again
        second = check()
        assert second.returncode == 1
        time.sleep(1.0)
        new = [line for line in second.stdout.splitlines() if " missed " in line and line not in missed]
        assert len(recorder.events()) == len(missed) + len(new)
    finally:
        recorder.close()
