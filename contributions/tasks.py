"""The jobs that read contributions (SPEC §3): thin wrappers over the services.

* ``send-contribution-summaries`` over ``contributions.services``, fanned out
  over the workers: the job plans the week's deliveries (PENDING rows, set-based)
  and sends one :func:`send_summary_batch` task per ``SUMMARY_EMAIL_BATCH_SIZE``
  members as a chord whose callback, :func:`finish_summary_run`, ends the run.
* ``update-group-statuses`` over ``groups.services.update_group_statuses`` and
  ``contributions.services.check_inactive_groups``. It lives here, not in
  ``groups``, because it needs both apps and only ``contributions`` may import
  ``groups`` (STYLE: dependencies point one way). Its job name, crontab and
  lock TTL are those of SPEC §3; only the task's module path moved (from
  ``groups.tasks``), and ``sync_schedules`` points an existing schedule at it.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import chord, current_task, shared_task
from django.conf import settings
from django.db import close_old_connections

from contributions.services import (
    SummarySendError,
    check_inactive_groups,
    generate_weekly_summaries,
    give_up_batch,
    log_week,
    plan_deliveries,
    send_delivery_batch,
    send_summaries_to_members,
    sent_in_batch,
    summarise_run,
)
from contributions.unsubscribe import unsubscribe_url
from groups.services import update_group_statuses
from scheduler_app.jobs import JobContext, job
from scheduler_app.models import JobRun

logger = logging.getLogger("contributions")
# The inactive-group count is a line about groups: it keeps the ``groups``
# logger it has always had, whichever module the job lives in.
groups_logger = logging.getLogger("groups")

#: Attempts of one delivery batch: the first and this many retries, 2, 4, 8, 16, 32 s apart.
BATCH_MAX_RETRIES = 5
#: A deferred summaries run is not marked lost by a later run before this many seconds: longer
#: than the broker's visibility timeout (a batch whose whole worker died comes back after it)
#: plus an hour for the batches themselves.
DELIVERY_WITHIN_S = settings.CELERY_BROKER_VISIBILITY_TIMEOUT + 3600


# Mondays at 09:00 in TIME_ZONE, summarising the week that ended at Monday
# 00:00. Soft limit 50 min, hard 55 min: above the 10-minute lock TTL (the
# engine renews it), far below the broker's 4 h visibility timeout. Planning
# is a few statements; the sending happens in the batches.
@job("send-contribution-summaries", crontab="0 9 * * 1", lock_ttl=600, soft_time_limit=3000, time_limit=3300)
def send_contribution_summaries_task(ctx: JobContext):
    """Summarise last week for every active group and email the members; return emails sent (or the batches sent).

    On a worker the sending is fanned out: the run stays RUNNING until its
    batches end it. ``run_job --local`` (no worker needed) and dry runs send in
    this process and return the count.
    """
    # A late run (worker backlog, retry) still summarises the week of the
    # Monday it was scheduled for; manual runs use the current time.
    summaries = generate_weekly_summaries(now=ctx.scheduled_for, dry_run=ctx.dry_run)
    if ctx.dry_run or ctx.local or not ctx.run_id:
        return send_summaries_to_members(summaries, dry_run=ctx.dry_run, run_id=ctx.run_id or None,
                                         unsubscribe_url=unsubscribe_url)
    weeks = sorted({summary.week_start for summary in summaries})
    if not weeks:
        logger.info("No active group: no contribution summaries to send")
        return 0
    week_start = weeks[0]  # one week per run: the summaries of one `now`
    plan = plan_deliveries(week_start, run_id=ctx.run_id, batch_size=settings.SUMMARY_EMAIL_BATCH_SIZE)
    if not plan.batches:
        log_week(week_start, sent=0, without_email=plan.without_email, invalid=0, refused=0)
        return 0
    deferred = ctx.defer(total=len(plan.batches), within_s=DELIVERY_WITHIN_S)
    logger.info("Dispatching %d contribution summaries for week %s in %d batches", plan.pending, week_start,
                len(plan.batches))
    # The batches (and the callback) go to the queue the job came through: the default queue
    # unless an operator routed the job elsewhere, and then its batches follow it.
    queue = (current_task.request.delivery_info or {}).get("routing_key") or None
    chord(
        send_summary_batch.s(run_id=ctx.run_id, first_id=first_id, until_id=until_id).set(queue=queue)
        for first_id, until_id in plan.batches
    )(finish_summary_run.s(run_id=ctx.run_id, week_start=week_start.isoformat(),
                           without_email=plan.without_email).set(queue=queue).on_error(
        summary_run_failed.s(run_id=ctx.run_id).set(queue=queue)))
    return deferred


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=BATCH_MAX_RETRIES,
             soft_time_limit=300, time_limit=360)
def send_summary_batch(self, *, run_id: int, first_id: int, until_id: int | None) -> dict:
    """Send one batch of a summaries run: claim, send, record (``services.send_delivery_batch``).

    Idempotent: its rows are claimed under this task's id, which a retry or a
    redelivery keeps, so a second execution sends only what the first did
    not record. ``acks_late`` + ``reject_on_worker_lost``: a batch whose
    worker process dies is redelivered (at most that batch's unrecorded
    messages go out twice). A transient mail error retries this batch alone
    (2, 4, ... 32 s); once its retries are spent, its unsent members are
    recorded FAILED and the batch returns, so the run's callback still runs.
    """
    close_old_connections()
    token = self.request.id
    try:
        result = send_delivery_batch(run_id=run_id, first_id=first_id, until_id=until_id, token=token,
                                     unsubscribe_url=unsubscribe_url)
    except SummarySendError as exc:
        attempt = self.request.retries + 1
        if self.request.retries < self.max_retries:
            countdown = 2 ** attempt
            logger.warning("Summary batch %s of run %s: attempt %d/%d failed: %s; retrying in %ds", first_id,
                           run_id, attempt, self.max_retries + 1, exc, countdown)
            raise self.retry(countdown=countdown, exc=exc) from None
        why = f"not sent: {str(exc).split(': ', 1)[-1].split(' (the error')[0]} after {attempt} attempts"
        missed = give_up_batch(run_id=run_id, first_id=first_id, until_id=until_id, token=token, why=why)
        logger.error("Summary batch %s of run %s gave up after %d attempts: %d members not reached (%s)",
                     first_id, run_id, attempt, missed, exc)
        JobRun.objects.record_part_done(run_id, items=sent_in_batch(run_id=run_id, first_id=first_id,
                                                                    until_id=until_id, token=token))
        return {"first_id": first_id, "finished": False, "not_reached": missed}
    if result.claimed:
        JobRun.objects.record_part_done(run_id, items=sent_in_batch(run_id=run_id, first_id=first_id,
                                                                    until_id=until_id, token=token))
    return {"first_id": first_id, **result.as_dict()}


@shared_task(acks_late=True)
def finish_summary_run(results: list, *, run_id: int, week_start: str, without_email: int) -> dict:
    """The chord's callback: every batch has ended; end the run SUCCEEDED, or FAILED naming who was not reached."""
    close_old_connections()
    outcome = summarise_run(run_id)
    log_week(dt.date.fromisoformat(week_start), sent=outcome.sent, without_email=without_email,
             invalid=outcome.invalid, refused=outcome.refused, not_reached=outcome.not_reached)
    error = outcome.error()
    JobRun.objects.complete(run_id, JobRun.Status.FAILED if error else JobRun.Status.SUCCEEDED,
                            items=outcome.sent, error=error)
    return {"sent": outcome.sent, "not_reached": outcome.not_reached}


