"""The archive job (SPEC §3): a thin wrapper over :func:`audit.services.archive_old_logs`."""

from __future__ import annotations

from audit.services import archive_old_logs
from scheduler_app.jobs import JobContext, job


# Every day at 02:00 in TIME_ZONE. Soft limit 50 min, hard 55 min: above the
# 10-minute lock TTL (the engine renews the lock while the job runs) and far
# below the broker's 4 h visibility timeout; ``should_stop`` ends the run
# between batches before the soft limit, and the next night continues.
@job("archive-audit-logs", crontab="0 2 * * *", lock_ttl=600, soft_time_limit=3000, time_limit=3300)
def archive_audit_logs_task(ctx: JobContext) -> int:
    """Move audit logs older than AUDIT_LOG_RETENTION_DAYS to the archive; return rows moved."""
    return archive_old_logs(dry_run=ctx.dry_run, should_stop=ctx.should_stop,
                            on_progress=lambda moved, total: ctx.report_progress(moved, f"{moved} of {total} rows"))
