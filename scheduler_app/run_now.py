"""Run a job now from the admin (**Run now**, the periodic tasks' "Run selected tasks"), reporting the real outcome.

:func:`run_now` sends a manual run the way ``run_job`` does and says what
really happened: **started** (with the run's id once the worker has recorded
it), **queued** (sent; no worker has picked it up within the wait), or
**skipped** (another run holds the lock: the holder and the expiry are in
the message), or **not sent** (no worker answered a ping). The admin shows a
skipped run as a warning, never as a success.
"""

from __future__ import annotations

import dataclasses
import time

from scheduler_app.context import iso
from scheduler_app.locks import LockHeld
from scheduler_app.models import JobRun
from scheduler_app.registry import JobSpec
from scheduler_app.senders import sending_as

#: Seconds :func:`run_now` waits for the worker to record the run.
WAIT_FOR_RUN_S = 3.0


@dataclasses.dataclass(frozen=True)
class RunNowOutcome:
    """``status``: ``started``, ``queued``, ``skipped`` or ``not_sent``; ``message`` one line; ``run_id`` when known."""

    status: str
    message: str
    run_id: int | None = None
    task_id: str | None = None


def run_now(spec: JobSpec, *, sender: str, wait_s: float = WAIT_FOR_RUN_S) -> RunNowOutcome:
    """Send one manual run of ``spec`` as ``sender`` (e.g. ``"admin user alice"``) and report what happened."""
    from celery import current_app, states

    if not current_app.control.ping(timeout=1.0, limit=1):
        return RunNowOutcome("not_sent", f"{spec.name}: not sent: no Celery worker answered a ping within 1 s; "
                                         f"start one, or run `manage.py run_job {spec.name} --local`")
    task = current_app.tasks[spec.task_name]
    with sending_as(sender):
        result = task.apply_async(kwargs={"trigger": JobRun.Trigger.MANUAL})
    if result.state == states.REJECTED:
        held = result.info
        holder = JobRun.objects.describe_holder(held.holder) if isinstance(held, LockHeld) else "another run"
        run = JobRun.objects.filter(task_id=result.id).only("pk").first()
        return RunNowOutcome("skipped", f"{spec.name} skipped: lock held by {holder}", run.pk if run else None,
                             result.id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        run = JobRun.objects.filter(task_id=result.id).first()
        if run is not None:
            if run.status == JobRun.Status.SKIPPED:
                return RunNowOutcome("skipped", f"{spec.name} skipped ({run.get_skip_reason_display()}): run {run.pk}",
                                     run.pk, result.id)
            return RunNowOutcome("started", f"{spec.name} started: run {run.pk} at {iso(run.started_at)} "
                                            f"({run.get_status_display().lower()} now)", run.pk, result.id)
        time.sleep(0.1)
    return RunNowOutcome("queued", f"{spec.name} sent as task {result.id}; no worker has started it yet", None,
                         result.id)
