"""Dispatch: trigger -> job start through a real worker, and no-op job throughput vs a plain Celery task.

A real ``celery -A config worker`` (prefork, 2 processes, the bench's
database and Redis, ``EXTRA_JOB_MODULES=bench.tasks``) runs:

* the no-op job ``bench-noop`` (``bench.tasks``), sent the way ``run_job`` sends
  it: ``task.apply_async(kwargs={"trigger": "manual"})``, which takes the job's
  lock, then the worker confirms the lock, records a ``JobRun`` and runs it;
* the plain ``bench.tasks.plain_noop`` (``@app.task``, nothing else).

Latency is from just before ``apply_async`` to the ``JobRun``'s
``started_at`` (both read from this machine's clock). Throughput is a closed
loop, one message in flight, for both kinds alike: send, wait for the result,
send the next. A job run holds its job's lock, so runs of one job are
sequential by design; the next job is sent once the lock is free again (it is
released right after the result is stored).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings

from bench.environment import ROOT, die_with_parent, stop_process_group

WORKER_START_TIMEOUT_S = 60.0
RESULT_TIMEOUT_S = 30.0
CONCURRENCY = 2


class Worker:
    """A ``celery -A config worker`` the bench started, logging to a file."""

    def __init__(self, workdir: str) -> None:
        self.log_path = Path(workdir) / "worker.log"
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["LOG_LEVEL"] = "INFO"  # what production logs per run
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "INFO", "-P", "prefork",
             "-c", str(CONCURRENCY), "-n", f"bench{os.getpid()}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while "ready." not in self.log():
            if self.process.poll() is not None:
                raise RuntimeError(f"the bench worker exited early:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bench worker was not ready within {WORKER_START_TIMEOUT_S:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process_group(self.process)
        self._log.close()


def _wait_lock_free(client, key: str) -> None:
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while client.exists(key):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the job lock {key} stayed held for {RESULT_TIMEOUT_S:.0f}s")
        time.sleep(0.0005)


def _run_job(task, lock_client, lock_key: str) -> tuple[float, str]:
    """Send one run of the job and wait for its outcome; return (trigger time, task id)."""
    from celery import states

    _wait_lock_free(lock_client, lock_key)
    triggered = time.time()
    result = task.apply_async(kwargs={"trigger": "manual"})
    if result.state == states.REJECTED:
        raise RuntimeError(f"the no-op job was skipped: {result.info!r}")
    outcome = result.get(timeout=RESULT_TIMEOUT_S)
    if outcome.get("status") != "SUCCEEDED":
        raise RuntimeError(f"the no-op job did not succeed: {outcome!r}")
    return triggered, result.id


def _run_job_command(job: str) -> float:
    """Wall time in milliseconds of ``python manage.py run_job JOB`` through the worker: the operator's wait."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", "run_job", job], cwd=ROOT, capture_output=True, text=True,
                          timeout=RESULT_TIMEOUT_S * 4, stdin=subprocess.DEVNULL)
    wall_ms = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"run_job {job} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return wall_ms


def _python_start_ms() -> float:
    """Wall time in milliseconds of ``python manage.py check`` (interpreter, Django and settings start-up).

    This is run_job's floor.
    """
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, check=True,
                   timeout=RESULT_TIMEOUT_S * 4, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


def _run_plain(task) -> None:
    if task.apply_async().get(timeout=RESULT_TIMEOUT_S) != 1:
        raise RuntimeError("the plain task returned something else than 1")


def run(*, samples: int, throughput_runs: int, command_runs: int = 5, workdir: str | None = None,
        log=print) -> dict[str, float | int]:
    """Start a worker, measure, stop it; return the ``dispatch.*`` keys."""
    from bench.tasks import noop_job, plain_noop
    from scheduler_app.jobs import get_spec
    from scheduler_app.locks import get_client
    from scheduler_app.models import JobRun

    spec = get_spec("bench-noop")
    lock_client = get_client(settings.REDIS_URL)
    workdir = workdir or tempfile.mkdtemp(prefix="bench-worker-")
    log(f"dispatch: starting a celery worker (prefork, {CONCURRENCY} processes)")
    worker = Worker(workdir)
    try:
        worker.wait_ready()
        for _ in range(5):  # warm-up: pool processes, connections, imports
            _run_job(noop_job, lock_client, spec.lock_key)
            _run_plain(plain_noop)

        log(f"dispatch: {samples} trigger -> start latency samples")
        latencies_ms = []
        for _ in range(samples):
            triggered, task_id = _run_job(noop_job, lock_client, spec.lock_key)
            started_at = JobRun.objects.values_list("started_at", flat=True).get(task_id=task_id)
            latencies_ms.append((started_at.timestamp() - triggered) * 1000)

        log(f"dispatch: throughput, {throughput_runs} no-op jobs and {throughput_runs} plain tasks, interleaved")
        job_seconds = plain_seconds = 0.0
        chunk = max(throughput_runs // 5, 1)
        done = 0
        while done < throughput_runs:
            n = min(chunk, throughput_runs - done)
            started = time.perf_counter()
            for _ in range(n):
                _run_job(noop_job, lock_client, spec.lock_key)
            job_seconds += time.perf_counter() - started
            started = time.perf_counter()
            for _ in range(n):
                _run_plain(plain_noop)
            plain_seconds += time.perf_counter() - started
            done += n

        log(f"dispatch: {command_runs} x `manage.py run_job bench-noop` through the worker, "
            f"and {command_runs} x `manage.py check`")
        command_ms, start_ms = [], []
        for _ in range(command_runs):
            _wait_lock_free(lock_client, spec.lock_key)
            command_ms.append(_run_job_command("bench-noop"))
            start_ms.append(_python_start_ms())
    finally:
        worker.stop()

    quantiles = statistics.quantiles(latencies_ms, n=20, method="inclusive")
    jobs_per_s = throughput_runs / job_seconds
    plain_per_s = throughput_runs / plain_seconds
    return {
        "dispatch.samples": samples,
        "dispatch.p50_ms": round(statistics.median(latencies_ms), 2),
        "dispatch.p95_ms": round(quantiles[18], 2),
        "dispatch.max_ms": round(max(latencies_ms), 2),
        "dispatch.runs": throughput_runs,
        "dispatch.jobs_per_s": round(jobs_per_s, 1),
        "dispatch.plain_celery_tasks_per_s": round(plain_per_s, 1),
        "dispatch.ratio": round(jobs_per_s / plain_per_s, 3),
        "dispatch.run_job_runs": command_runs,
        "dispatch.run_job_wall_ms": round(statistics.median(command_ms), 1),
        "dispatch.manage_py_start_ms": round(statistics.median(start_ms), 1),
    }
