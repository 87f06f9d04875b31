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

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext, override_settings

from bench import sql
from bench.environment import ROOT, die_with_parent, stop_process_group
from contributions import services
from contributions.models import Contribution, SummaryDelivery, WeeklySummary
from contributions.services import generate_weekly_summaries, send_summaries_to_members
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

    def cpu_seconds(self) -> float:
        """CPU time the server process used so far (user + system)."""
        import psutil

        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def count(self) -> int:
        with open(self.path, "rb") as received:
            return sum(1 for _ in received)

    def clear(self) -> None:
        self.path.write_text("")  # the server appends (O_APPEND): it goes on at the new end

    def stop(self) -> None:
        stop_process_group(self.process)


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live children: a worker and its pool."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes, all cores), for the share other work took."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


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


def _baseline(smtp: SinkProcess, expected: int) -> tuple[float, float]:
    """Django's own loop: the same messages rendered and sent over one connection; (emails/s, send-only emails/s)."""
    from django.core.mail import get_connection

    summaries = generate_weekly_summaries(now=NOW)
    started = time.perf_counter()
    week_start = summaries[0].week_start
    start, end = services._bounds_of_week(week_start)
    counts = services._WeekResult()
    messages = []
    for offset in range(0, len(summaries), services.GROUPS_PER_CHUNK):
        chunk = summaries[offset:offset + services.GROUPS_PER_CHUNK]
        messages += [item.message for item in services._prepare_chunk(chunk, week_start=week_start, start=start,
                                                                      end=end, result=counts)]
    rendered = time.perf_counter()
    connection = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=smtp.port,
                                use_tls=False)
    sent = connection.send_messages(messages)  # opens one connection, sends each, closes it
    finished = time.perf_counter()
    time.sleep(0.2)  # the server's last lines
    if sent != expected or smtp.count() != expected:
        raise RuntimeError(f"summaries smtp baseline: sent {sent} ({smtp.count()} received), expected {expected}")
    return expected / (finished - started), expected / (finished - rendered)


def _pipeline(smtp: SinkProcess, expected: int, *, processes: int, workdir: str, log) -> tuple[float, float]:
    """The job on a worker with ``processes`` pool processes, trigger to the run's end; (emails/s, server CPU share)."""
    from celery import current_app

    from scheduler_app.jobs import get_spec
    from scheduler_app.models import JobRun

    worker, log_path = _start_worker(workdir, processes=processes, smtp=smtp)
    try:
        task = current_app.tasks[get_spec("send-contribution-summaries").task_name]
        server_cpu = smtp.cpu_seconds()
        workers_cpu = _tree_cpu_seconds(worker.pid)
        machine_busy = _machine_busy_seconds()
        started = time.perf_counter()
        result = task.apply_async(kwargs={"trigger": "manual"})
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            run = JobRun.objects.filter(task_id=result.id).exclude(status=JobRun.Status.RUNNING).first()
            if run is not None:
                break
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the summaries run did not finish:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        server_share = (smtp.cpu_seconds() - server_cpu) / seconds
        workers_share = (_tree_cpu_seconds(worker.pid) - workers_cpu) / seconds
        machine_share = (_machine_busy_seconds() - machine_busy) / seconds
    finally:
        stop_process_group(worker)
    time.sleep(0.2)  # the server's last lines
    if run.status != JobRun.Status.SUCCEEDED or run.items_processed != expected or smtp.count() != expected:
        raise RuntimeError(f"summaries smtp, {processes} processes: run {run.status} {run.items_processed} items, "
                           f"{smtp.count()} received, expected {expected}: {run.error}")
    log(f"summaries: {expected:,} emails through SMTP with {processes} worker process(es) in {seconds:.2f}s "
        f"({run.parts_total} batches; CPU in cores: worker {workers_share:.2f}, SMTP server {server_share:.2f}, "
        f"whole machine {machine_share:.2f} of {os.cpu_count()})")
    return expected / seconds, server_share


def run_smtp(*, groups: int, workdir: str | None = None, log=print) -> dict[str, float | int]:
    """The job end to end through aiosmtpd with 1 and 2 worker processes, and Django's loop: ``summaries.smtp_*``."""
    workdir = workdir or tempfile.mkdtemp(prefix="bench-smtp-")
    log(f"summaries: seeding {groups:,} groups x {MEMBERS_PER_GROUP} members for the SMTP runs")
    _, emails = seed(groups)
    smtp = SinkProcess(workdir)
    try:
        baseline, send_only = _baseline(smtp, emails)
        log(f"summaries: Django's loop over one SMTP connection: {baseline:,.0f} emails/s "
            f"(sending alone {send_only:,.0f}/s)")
        rates, server_share = {}, {}
        for processes in (1, 2):
            _reset_deliveries()
            smtp.clear()
            rates[processes], server_share[processes] = _pipeline(smtp, emails, processes=processes,
                                                                  workdir=workdir, log=log)
    finally:
        smtp.stop()
    sql.flush(Group, get_user_model())
    return {
        "summaries.smtp_emails": emails,
        "summaries.smtp_batch_size": SMTP_BATCH,
        "summaries.smtp_baseline_emails_per_s": round(baseline, 1),
        "summaries.smtp_baseline_send_only_emails_per_s": round(send_only, 1),
        "summaries.smtp_emails_per_s_1_worker": round(rates[1], 1),
        "summaries.smtp_emails_per_s_2_workers": round(rates[2], 1),
        "summaries.smtp_speedup_2_workers": round(rates[2] / rates[1], 2),
        "summaries.smtp_server_cpu_share_1_worker": round(server_share[1], 2),
        "summaries.smtp_server_cpu_share_2_workers": round(server_share[2], 2),
        "summaries.smtp_cost_ratio_to_baseline": round(baseline / rates[1], 2),
    }
