"""``manage.py run_job NAME --dry-run`` reports what would change and changes nothing (SPEC §1).

The data, worked out by hand: 2 audit logs older than 90 days and 1 newer
(the archive would move 2); a PENDING group with a contract and 3 members
(1 status change); an ACTIVE group with 3 members with an email and an open
round (3 summary emails; the PENDING group gets none). Each job is run with
``--dry-run --local``, and every table but the run history is compared, row
by row, before and after.
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from io import StringIO

import pytest
from django.apps import apps
from django.core.management import call_command
from django.utils import timezone

from groups.models import Group, Round
from scheduler_app.models import JobRun
from tests.factories import make_audit_log, make_group, make_members, make_round

pytestmark = pytest.mark.django_db(transaction=True)


def every_table_but_the_run_history() -> dict[str, list[tuple]]:
    return {
        model._meta.label: list(model._base_manager.order_by("pk").values_list())
        for model in apps.get_models()
        if model is not JobRun
    }


@pytest.fixture
def data():
    now = timezone.now()
    make_audit_log(created_at=now - dt.timedelta(days=200))
    make_audit_log(created_at=now - dt.timedelta(days=91))
    make_audit_log(created_at=now - dt.timedelta(days=1))
    make_members(make_group(deployed=True, min_members=3), 3)
    active = make_group(status=Group.Status.ACTIVE, deployed=True)
    members = make_members(active, 3)
    make_round(active, number=1, recipient=members[0], status=Round.Status.OPEN)


def run_job_dry_run_local(name: str) -> tuple[int | str | None, str]:
    out = StringIO()
    handler = signal.getsignal(signal.SIGTERM)  # the command sets its own; keep pytest's
    try:
        with pytest.raises(SystemExit) as exited:
            call_command("run_job", name, "--dry-run", "--local", stdout=out, stderr=out)
    finally:
        signal.signal(signal.SIGTERM, handler)
    return exited.value.code, out.getvalue()


@pytest.mark.parametrize(("job", "would_change"), [
    ("archive-audit-logs", 2),
    ("update-group-statuses", 1),
    ("send-contribution-summaries", 3),
])
def test_a_dry_run_reports_what_would_change_and_changes_nothing(data, job_redis, mailoutbox, job, would_change):
    # given
    before = every_table_but_the_run_history()

    # when
    code, output = run_job_dry_run_local(job)

    # then: it succeeded, and says how much would change
    assert code == 0, output
    run = JobRun.objects.get()
    assert (run.job, run.trigger, run.status, run.dry_run, run.items_processed) == (
        job, "manual", JobRun.Status.SUCCEEDED, True, would_change,
    )
    assert re.fullmatch(
        rf"Job {job} succeeded in \d+ms: {would_change} items \(run {run.pk}, attempt 1/3, dry run\)\n", output,
    ), output
    # and: no table changed but the run history, no email went out, the lock is released
    assert every_table_but_the_run_history() == before
    assert mailoutbox == []
    assert list(job_redis.scan_iter("qo_*")) == []
