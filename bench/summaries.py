"""Weekly summaries: ``generate_weekly_summaries`` + ``send_summaries_to_members`` with locmem email,
and the job end to end through real worker processes and a real SMTP server (:func:`run_smtp`).

Seeded per group (all ACTIVE): ten members, each a distinct user, one in ten
without an email address; five rounds, 1-3 COMPLETED, 4 (the current one)
and 5 OPEN. Per member: a CONFIRMED contribution to round 3 two weeks before
the summarised week (outside it), and one to round 4 inside the week:
CONFIRMED in full, CONFIRMED for half (so they still owe), or PENDING.

The run is the job's: ``now`` is Monday 2026-11-30 10:00 UTC, so the week is
2026-11-23 to 2026-11-30. Queries are counted with Django's
``CaptureQueriesContext`` at ``groups`` groups and at ten times as many.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext, override_settings

from bench import sql
from bench.environment import ROOT, die_with_parent, stop_process_group
from contributions import services
from contributions.models import Contribution, SummaryDelivery, WeeklySummary
from contributions.services import generate_weekly_summaries, send_summaries_to_members
from contributions.unsubscribe import unsubscribe_url
from devtools.embedded_redis import free_port
from groups.models import Group, Membership, Round

NOW = dt.datetime(2026, 11, 30, 10, 0, 0, tzinfo=dt.UTC)
WEEK_START = dt.datetime(2026, 11, 23, 0, 0, 0, tzinfo=dt.UTC)
MEMBERS_PER_GROUP = 10
ROUNDS_PER_GROUP = 5
CURRENT_ROUND = 4
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


def seed(groups: int) -> tuple[int, int]:
    """Empty the tables and seed ``groups`` ACTIVE groups; return (members, emails expected)."""
    sql.flush(Group, get_user_model())
    members = groups * MEMBERS_PER_GROUP
    p = sql.ts_param()
    user_model = get_user_model()
    sql.insert_series(
        user_model,
        ("password", "is_superuser", "username", "first_name", "last_name", "email", "is_staff", "is_active",
         "date_joined"),
        "'!', %s, 'bench-member-' || i, '', '', "
        "CASE WHEN i %% 10 = 0 THEN '' ELSE 'member' || i || '@example.com' END, %s, %s, " + p,
        members,
        [False, False, True, sql.ts(NOW - dt.timedelta(days=120))],
    )
    first_user = sql.min_id(user_model)
    sql.insert_series(
        Group,
        ("name", "status", "min_members", "max_members", "contribution_amount", "currency", "total_rounds",
         "contract_address", "contract_deployed_at", "created_at", "activated_at"),
        f"'Savings circle ' || i, 'ACTIVE', 3, 12, 50, 'USD', {ROUNDS_PER_GROUP}, '0x' || i, {p}, {p}, {p}",
        groups,
        [sql.ts(NOW - dt.timedelta(days=100)), sql.ts(NOW - dt.timedelta(days=110)),
         sql.ts(NOW - dt.timedelta(days=90))],
    )
    first_group = sql.min_id(Group)
    m = MEMBERS_PER_GROUP
    sql.insert_series(
        Membership,
        ("group", "user", "payout_position", "joined_at", "left_at"),
        f"%s + (i - 1) / {m}, %s + i - 1, (i - 1) %% {m} + 1, {p}, NULL",
        members,
        [first_group, first_user, sql.ts(NOW - dt.timedelta(days=95))],
    )
    first_membership = sql.min_id(Membership)
    r = ROUNDS_PER_GROUP
    number = f"((i - 1) %% {r} + 1)"
    sql.insert_series(
        Round,
        ("group", "number", "recipient", "due_date", "status", "completed_at"),
        f"%s + (i - 1) / {r}, {number}, %s + ((i - 1) / {r}) * {m} + {number} - 1, %s, "
        f"CASE WHEN {number} < {CURRENT_ROUND} THEN 'COMPLETED' ELSE 'OPEN' END, "
        f"CASE WHEN {number} < {CURRENT_ROUND} THEN {p} ELSE NULL END",
        groups * r,
        [first_group, first_membership, NOW.date(), sql.ts(WEEK_START - dt.timedelta(days=7))],
    )
    first_round = sql.min_id(Round)
    fields = ("group", "membership", "round", "amount", "status", "created_at", "confirmed_at")
    # Membership i belongs to group index k = (i - 1) / m; its group's round n has id first_round + k * r + n - 1.
    group_of = f"((i - 1) / {m})"
    sql.insert_series(
        Contribution, fields,
        f"%s + {group_of}, %s + i - 1, %s + {group_of} * {r} + {CURRENT_ROUND - 2}, 50, 'CONFIRMED', {p}, {p}",
        members,
        [first_group, first_membership, first_round, sql.ts(WEEK_START - dt.timedelta(days=15)),
         sql.ts(WEEK_START - dt.timedelta(days=14))],
    )
    in_week = sql.ts_plus_seconds(f"(CAST(i AS bigint) * 7919) %% {7 * 86400}")
    sql.insert_series(
        Contribution, fields,
        f"%s + {group_of}, %s + i - 1, %s + {group_of} * {r} + {CURRENT_ROUND - 1}, "
        "CASE WHEN i %% 3 = 1 THEN 25 ELSE 50 END, "
        "CASE WHEN i %% 3 = 0 THEN 'PENDING' ELSE 'CONFIRMED' END, "
        f"{sql.ts_plus_seconds(f'(CAST(i AS bigint) * 7919) %% {7 * 86400}')}, "
        f"CASE WHEN i %% 3 = 0 THEN NULL ELSE {in_week} END",
        members,
        [first_group, first_membership, first_round, sql.ts(WEEK_START), sql.ts(WEEK_START)],
    )
    sql.settle(user_model, Group, Membership, Round, Contribution, WeeklySummary, SummaryDelivery)
    return members, members - members // 10


def run_once(expected_emails: int) -> dict[str, float | int]:
    """Generate and send the week's summaries once; return seconds and query counts."""
    with override_settings(EMAIL_BACKEND=LOCMEM):
        mail.outbox = []
        reset_queries()  # CaptureQueriesContext counts in a log capped at 9,000 queries
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            summaries = generate_weekly_summaries(now=NOW)
            generated_at = time.perf_counter()
            generate_queries = len(queries)
            sent = send_summaries_to_members(summaries)
            finished = time.perf_counter()
        outbox = len(mail.outbox)
        mail.outbox = []
    if sent != expected_emails or outbox != expected_emails:
        raise RuntimeError(f"summaries: sent {sent} emails ({outbox} in the outbox), expected {expected_emails}")
    return {
        "seconds": finished - started,
        "generate_seconds": generated_at - started,
        "queries": len(queries),
        "generate_queries": generate_queries,
        "summaries": len(summaries),
    }


