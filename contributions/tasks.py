"""The weekly summary job (SPEC §3): a thin wrapper over ``contributions.services``."""

from __future__ import annotations

from contributions.services import generate_weekly_summaries, send_summaries_to_members
from scheduler_app.jobs import JobContext, job


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
