"""The jobs that read contributions (SPEC §3): thin wrappers over the services.

* ``send-contribution-summaries`` over ``contributions.services``.
* ``update-group-statuses`` over ``groups.services.update_group_statuses`` and
  ``contributions.services.check_inactive_groups``. It lives here, not in
  ``groups``, because it needs both apps and only ``contributions`` may import
  ``groups`` (STYLE: dependencies point one way). Its job name, crontab and
  lock TTL are those of SPEC §3; only the task's module path moved (from
  ``groups.tasks``), and ``sync_schedules`` points an existing schedule at it.
"""

from __future__ import annotations

import logging

from django.conf import settings

from contributions.services import check_inactive_groups, generate_weekly_summaries, send_summaries_to_members
from groups.services import update_group_statuses
from scheduler_app.jobs import JobContext, job

# The inactive-group count is a line about groups: it keeps the ``groups``
# logger it has always had, whichever module the job lives in.
groups_logger = logging.getLogger("groups")


# Mondays at 09:00 in TIME_ZONE, summarising the week that ended at Monday
# 00:00. Soft limit 50 min, hard 55 min: above the 10-minute lock TTL (the
# engine renews it), far below the broker's 4 h visibility timeout. A run cut
# short is safe to repeat: members already sent to are skipped.
@job("send-contribution-summaries", crontab="0 9 * * 1", lock_ttl=600, soft_time_limit=3000, time_limit=3300)
def send_contribution_summaries_task(ctx: JobContext) -> int:
    """Summarise last week for every active group and email the members; return emails sent."""
    # A late run (worker backlog, retry) still summarises the week of the
    # Monday it was scheduled for; manual runs use the current time.
    summaries = generate_weekly_summaries(now=ctx.scheduled_for, dry_run=ctx.dry_run)
    return send_summaries_to_members(summaries, dry_run=ctx.dry_run)


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