def run(*, groups: int, log=print) -> dict[str, float | int]:
    """Measure at ``groups`` and at ten times as many; return the ``summaries.*`` keys."""
    log(f"summaries: seeding {groups:,} groups x {MEMBERS_PER_GROUP} members")
    members, emails = seed(groups)
    base = run_once(emails)
    log(f"summaries: seeding {groups * 10:,} groups x {MEMBERS_PER_GROUP} members")
    members_10x, emails_10x = seed(groups * 10)
    at_10x = run_once(emails_10x)
    sql.flush(Group, get_user_model())
    return {
        "summaries.groups": groups,
        "summaries.members": members,
        "summaries.emails": emails,
        "summaries.seconds": round(base["seconds"], 3),
        "summaries.emails_per_s": round(emails / base["seconds"]),
        "summaries.queries": base["queries"],
        "summaries.queries_per_email": round(base["queries"] / emails, 4),
        "summaries.queries_per_email_at_10x": round(at_10x["queries"] / emails_10x, 4),
        "summaries.generate_queries": base["generate_queries"],
        "summaries.generate_seconds": round(base["generate_seconds"], 4),
        "summaries.groups_at_10x": groups * 10,
        "summaries.members_at_10x": members_10x,
        "summaries.seconds_at_10x": round(at_10x["seconds"], 3),
        "summaries.queries_at_10x": at_10x["queries"],
        "summaries.generate_queries_at_10x": at_10x["generate_queries"],
    }