@shared_task
def summary_run_failed(request, exc, traceback, *, run_id: int) -> None:
    """The chord's error callback (a batch crashed outside the mail errors it handles): end the run FAILED."""
    close_old_connections()
    outcome = summarise_run(run_id)
    error = outcome.error() or f"{outcome.not_reached} recipients not reached"
    JobRun.objects.complete(run_id, JobRun.Status.FAILED, items=outcome.sent,
                            error=f"{error}; a batch failed: {type(exc).__name__}")


# At minute 0 of every hour in TIME_ZONE. The run takes seconds even over
# 100,000 groups (a constant number of queries); soft limit 15 min, hard
# 17 min: above the 5-minute lock TTL (renewed by the engine) and well
# before the next hourly run.
@job("update-group-statuses", crontab="0 * * * *", lock_ttl=300, soft_time_limit=900, time_limit=1020)
def update_group_statuses_task(ctx: JobContext) -> int:
    """Activate and complete the groups that qualify, log how many are inactive; return groups changed."""
    changed = update_group_statuses(dry_run=ctx.dry_run)
    inactive = check_inactive_groups()
    # The count only: group names can identify people (SPEC §7).
    groups_logger.info(
        "%d active groups without a confirmed contribution in the last %d days",
        len(inactive), settings.INACTIVE_GROUP_DAYS,
    )
    return changed
