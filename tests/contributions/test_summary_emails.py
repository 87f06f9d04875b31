"""send_summaries_to_members: SPEC §5 "Weekly summaries" (who gets what, exactly once).

The scenario, worked out by hand. Group "Harbour Savers", 50.00 USD a round,
4 rounds; the run is Monday 2026-11-30, so the week is 2026-11-23 00:00 to
2026-11-30 00:00 UTC. Round 1 is COMPLETED (recipient alice); round 2 is the
lowest OPEN round (recipient bob), so it is the current round.

| member | email | contributions                                             |
|--------|-------|-----------------------------------------------------------|
| alice  | yes   | R1 50.00 confirmed 11-10 (before); R2 50.00 confirmed 11-24 |
| bob    | yes   | R2 20.00 confirmed 11-25; R2 30.00 PENDING                  |
| carol  | none  | R2 50.00 confirmed 11-26                                    |
| erin   | yes   | R2 40.00 confirmed 11-20 (before); R2 40.00 confirmed 11-29 23:59:59; R2 50.00 FAILED |
| dave   | yes   | left the group                                              |

Group totals for the week: alice 50 + bob 20 + carol 50 + erin 40 = 160.00 USD
in 4 contributions. Emails go to alice, bob and erin (3); carol is skipped
for having no email; dave is no longer a member. Owed in round 2: alice
50 - 50 = 0.00; bob 50 - 20 = 30.00 (the pending 30 does not count); erin
50 - 80 would be -30, so 0.00.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contributions.models import Contribution, SummaryDelivery
from contributions.services import SummarySendError, generate_weekly_summaries, send_summaries_to_members
from groups.models import Group, Round
from tests.factories import at, make_contribution, make_group, make_member, make_round

pytestmark = pytest.mark.django_db

MONDAY_RUN = at("2026-11-30 09:00:00")


@pytest.fixture
def harbour(mailoutbox):
    """The scenario of the module docstring; returns the memberships by name."""
    with time_machine.travel(at("2026-10-01 08:00:00"), tick=False):
        group = make_group(name="Harbour Savers", status=Group.Status.ACTIVE, deployed=True,
                           contribution_amount="50.00", currency="USD", total_rounds=4, min_members=3)
    members = {
        "alice": make_member(group, position=1, username="alice"),
        "bob": make_member(group, position=2, username="bob"),
        "carol": make_member(group, position=3, username="carol", email=""),
        "erin": make_member(group, position=4, username="erin"),
        "dave": make_member(group, position=5, username="dave", left_at=at("2026-11-01 00:00:00")),
    }
    round1 = make_round(group, number=1, recipient=members["alice"], status=Round.Status.COMPLETED)
    round2 = make_round(group, number=2, recipient=members["bob"], due_date=at("2026-12-04 00:00:00").date())
    make_round(group, number=3, recipient=members["carol"])
    make_round(group, number=4, recipient=members["erin"])
    make_contribution(members["alice"], round1, amount="50.00", confirmed_at=at("2026-11-10 09:00:00"))
    make_contribution(members["alice"], round2, amount="50.00", confirmed_at=at("2026-11-24 10:00:00"))
    make_contribution(members["bob"], round2, amount="20.00", confirmed_at=at("2026-11-25 12:00:00"))
    make_contribution(members["bob"], round2, amount="30.00", status=Contribution.Status.PENDING,
                      created_at=at("2026-11-26 12:00:00"))
    make_contribution(members["carol"], round2, amount="50.00", confirmed_at=at("2026-11-26 08:00:00"))
    make_contribution(members["erin"], round2, amount="40.00", confirmed_at=at("2026-11-20 08:00:00"))
    make_contribution(members["erin"], round2, amount="40.00", confirmed_at=at("2026-11-29 23:59:59"))
    make_contribution(members["erin"], round2, amount="50.00", status=Contribution.Status.FAILED,
                      created_at=at("2026-11-27 08:00:00"))
    return members


def send_all(**kwargs) -> int:
    return send_summaries_to_members(generate_weekly_summaries(), **kwargs)


def by_recipient(outbox) -> dict[str, mail.EmailMultiAlternatives]:
    return {message.to[0]: message for message in outbox}


def delivered_to() -> list[str]:
    """Usernames of the members with a recorded delivery, sorted."""
    return sorted(SummaryDelivery.objects.filter(status="SENT").values_list("membership__user__username", flat=True))


@time_machine.travel(MONDAY_RUN, tick=False)
def test_each_active_member_with_an_email_gets_one_email(harbour, mailoutbox):
    # when
    sent = send_all()

    # then
    assert sent == 3
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "bob@example.com", "erin@example.com"]
    assert all(len(m.to) == 1 for m in mailoutbox)
    assert delivered_to() == ["alice", "bob", "erin"]
    sent_rows = SummaryDelivery.objects.filter(status="SENT")
    assert set(sent_rows.values_list("summary__week_start", flat=True)) == {dt.date(2026, 11, 23)}


@time_machine.travel(MONDAY_RUN, tick=False)
def test_email_holds_totals_own_contributions_round_recipient_and_amount_owed(harbour, mailoutbox):
    # when
    send_all()

    # then: bob's email
    bob = by_recipient(mailoutbox)["bob@example.com"]
    assert bob.subject == "Harbour Savers: your summary for the week of 23 Nov 2026"
    text = bob.body
    assert "Confirmed contributions: 4" in text
    assert "Total confirmed: 160.00 USD" in text
    assert "Wed 25 Nov 2026 12:00  20.00 USD (round 2)" in text
    assert "30.00 USD (round 2)" not in text  # pending
    assert "Round 2, due Fri 4 Dec 2026" in text
    assert "Recipient: you (bob)" in text
    assert "You still owe: 30.00 USD" in text
    [(html, mimetype)] = bob.alternatives
    assert mimetype == "text/html" and isinstance(html, str)
    assert "160.00 USD" in html and "<strong>30.00 USD</strong>" in html and "you (bob)" in html

    # and alice's: paid in full, bob receives
    alice = by_recipient(mailoutbox)["alice@example.com"].body
    assert "Tue 24 Nov 2026 10:00  50.00 USD (round 2)" in alice
    assert "Tue 10 Nov" not in alice  # before the week
    assert "Recipient: bob" in alice
    assert "You still owe: 0.00 USD (you are up to date)" in alice

    # and erin's: overpaid is 0 owed, only this week's contribution listed
    erin = by_recipient(mailoutbox)["erin@example.com"].body
    assert "Sun 29 Nov 2026 23:59  40.00 USD (round 2)" in erin
    assert "Fri 20 Nov" not in erin
    assert "You still owe: 0.00 USD" in erin
    assert "-30" not in erin


@time_machine.travel(MONDAY_RUN, tick=False)
def test_members_without_email_are_skipped_and_counted(harbour, mailoutbox, caplog):
    # when
    with caplog.at_level(logging.INFO, logger="contributions"):
        send_all()

    # then: carol is counted, and no address reaches the logs
    assert "carol" not in {m.to[0].split("@")[0] for m in mailoutbox}
    line = "Sent 3 contribution summaries for week 2026-11-23 (1 members without a usable email skipped)"
    assert ("contributions", logging.INFO, line) in caplog.record_tuples
    assert "@" not in caplog.text


@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_second_run_sends_nothing(harbour, mailoutbox):
    # given
    assert send_all() == 3

    # when
    sent_again = send_all()

    # then
    assert sent_again == 0
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "bob@example.com", "erin@example.com"]
    assert delivered_to() == ["alice", "bob", "erin"]


def test_the_next_weeks_run_sends_to_the_same_members_again(harbour, mailoutbox):
    # given: the run of Monday 2026-11-30 sent the week of 23 Nov to alice, bob and erin
    with time_machine.travel(MONDAY_RUN, tick=False):
        assert send_all() == 3

    # when: the run of the next Monday, 2026-12-07 (the week 30 Nov .. 7 Dec)
    with time_machine.travel(at("2026-12-07 09:00:00"), tick=False):
        sent = send_all()

    # then: "already sent" is per week, so the same three members get the new week's summary
    assert sent == 3
    second_week = mailoutbox[3:]
    assert sorted(m.to[0] for m in second_week) == ["alice@example.com", "bob@example.com", "erin@example.com"]
    assert {m.subject for m in second_week} == {"Harbour Savers: your summary for the week of 30 Nov 2026"}
    # nothing of the scenario was confirmed in that week
    assert all("Confirmed contributions: 0" in m.body and "Total confirmed: 0.00 USD" in m.body for m in second_week)
    sent_rows = SummaryDelivery.objects.filter(status="SENT")
    assert sorted(sent_rows.values_list("summary__week_start", "membership__user__username")) == [
        (dt.date(2026, 11, 23), "alice"), (dt.date(2026, 11, 23), "bob"), (dt.date(2026, 11, 23), "erin"),
        (dt.date(2026, 11, 30), "alice"), (dt.date(2026, 11, 30), "bob"), (dt.date(2026, 11, 30), "erin"),
    ]


def fails_after(limit: int):
    """A locmem ``send_messages`` that accepts ``limit`` messages, then raises as a dropped SMTP connection does."""
    original = EmailBackend.send_messages

    def send_messages(backend, messages):
        if len(mail.outbox) + len(messages) > limit:
            raise smtplib.SMTPServerDisconnected("connection lost")
        return original(backend, messages)

    return send_messages


@pytest.mark.parametrize("batch_size", [1, 2, 10])
@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_crash_halfway_then_a_rerun_sends_only_the_rest(harbour, mailoutbox, monkeypatch, batch_size):
    # given: a mail server that drops the connection after the 2nd message
    monkeypatch.setattr(EmailBackend, "send_messages", fails_after(2))

    # when: the first run fails
    with pytest.raises(SummarySendError, match="SMTPServerDisconnected"):
        send_all(batch_size=batch_size)

    # then: the two messages that went out are recorded
    first_recipients = sorted(m.to[0] for m in mailoutbox)
    assert len(first_recipients) == 2
    assert [f"{name}@example.com" for name in delivered_to()] == first_recipients

    # when: the server is back and the job is retried
    monkeypatch.undo()
    sent = send_all(batch_size=batch_size)

    # then: only the third member gets an email; everyone got exactly one
    assert sent == 1
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "bob@example.com", "erin@example.com"]
    assert delivered_to() == ["alice", "bob", "erin"]


@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_refused_recipient_does_not_stop_the_others(harbour, mailoutbox, monkeypatch, caplog):
    # given: the server refuses bob's address
    original = EmailBackend.send_messages

    def refuse_bob(backend, messages):
        if messages[0].to == ["bob@example.com"]:
            raise smtplib.SMTPRecipientsRefused({"bob@example.com": (550, b"no such user")})
        return original(backend, messages)

    monkeypatch.setattr(EmailBackend, "send_messages", refuse_bob)

    # when
    with caplog.at_level(logging.INFO, logger="contributions"):
        sent = send_all()

    # then: alice and erin got theirs; bob is not recorded, so the next run retries him
    assert sent == 2
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "erin@example.com"]
    assert delivered_to() == ["alice", "erin"]
    line = ("Sent 2 contribution summaries for week 2026-11-23 "
            "(1 members without a usable email skipped; 1 refused by the mail server)")
    assert ("contributions", logging.INFO, line) in caplog.record_tuples
    assert "@" not in caplog.text


@time_machine.travel(MONDAY_RUN, tick=False)
def test_dry_run_sends_and_records_nothing(harbour, mailoutbox):
    # when
    would_send = send_summaries_to_members(generate_weekly_summaries(dry_run=True), dry_run=True)

    # then
    assert would_send == 3
    assert mailoutbox == []
    assert not SummaryDelivery.objects.filter(status="SENT").exists()


@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_group_without_an_open_round_says_so(mailoutbox):
    # given: all rounds completed, the group not yet marked COMPLETED
    group = make_group(status=Group.Status.ACTIVE, deployed=True, total_rounds=1, min_members=1)
    member = make_member(group, position=1)
    make_round(group, number=1, recipient=member, status=Round.Status.COMPLETED)

    # when
    send_all()

    # then
    [message] = mailoutbox
    assert "There is no open round at the moment." in message.body
    assert "You still owe" not in message.body


def _build_groups(count: int) -> None:
    for _ in range(count):
        group = make_group(status=Group.Status.ACTIVE, deployed=True, total_rounds=3)
        members = [make_member(group, position=position) for position in (1, 2, 3)]
        make_member(group, position=4, email="")
        current = make_round(group, number=1, recipient=members[0])
        make_contribution(members[1], current, amount=Decimal("25.00"), confirmed_at=at("2026-11-24 10:00:00"))


def _queries_to_generate_and_send(groups: int) -> int:
    _build_groups(groups)
    with CaptureQueriesContext(connection) as queries:
        sent = send_summaries_to_members(generate_weekly_summaries(), batch_size=1000)
    assert sent == 3 * groups
    return len(queries.captured_queries)


@time_machine.travel(MONDAY_RUN, tick=False)
def test_query_count_does_not_grow_with_groups_or_members(mailoutbox):
    # given / when: 2 groups of 4 members, then (new week's data aside) 20 more
    small = _queries_to_generate_and_send(2)
    large = _queries_to_generate_and_send(20)

    # then: the same count, whatever the number of groups and members
    assert small == large