# --- End to end: real workers, a real SMTP server -------------------------------

#: Emails per delivery batch in the SMTP runs (``SUMMARY_EMAIL_BATCH_SIZE``).
SMTP_BATCH = 500
WORKER_START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 1800.0


class SinkProcess:
    """``devtools.smtp_sink`` in its own process: a real SMTP server that counts what it receives."""

    def __init__(self, workdir: str) -> None:
        self.port = free_port()
        self.path = Path(workdir) / "smtp-received.txt"
        self.path.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.smtp_sink", str(self.port), str(self.path)], cwd=ROOT,
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent(),
        )
        if self.process.stdout is None or self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the benchmark's SMTP server did not start")

    def env(self) -> dict[str, str]:
        return {"EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend", "EMAIL_HOST": "127.0.0.1",
                "EMAIL_PORT": str(self.port), "EMAIL_USE_TLS": "false"}

    def count(self) -> int:
        with open(self.path, "rb") as received:
            return sum(1 for _ in received)

    def clear(self) -> None:
        self.path.write_text("")  # the server appends (O_APPEND): it goes on at the new end

    def stop(self) -> None:
        stop_process_group(self.process)


def _cpu_seconds(process) -> float:
    """CPU time (user + system) a psutil process used so far; 0 once it is gone."""
    import psutil

    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores), for the share other work took."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _process_listening_on(port: int):
    """The psutil process listening on 127.0.0.1:``port`` (the bench's redis-server), or None."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return None
    return None


def _run_queue_seconds(process) -> float:
    """Seconds the threads of a process spent runnable but waiting for a core (Linux ``schedstat``); 0 elsewhere."""
    total = 0.0
    try:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[1]) / 1e9
    except OSError:
        return 0.0
    return total


class CpuMeter:
    """CPU seconds of the processes taking part in a run, and of the whole machine, between two readings.

    Parts: ``worker`` (the Celery worker's main process: broker, result
    backend), one ``pool-N`` per pool process (where the batches run; with
    SQLite the database work is done here too, in-process), ``smtp`` (the
    aiosmtpd server), ``redis`` (broker and result backend), ``bench`` (this
    process: the baseline's sender, or polling the run), and ``others``: what
    the rest of the machine used meanwhile (other people's work on a shared
    machine). On PostgreSQL the server's processes are counted in ``others``.
    """

    def __init__(self, *, smtp: SinkProcess, worker: subprocess.Popen | None = None) -> None:
        import psutil
        from django.conf import settings

        self.parts: dict[str, Any] = {"bench": psutil.Process(), "smtp": psutil.Process(smtp.process.pid)}
        redis = _process_listening_on(urlsplit(settings.CELERY_BROKER_URL).port or 6379)
        if redis is not None:
            self.parts["redis"] = redis
        if worker is not None:
            main = psutil.Process(worker.pid)
            self.parts["worker"] = main
            for number, child in enumerate(sorted(main.children(recursive=True), key=lambda p: p.pid), start=1):
                self.parts[f"pool-{number}"] = child
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        readings = {name: _cpu_seconds(process) for name, process in self.parts.items()}
        readings.update({f"wait:{name}": _run_queue_seconds(process) for name, process in self.parts.items()})
        readings["machine"] = _machine_busy_seconds()
        readings["wall"] = time.perf_counter()
        return readings

    def stop(self) -> dict[str, float]:
        """CPU seconds per part since the meter was made, plus ``others``, ``machine`` and ``wall`` seconds.

        ``wait:<part>``: seconds that part was ready to run but waited for a core (the machine was busy).
        """
        after = self._read()
        used = {name: max(after[name] - self._before[name], 0.0) for name in after}
        used["others"] = max(used["machine"] - sum(used[name] for name in self.parts), 0.0)
        return used


def _cpu_line(used: dict[str, float], emails: int) -> str:
    """``worker 0.05 + pool 1.62 (0.81 + 0.81) + smtp 0.66 + ... ms/email; others 0.61 cores``."""
    pools = [name for name in used if name.startswith("pool-")]
    parts = []
    if "worker" in used:
        parts.append(f"worker {1000 * used['worker'] / emails:.2f}")
    if pools:
        each = " + ".join(f"{1000 * used[name] / emails:.2f}" for name in pools)
        parts.append(f"pool {1000 * sum(used[name] for name in pools) / emails:.2f}"
                     + (f" ({each})" if len(pools) > 1 else ""))
    parts += [f"{name} {1000 * used[name] / emails:.2f}" for name in ("smtp", "redis", "bench") if name in used]
    return (f"CPU ms/email: {' + '.join(parts)} = {1000 * _ours(used) / emails:.2f}; "
            f"other work on the machine {used['others'] / used['wall']:.2f} cores")


def _ours(used: dict[str, float]) -> float:
    return sum(seconds for name, seconds in used.items()
               if name not in ("machine", "wall", "others") and not name.startswith("wait:"))


def _wait_line(used: dict[str, float]) -> str:
    """``waited for a core: pool 12% (9% + 15%), smtp 20%`` of the run's wall time."""
    wall = used["wall"]
    pools = [name for name in used if name.startswith("wait:pool-")]
    parts = []
    if pools:
        each = " + ".join(f"{100 * used[name] / wall:.0f}%" for name in pools)
        parts.append(f"pool {100 * sum(used[name] for name in pools) / wall / len(pools):.0f}%"
                     + (f" ({each})" if len(pools) > 1 else ""))
    parts += [f"{name[5:]} {100 * used[name] / wall:.0f}%" for name in ("wait:smtp", "wait:bench") if name in used]
    idle = (os.cpu_count() or 1) - used["machine"] / wall
    return f"waited for a core: {', '.join(parts)} of the time; idle {idle:.2f} cores"


def _start_worker(workdir: str, *, processes: int, smtp: SinkProcess) -> tuple[subprocess.Popen, Path]:
    """A ``celery -A config worker`` with ``processes`` pool processes, sending through ``smtp``."""
    log_path = Path(workdir) / f"smtp-worker-{processes}.log"
    env = {**os.environ, **smtp.env(), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO",
           "SUMMARY_EMAIL_BATCH_SIZE": str(SMTP_BATCH)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "INFO", "-P", "prefork",
             "-c", str(processes), "-n", f"benchsmtp{processes}-{os.getpid()}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent(),
        )
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while "ready." not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process)
            raise RuntimeError(f"the SMTP bench worker did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.05)
    return process, log_path


def _reset_deliveries() -> None:
    SummaryDelivery.objects.all().delete()


def _baseline(smtp: SinkProcess, expected: int, log) -> tuple[float, float, dict[str, float]]:
    """Django's own loop: the same messages rendered and sent over one connection.

    The same messages as the job's batches send: the same rendering
    (``services._WeekLookups.message``) with each member's signed unsubscribe
    link and RFC 8058 headers; what the job adds is planning, claiming,
    recording and Celery.

    Returns (emails/s, send-only emails/s, CPU seconds per part: :class:`CpuMeter`).
    """
    from django.core.mail import get_connection

    summaries = generate_weekly_summaries(now=NOW)
    meter = CpuMeter(smtp=smtp)
    started = time.perf_counter()
    week_start = summaries[0].week_start
    start, end = services._bounds_of_week(week_start)
    counts = services._WeekResult()
    messages = []
    for offset in range(0, len(summaries), services.GROUPS_PER_CHUNK):
        chunk = summaries[offset:offset + services.GROUPS_PER_CHUNK]
        messages += [item.message for item in services._prepare_chunk(chunk, week_start=week_start, start=start,
                                                                      end=end, result=counts,
                                                                      unsubscribe_url=unsubscribe_url)]
    rendered = time.perf_counter()
    connection = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=smtp.port,
                                use_tls=False)
    sent = connection.send_messages(messages)  # opens one connection, sends each, closes it
    finished = time.perf_counter()
    time.sleep(0.2)  # the server's last lines
    used = meter.stop()
    if sent != expected or smtp.count() != expected:
        raise RuntimeError(f"summaries smtp baseline: sent {sent} ({smtp.count()} received), expected {expected}")
    log(f"summaries: Django's loop over one SMTP connection: {expected / (finished - started):,.0f} emails/s "
        f"(sending alone {expected / (finished - rendered):,.0f}/s); {_cpu_line(used, expected)}")
    return expected / (finished - started), expected / (finished - rendered), used


