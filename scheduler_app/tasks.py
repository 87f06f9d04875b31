"""The engine's own jobs (issue 9): the schedule check and the run history's retention, under the same engine."""

from __future__ import annotations

from scheduler_app.context import JobContext
from scheduler_app.registry import job


@job("check-schedules", crontab="*/5 * * * *", lock_ttl=120, catch_up="skip")
def check_schedules_task(ctx: JobContext) -> int:
    """Alerts missed, broken and failed jobs once (what `manage.py check_schedules` reports)."""
    from scheduler_app.problems import check_schedules

    return len(check_schedules(alert=not ctx.dry_run))


@job("prune-job-runs", crontab="30 3 * * *", lock_ttl=300)
def prune_job_runs_task(ctx: JobContext) -> int:
    """Deletes job runs older than RUN_HISTORY_DAYS, in batches."""
    from scheduler_app.retention import prune_job_runs

    return prune_job_runs(dry_run=ctx.dry_run, should_stop=ctx.should_stop)
