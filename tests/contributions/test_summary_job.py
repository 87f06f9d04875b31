"""The send-contribution-summaries job (SPEC §3): registration and what the job function does."""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
from decimal import Decimal

import pytest
import time_machine
from celery import current_app
from django.core.mail.backends.locmem import EmailBackend
from django.core.mail.message import sanitize_address

from contributions.models import SummaryDelivery, WeeklySummary
from contributions.tasks import send_contribution_summaries_task
from groups.models import Group, Round
from scheduler_app.jobs import REGISTRY, JobContext
from scheduler_app.models import JobRun
from tests.factories import at, make_contribution, make_group, make_member, make_round


def context(*, scheduled_for: dt.datetime | None = None, dry_run: bool = False) -> JobContext:
    return JobContext(spec=REGISTRY["send-contribution-summaries"], run_id=0,
                      trigger="beat" if scheduled_for else "manual", scheduled_for=scheduled_for,
                      attempt=1, dry_run=dry_run)


def test_is_registered_with_the_spec_schedule_and_ttl():
    spec = REGISTRY["send-contribution-summaries"]
    assert (spec.task_name, spec.crontab, spec.lock_ttl) == (
        "contributions.tasks.send_contribution_summaries_task", "0 9 * * 1", 600,
    )
    assert spec.lock_ttl < spec.soft_time_limit < spec.time_limit < 4 * 3600


@pytest.fixture
def group_with_two_members():
    group = make_group(status=Group.Status.ACTIVE, deployed=True)
    first = make_member(group, position=1)
    make_member(group, position=2)
    current = make_round(group, number=1, recipient=first, status=Round.Status.OPEN)
    make_contribution(first, current, confirmed_at=at("2026-11-25 10:00:00"))
    return group


@pytest.mark.django_db
@time_machine.travel(at("2026-12-07 10:00:00"), tick=False)
def test_a_late_beat_run_summarises_the_week_of_its_scheduled_monday(group_with_two_members, mailoutbox):
    # given: besides the fixture's 50.00 of 25 Nov, 20.00 confirmed in the last second of the week of
    # 23 Nov and 7.00 + 3.00 in the week of 30 Nov
    first, second = group_with_two_members.memberships.order_by("payout_position")
    current = group_with_two_members.rounds.get(number=1)
    make_contribution(second, current, amount="20.00", confirmed_at=at("2026-11-29 23:59:59"))
    make_contribution(second, current, amount="7.00", confirmed_at=at("2026-11-30 00:00:00"))
    make_contribution(first, current, amount="3.00", confirmed_at=at("2026-12-03 12:00:00"))

    # when: the run scheduled for Monday 2026-11-30 09:00 starts a week late, on Monday 2026-12-07
    sent = send_contribution_summaries_task.job_function(context(scheduled_for=at("2026-11-30 09:00:00")))

    # then: it summarises [2026-11-23 00:00, 2026-11-30 00:00): 50.00 + 20.00, not the week of 30 Nov
    assert sent == 2
    summary = WeeklySummary.objects.get()
    assert (summary.week_start, summary.contribution_count, summary.total_amount) == (
        dt.date(2026, 11, 23), 2, Decimal("70.00"),
    )
    assert sorted(m.to[0] for m in mailoutbox) == sorted([first.user.email, second.user.email])
    for message in mailoutbox:
        assert message.subject.endswith(": your summary for the week of 23 Nov 2026")
        assert "Confirmed contributions: 2\n" in message.body and "Total confirmed: 70.00 USD\n" in message.body
    assert set(SummaryDelivery.objects.filter(status="SENT").values_list("summary_id", "membership_id")) == {
        (summary.pk, first.pk), (summary.pk, second.pk),
    }