def _pipeline(smtp: SinkProcess, expected: int, *, processes: int, workdir: str,
              log) -> tuple[float, dict[str, float], dict[str, float]]:
    """The job on a worker with ``processes`` pool processes, trigger to the run's end.

    Returns (emails/s, CPU seconds per part (:class:`CpuMeter`), phase seconds:
    ``dispatch`` from the trigger until the batches were sent (worker pick-up,
    generating, planning), ``batches`` until the last batch was recorded,
    ``finish`` until the chord's callback ended the run; each to the bench's
    50 ms polling).
    """
    from celery import current_app

    from scheduler_app.jobs import get_spec
    from scheduler_app.models import JobRun

    worker, log_path = _start_worker(workdir, processes=processes, smtp=smtp)
    try:
        task = current_app.tasks[get_spec("send-contribution-summaries").task_name]
        meter = CpuMeter(smtp=smtp, worker=worker)
        started = time.perf_counter()
        dispatched = batches_done = None
        result = task.apply_async(kwargs={"trigger": "manual"})
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = JobRun.objects.filter(task_id=result.id).first()
            now = time.perf_counter()
            if run is not None and run.parts_total and dispatched is None:
                dispatched = now
            if run is not None and run.parts_total and run.parts_done >= run.parts_total and batches_done is None:
                batches_done = now
            if run is not None and run.status != JobRun.Status.RUNNING:
                break
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the summaries run did not finish:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        used = meter.stop()
    finally:
        stop_process_group(worker)
    time.sleep(0.2)  # the server's last lines
    if run.status != JobRun.Status.SUCCEEDED or run.items_processed != expected or smtp.count() != expected:
        raise RuntimeError(f"summaries smtp, {processes} processes: run {run.status} {run.items_processed} items, "
                           f"{smtp.count()} received, expected {expected}: {run.error}")
    finished = started + seconds
    dispatched = dispatched or finished
    batches_done = batches_done or finished
    phases = {"dispatch": dispatched - started, "batches": batches_done - dispatched,
              "finish": finished - batches_done}
    log(f"summaries: {expected:,} emails through SMTP with {processes} worker process(es) in {seconds:.2f}s "
        f"({run.parts_total} batches; dispatch {phases['dispatch']:.2f}s, batches {phases['batches']:.2f}s, "
        f"finish {phases['finish']:.2f}s); {_cpu_line(used, expected)}; {_wait_line(used)}")
    return expected / seconds, used, phases


