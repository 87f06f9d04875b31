"""Delivery batches in this process: a batch that gives up fails the run; anymail's refused recipients.

Scenario: "Quay Savers" with alice, bob and erin (emails), one batch of 3.

* The mail server drops every connection (``SMTPServerDisconnected``): the
  batch retries 5 times (6 attempts), then records its 3 members FAILED
  "not sent: SMTPServerDisconnected after 6 attempts" and returns, so the
  chord's callback still runs and ends the run FAILED with
  "3 of 3 recipients not reached: ...".
* Through django-anymail's test backend, the email service rejects bob
  (``AnymailRecipientsRefused``): alice and erin are SENT, bob FAILED
  "refused by the mail server (AnymailRecipientsRefused)", like an SMTP 5xx,
  and the run SUCCEEDS with 2 items.
"""

from __future__ import annotations

import logging
import smtplib

import pytest
import time_machine
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.message import AnymailRecipientStatus
from django.core.mail.backends.locmem import EmailBackend
from django.test import override_settings
from django.utils import timezone

from contributions.models import SummaryDelivery
from contributions.services import generate_weekly_summaries, plan_deliveries
from contributions.tasks import finish_summary_run, send_summary_batch
from groups.models import Group
from scheduler_app.models import JobRun
from tests.factories import at, make_group, make_member, make_round

pytestmark = pytest.mark.django_db(transaction=True)

MONDAY = at("2026-11-30 09:00:00")


class RejectingBackend(AnymailTestBackend):
    """anymail's test backend whose email service rejects bob@example.com."""

    def post_to_esp(self, payload, message):
        super().post_to_esp(payload, message)
        return {"recipient_status": {
            address: AnymailRecipientStatus(message_id=None,
                                            status="rejected" if address == "bob@example.com" else "sent")
            for address in payload.recipient_emails
        }}


@pytest.fixture
def planned_run():
    """Quay Savers, its summary, a deferred RUNNING run and its one batch: returns (run, batch)."""
    group = make_group(name="Quay Savers", status=Group.Status.ACTIVE, deployed=True)
    members = [make_member(group, position=i + 1, username=name) for i, name in enumerate(("alice", "bob", "erin"))]
    make_round(group, number=1, recipient=members[0])
    with time_machine.travel(MONDAY, tick=False):
        summaries = generate_weekly_summaries()
        run = JobRun.objects.create(job="send-contribution-summaries", trigger="manual", started_at=timezone.now(),
                                    task_id="send-contribution-summaries:manual:test", attempts=1)
        JobRun.objects.defer_run(run.pk, total=1, within_s=3600)
        plan = plan_deliveries(summaries[0].week_start, run_id=run.pk, batch_size=5)
    assert (plan.pending, len(plan.batches)) == (3, 1)
    return run, plan.batches[0]


def finish(run: JobRun, results: list) -> JobRun:
    finish_summary_run.apply(args=(results,), kwargs={"run_id": run.pk, "week_start": "2026-11-23",
                                                      "without_email": 0})
    return JobRun.objects.get(pk=run.pk)


def test_a_batch_that_gives_up_records_its_members_and_the_run_fails_naming_them(planned_run, monkeypatch, caplog):
    run, (first_id, until_id) = planned_run
    monkeypatch.setattr(EmailBackend, "open", lambda self: (_ for _ in ()).throw(
        smtplib.SMTPServerDisconnected("Connection unexpectedly closed: bob@example.com")))

    with caplog.at_level(logging.INFO):
        batch = send_summary_batch.apply(kwargs={"run_id": run.pk, "first_id": first_id, "until_id": until_id})
        done = finish(run, [batch.result])

    assert batch.result == {"first_id": first_id, "finished": False, "not_reached": 3}
    why = "not sent: SMTPServerDisconnected after 6 attempts"
    assert set(SummaryDelivery.objects.values_list("status", "reason")) == {("FAILED", why)}
    assert (done.status, done.items_processed, done.progress) == (JobRun.Status.FAILED, 0, "1/1 batches")
    assert done.error == f"3 of 3 recipients not reached: 3 {why}"
    line = "Job send-contribution-summaries failed after 1 attempts in "
    assert [m for m in caplog.messages if m.startswith(line) and m.endswith(f"ms: {done.error}")], caplog.messages
    assert "@" not in caplog.text


@override_settings(EMAIL_BACKEND="tests.contributions.test_summary_batches.RejectingBackend")
def test_a_recipient_the_email_service_refuses_is_failed_alone(planned_run, mailoutbox):
    run, (first_id, until_id) = planned_run

    batch = send_summary_batch.apply(kwargs={"run_id": run.pk, "first_id": first_id, "until_id": until_id})
    done = finish(run, [batch.result])

    assert batch.result["sent"] == 2 and batch.result["refused"] == 1
    assert sorted(SummaryDelivery.objects.values_list("membership__user__username", "status", "reason")) == [
        ("alice", "SENT", ""), ("bob", "FAILED", "refused by the mail server (AnymailRecipientsRefused)"),
        ("erin", "SENT", ""),
    ]
    assert (done.status, done.items_processed, done.error) == (JobRun.Status.SUCCEEDED, 2, "")
    # every message went through anymail (its test backend records the payload it would post)
    assert all(hasattr(message, "anymail_test_params") for message in mailoutbox)