@pytest.mark.django_db
@time_machine.travel(at("2026-11-30 09:00:00"), tick=False)
def test_dry_run_sends_and_writes_nothing(group_with_two_members, mailoutbox):
    assert send_contribution_summaries_task.job_function(context(dry_run=True)) == 2
    assert mailoutbox == []
    assert not WeeklySummary.objects.exists() and not SummaryDelivery.objects.filter(status="SENT").exists()


@pytest.fixture
def group_with_a_typo():
    """Three members; the first one's address is "carol.typo@", which Django's SMTP backend rejects."""
    group = make_group(status=Group.Status.ACTIVE, deployed=True)
    first = make_member(group, position=1, email="carol.typo@")
    make_member(group, position=2)
    make_member(group, position=3)
    make_round(group, number=1, recipient=first, status=Round.Status.OPEN)
    return group


def run_job_locally() -> JobRun:
    """One manual run through the job engine in this process: lock, attempts, history, logs."""
    task = current_app.tasks[REGISTRY["send-contribution-summaries"].task_name]
    result = task.run_locally({"trigger": "manual", "dry_run": False})
    return JobRun.objects.get(task_id=result.id)


def sanitizing_like_smtp(fail_with: BaseException | None = None):
    """locmem's ``send_messages`` with the SMTP backend's address handling; optionally failing every message."""
    original = EmailBackend.send_messages

    def send_messages(backend, messages):
        for message in messages:
            for address in message.recipients():
                sanitize_address(address, "utf-8")  # ValueError('Invalid address "carol.typo@"')
        if fail_with is not None:
            raise fail_with
        return original(backend, messages)

    return send_messages


@pytest.mark.django_db(transaction=True)
def test_a_bad_address_does_not_fail_the_job(group_with_a_typo, job_redis, mailoutbox, monkeypatch, caplog):
    # given
    monkeypatch.setattr(EmailBackend, "send_messages", sanitizing_like_smtp())

    # when
    with caplog.at_level(logging.INFO):
        run = run_job_locally()

    # then: one attempt, the two others got their email, the typo is counted, no address anywhere
    assert (run.status, run.attempts, run.items_processed, run.error) == (JobRun.Status.SUCCEEDED, 1, 2, "")
    others = group_with_a_typo.memberships.filter(payout_position__in=(2, 3)).select_related("user")
    assert sorted(m.to[0] for m in mailoutbox) == sorted(member.user.email for member in others)
    line = (r"Sent 2 contribution summaries for week \d{4}-\d{2}-\d{2} "
            r"\(1 members without a usable email skipped, 1 of them with an invalid address\)")
    assert [m for m in caplog.messages if re.fullmatch(line, m)], caplog.messages
    assert "@" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_mail_server_failure_fails_the_job_with_no_address_in_its_history(group_with_a_typo, job_redis,
                                                                             mailoutbox, monkeypatch, caplog):
    # given: a server whose error text names the recipient, on every attempt
    failure = smtplib.SMTPDataError(451, b"4.3.0 <user@example.com>: temporary failure, try again")
    monkeypatch.setattr(EmailBackend, "send_messages", sanitizing_like_smtp(failure))

    # when
    with caplog.at_level(logging.INFO):
        run = run_job_locally()

    # then: retried (3 attempts), failed; the error kept for the run and the logs name no address
    assert (run.status, run.attempts) == (JobRun.Status.FAILED, 3)
    # (the typo is skipped up front, so the batch holds the 2 others, and the first fails)
    cause = ("sending weekly summaries failed after 0 of a batch of 2: SMTPDataError (SMTP 451) "
             "(the error's text is left out: it can hold email addresses)")
    assert run.error.strip().splitlines()[-1] == f"contributions.services.SummarySendError: {cause}"
    failed = r"Job send-contribution-summaries failed after 3 attempts in \d+ms: SummarySendError: " + re.escape(cause)
    assert [m for m in caplog.messages if re.fullmatch(failed, m)], caplog.messages
    assert "@" not in run.error
    assert "@" not in caplog.text
    assert mailoutbox == [] and not SummaryDelivery.objects.filter(status="SENT").exists()