def run_smtp(*, groups: int, workdir: str | None = None, log=print) -> dict[str, float | int]:
    """The job end to end through aiosmtpd with 1 and 2 worker processes, and Django's loop: ``summaries.smtp_*``.

    Besides the rates, the CPU each part used per email (:class:`CpuMeter`)
    and the ceiling those figures allow for two processes: every email costs
    ``c`` CPU seconds in all (pool, worker, SMTP server, Redis, the bench's
    polling), so ``cores / c`` emails/s is the most the machine can do,
    ``(cores - other work) / c`` what it can do with the CPU other work left
    it, and two processes can be at most twice as fast as one.
    """
    workdir = workdir or tempfile.mkdtemp(prefix="bench-smtp-")
    log(f"summaries: seeding {groups:,} groups x {MEMBERS_PER_GROUP} members for the SMTP runs")
    _, emails = seed(groups)
    smtp = SinkProcess(workdir)
    try:
        baseline, send_only, baseline_cpu = _baseline(smtp, emails, log)
        rates, used, phases = {}, {}, {}
        for processes in (1, 2):
            _reset_deliveries()
            smtp.clear()
            rates[processes], used[processes], phases[processes] = _pipeline(smtp, emails, processes=processes,
                                                                             workdir=workdir, log=log)
    finally:
        smtp.stop()
    sql.flush(Group, get_user_model())
    cores = os.cpu_count() or 1
    per_email = {n: _ours(used[n]) / emails for n in (1, 2)}
    others = {n: used[n]["others"] / used[n]["wall"] for n in (1, 2)}
    machine_ceiling = cores / per_email[2]
    left_ceiling = max(cores - others[2], 0.0) / per_email[2]
    log(f"summaries: CPU ceiling for 2 processes: {machine_ceiling:,.0f} emails/s on {cores} free cores "
        f"({min(2.0, machine_ceiling / rates[1]):.2f}x one process), {left_ceiling:,.0f} emails/s on the "
        f"{cores - others[2]:.2f} cores other work left ({min(2.0, left_ceiling / rates[1]):.2f}x); "
        f"measured {rates[2]:,.0f} ({rates[2] / rates[1]:.2f}x)")

    def ms(seconds: float) -> float:
        return round(1000 * seconds / emails, 3)

    results: dict[str, float | int] = {
        "summaries.smtp_emails": emails,
        "summaries.smtp_batch_size": SMTP_BATCH,
        "summaries.smtp_baseline_emails_per_s": round(baseline, 1),
        "summaries.smtp_baseline_send_only_emails_per_s": round(send_only, 1),
        "summaries.smtp_emails_per_s_1_worker": round(rates[1], 1),
        "summaries.smtp_emails_per_s_2_workers": round(rates[2], 1),
        "summaries.smtp_speedup_2_workers": round(rates[2] / rates[1], 2),
        "summaries.smtp_server_cpu_share_1_worker": round(used[1]["smtp"] / used[1]["wall"], 2),
        "summaries.smtp_server_cpu_share_2_workers": round(used[2]["smtp"] / used[2]["wall"], 2),
        "summaries.smtp_cost_ratio_to_baseline": round(baseline / rates[1], 2),
        "summaries.smtp_baseline_sender_cpu_ms_per_email": ms(baseline_cpu["bench"]),
        "summaries.smtp_baseline_server_cpu_ms_per_email": ms(baseline_cpu["smtp"]),
        "summaries.smtp_cpu_ceiling_emails_per_s_2_workers": round(machine_ceiling, 1),
        "summaries.smtp_cpu_ceiling_speedup_2_workers": round(min(2.0, machine_ceiling / rates[1]), 2),
        "summaries.smtp_cpu_ceiling_speedup_2_workers_left_by_others": round(min(2.0, left_ceiling / rates[1]), 2),
    }
    for n, label in ((1, "1_worker"), (2, "2_workers")):
        pools = sum(seconds for name, seconds in used[n].items() if name.startswith("pool-"))
        results.update({
            f"summaries.smtp_cpu_ms_per_email_{label}": ms(_ours(used[n])),
            f"summaries.smtp_pool_cpu_ms_per_email_{label}": ms(pools),
            f"summaries.smtp_worker_main_cpu_ms_per_email_{label}": ms(used[n].get("worker", 0.0)),
            f"summaries.smtp_server_cpu_ms_per_email_{label}": ms(used[n]["smtp"]),
            f"summaries.smtp_redis_cpu_ms_per_email_{label}": ms(used[n].get("redis", 0.0)),
            f"summaries.smtp_other_work_cores_{label}": round(others[n], 2),
            f"summaries.smtp_serial_seconds_{label}": round(phases[n]["dispatch"] + phases[n]["finish"], 2),
            # Share of the run a pool process (on average) and the SMTP server were ready but waited for a core.
            f"summaries.smtp_pool_waited_for_core_{label}": round(
                sum(s for name, s in used[n].items() if name.startswith("wait:pool-"))
                / max(sum(1 for name in used[n] if name.startswith("wait:pool-")), 1) / used[n]["wall"], 2),
            f"summaries.smtp_server_waited_for_core_{label}": round(used[n].get("wait:smtp", 0.0) / used[n]["wall"], 2),
            f"summaries.smtp_idle_cores_{label}": round(cores - used[n]["machine"] / used[n]["wall"], 2),
        })
    return results
