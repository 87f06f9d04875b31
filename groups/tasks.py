"""The hourly group-status job (SPEC §3): a thin wrapper over ``groups.services``."""

from __future__ import annotations

import logging

from django.conf import settings

from groups.services import check_inactive_groups, update_group_statuses
from scheduler_app.jobs import JobContext, job

logger = logging.getLogger("groups")


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
    logger.info(
        "%d active groups without a confirmed contribution in the last %d days",
        len(inactive), settings.INACTIVE_GROUP_DAYS,
    )
    return changed
