"""send_summaries_to_members with bad addresses and failing mail servers (SPEC §5 "Weekly summaries").

A member without a usable email is skipped and counted, never an error, and
no address reaches a log line or an exception. The numbers, worked out by hand:

* "Lighthouse Circle": carol ``carol.typo@``, bert ``a\\nb@example.com``, dan
  ``dan@example.com`` (in that payout order, so the bad ones come first).
  1 email (dan); 2 members skipped, both for an invalid address.
* "Quay Savers": alice, bob, carol (no email), erin, in that payout order:
  3 emails normally.
  - alice's address rejected by the backend when sending: 2 emails (bob,
    erin); 2 skipped (carol: none; alice: invalid).
  - bob's message answered with an SMTP 5xx: 2 emails (alice, erin); 1
    skipped (carol), 1 refused.
  - bob's message meets a transient error: alice's email went out and is
    recorded (1), the run raises so that the job retries; the retry sends 2
    (bob, erin).
"""

from __future__ import annotations

import logging
import smtplib
import traceback

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail.backends.locmem import EmailBackend
from django.core.mail.message import sanitize_address

from contributions import services
from contributions.models import SummaryDelivery
from contributions.services import SummarySendError, generate_weekly_summaries, send_summaries_to_members
from groups.models import Group, Round
from tests.factories import at, make_group, make_member, make_round

pytestmark = pytest.mark.django_db

#: The run of Monday 2026-11-30: the week of 2026-11-23.
MONDAY_RUN = at("2026-11-30 09:00:00")


@pytest.fixture
def quay():
    """Quay Savers (see the module docstring); returns the memberships by name."""
    group = make_group(name="Quay Savers", status=Group.Status.ACTIVE, deployed=True, min_members=3)
    members = {
        "alice": make_member(group, position=1, username="alice"),
        "bob": make_member(group, position=2, username="bob"),
        "carol": make_member(group, position=3, username="carol", email=""),
        "erin": make_member(group, position=4, username="erin"),
    }
    make_round(group, number=1, recipient=members["alice"])
    return members


def send_all(**kwargs) -> int:
    return send_summaries_to_members(generate_weekly_summaries(), **kwargs)


def recipients(outbox) -> list[str]:
    return sorted(message.to[0] for message in outbox)


#: The real locmem ``send_messages``, whatever a test has patched in its place.
LOCMEM_SEND_MESSAGES = EmailBackend.send_messages


def like_smtp(fail_for: dict[str, BaseException] | None = None):
    """A locmem ``send_messages`` that handles addresses as the SMTP backend does, and fails on demand.

    Django's SMTP backend passes every address through ``sanitize_address``,
    which raises ``ValueError('Invalid address "carol.typo@"')``; locmem does
    not. ``fail_for`` maps a recipient to the exception its message raises.
    """
    fail_for = fail_for or {}

    def send_messages(backend, messages):
        for message in messages:
            sanitize_address(message.from_email, "utf-8")
            for address in message.recipients():
                sanitize_address(address, "utf-8")
                if address in fail_for:
                    raise fail_for[address]
        return LOCMEM_SEND_MESSAGES(backend, messages)

    return send_messages


def assert_no_address(text: str) -> None:
    assert "@" not in text
    assert "example.com" not in text and "localhost" not in text


# -- addresses checked up front --------------------------------------------------------------------


@pytest.mark.parametrize(("address", "usable"), [
    ("dan@example.com", True),
    ("o'brien+weekly@mail.example.co.uk", True),
    ("carol.typo@", False),
    ("@example.com", False),
    ("carol@@example.com", False),
    ("carol example@example.com", False),
    ("a\nb@example.com", False),
    ("bob@example.com\r\nBcc: eve@example.com", False),
    ("bob@example.com\n", False),
    ("alice@example.com, bob@example.com", False),
    ("Alice <alice@example.com>", False),
])
def test_usable_address(address, usable):
    assert services._usable_address(address) is usable


@time_machine.travel(MONDAY_RUN, tick=False)
def test_invalid_addresses_are_skipped_and_counted_and_the_others_get_their_email(mailoutbox, caplog):
    # given: the two bad addresses come first in the group
    group = make_group(name="Lighthouse Circle", status=Group.Status.ACTIVE, deployed=True, min_members=3)
    carol = make_member(group, position=1, username="carol", email="carol.typo@")
    make_member(group, position=2, username="bert", email="a\nb@example.com")
    dan = make_member(group, position=3, username="dan", email="dan@example.com")
    make_round(group, number=1, recipient=carol)

    # when: a dry run, then the run
    with caplog.at_level(logging.INFO, logger="contributions"):
        would_send = send_summaries_to_members(generate_weekly_summaries(dry_run=True), dry_run=True)
        sent = send_all()

    # then: dan's email only; the two others are counted, not recorded (a fixed address gets it next run)
    assert (would_send, sent) == (1, 1)
    assert recipients(mailoutbox) == ["dan@example.com"]
    assert list(SummaryDelivery.objects.filter(status="SENT").values_list("membership", flat=True)) == [dan.pk]
    skipped = "(2 members without a usable email skipped, 2 of them with an invalid address)"
    assert f"Dry run: would send 1 contribution summaries for week 2026-11-23 {skipped}" in caplog.messages
    assert f"Sent 1 contribution summaries for week 2026-11-23 {skipped}" in caplog.messages
    assert_no_address(caplog.text)


@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_typo_in_the_first_members_address_stops_nobody(mailoutbox, monkeypatch, caplog):
    # given: the reported case, an address the SMTP backend cannot use, on the first member
    group = make_group(status=Group.Status.ACTIVE, deployed=True, min_members=1)
    first = make_member(group, position=1, email="carol.typo@")
    others = [make_member(group, position=position) for position in (2, 3, 4)]
    make_round(group, number=1, recipient=first)

    # when: sent through a backend that handles addresses as SMTP does
    monkeypatch.setattr(EmailBackend, "send_messages", like_smtp())
    with caplog.at_level(logging.DEBUG):
        sent = send_all()

    # then
    assert sent == 3
    sent_rows = SummaryDelivery.objects.filter(status="SENT")
    assert set(sent_rows.values_list("membership", flat=True)) == {m.pk for m in others}
    assert recipients(mailoutbox) == sorted(m.user.email for m in others)
    line = ("Sent 3 contribution summaries for week 2026-11-23 "
            "(1 members without a usable email skipped, 1 of them with an invalid address)")
    assert line in caplog.messages
    assert_no_address(caplog.text)


# -- rejected when sent --------------------------------------------------------------------------


@time_machine.travel(MONDAY_RUN, tick=False)
def test_an_address_the_backend_rejects_when_sending_skips_that_member_only(quay, mailoutbox, monkeypatch,
                                                                           caplog):
    # given: alice (the first member) has an address that passes the up-front
    # check here but that the backend rejects (its ValueError names the address)
    user = quay["alice"].user
    user.email = "carol.typo@"
    user.save()
    monkeypatch.setattr(services, "_usable_address", lambda address: True)
    monkeypatch.setattr(EmailBackend, "send_messages", like_smtp())

    # when
    with caplog.at_level(logging.INFO, logger="contributions"):
        sent = send_all()

    # then
    assert sent == 2
    assert recipients(mailoutbox) == ["bob@example.com", "erin@example.com"]
    assert not SummaryDelivery.objects.filter(status="SENT").filter(membership=quay["alice"]).exists()
    line = ("Sent 2 contribution summaries for week 2026-11-23 "
            "(2 members without a usable email skipped, 1 of them with an invalid address)")
    assert line in caplog.messages
    assert_no_address(caplog.text)


@pytest.mark.parametrize("refusal", [
    smtplib.SMTPDataError(550, b"5.1.1 <bob@example.com>: Recipient address rejected: User unknown"),
    smtplib.SMTPDataError(554, b"5.7.1 <bob@example.com>: Message rejected for policy reasons"),
    smtplib.SMTPRecipientsRefused({"bob@example.com": (550, b"5.1.1 <bob@example.com>: no such user")}),
    smtplib.SMTPRecipientsRefused({"bob@example.com": (452, b"4.2.2 <bob@example.com>: mailbox full")}),
], ids=["data-550", "data-554", "rcpt-550", "rcpt-452"])
@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_message_refused_for_its_recipient_does_not_stop_the_others(quay, mailoutbox, monkeypatch, caplog,
                                                                     refusal):
    # given
    monkeypatch.setattr(EmailBackend, "send_messages", like_smtp({"bob@example.com": refusal}))

    # when
    with caplog.at_level(logging.INFO, logger="contributions"):
        sent = send_all()

    # then: bob is counted and not recorded (the next run tries him again)
    assert sent == 2
    assert recipients(mailoutbox) == ["alice@example.com", "erin@example.com"]
    assert not SummaryDelivery.objects.filter(status="SENT").filter(membership=quay["bob"]).exists()
    line = ("Sent 2 contribution summaries for week 2026-11-23 "
            "(1 members without a usable email skipped; 1 refused by the mail server)")
    assert line in caplog.messages
    assert_no_address(caplog.text)


# -- transient errors: raised for a retry, without addresses ---------------------------------------


@pytest.mark.parametrize(("error", "described"), [
    (smtplib.SMTPDataError(451, b"4.3.0 <bob@example.com>: try again later"), "SMTPDataError (SMTP 451)"),
    (smtplib.SMTPRecipientsRefused({"bob@example.com": (421, b"4.4.2 closing, bob@example.com")}),
     "SMTPRecipientsRefused (SMTP 421)"),
    (smtplib.SMTPSenderRefused(553, b"5.7.1 <noreply@localhost>: not owned by user", "noreply@localhost"),
     "SMTPSenderRefused (SMTP 553)"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed while sending to bob@example.com"),
     "SMTPServerDisconnected"),
    (ConnectionResetError(104, "Connection reset by peer (bob@example.com)"), "ConnectionResetError (errno 104)"),
], ids=["data-451", "rcpt-421", "sender-553", "disconnected", "reset"])
@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_transient_error_raises_for_a_retry_with_no_address_in_it(quay, mailoutbox, monkeypatch, caplog,
                                                                   error, described):
    # given: bob's message (the second) meets the error
    monkeypatch.setattr(EmailBackend, "send_messages", like_smtp({"bob@example.com": error}))

    # when
    with caplog.at_level(logging.DEBUG), pytest.raises(SummarySendError) as raised:
        send_all()

    # then: what went out before it is recorded
    assert recipients(mailoutbox) == ["alice@example.com"]
    sent_rows = SummaryDelivery.objects.filter(status="SENT")
    assert list(sent_rows.values_list("membership", flat=True)) == [quay["alice"].pk]

    # and: the error names the type and the code, not the text; nothing is chained to it, so the
    # traceback that JobRun.error and Sentry get holds no address either
    exc = raised.value
    assert described in str(exc)
    assert exc.__cause__ is None and exc.__context__ is None
    assert_no_address("".join(traceback.format_exception(exc)))
    assert_no_address(caplog.text)

    # when: the job's retry, with the server well again
    monkeypatch.setattr(EmailBackend, "send_messages", like_smtp())
    sent = send_all()

    # then: the others, once each
    assert sent == 2
    assert recipients(mailoutbox) == ["alice@example.com", "bob@example.com", "erin@example.com"]


@time_machine.travel(MONDAY_RUN, tick=False)
def test_an_unreachable_server_raises_for_a_retry(quay, mailoutbox, monkeypatch):
    # given
    def refuse(backend):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(EmailBackend, "open", refuse)

    # when / then
    with pytest.raises(SummarySendError, match=r"ConnectionRefusedError \(errno 111\)") as raised:
        send_all()
    assert raised.value.__context__ is None
    assert mailoutbox == [] and not SummaryDelivery.objects.filter(status="SENT").exists()


@pytest.mark.parametrize("sender", ["noreply@", "Savings groups <noreply@localhost>\nBcc: eve@example.com", ""])
@time_machine.travel(MONDAY_RUN, tick=False)
def test_an_unusable_sender_stops_the_run_instead_of_skipping_everyone(quay, mailoutbox, settings, sender):
    # given
    settings.DEFAULT_FROM_EMAIL = sender
    summaries = generate_weekly_summaries()

    # when / then: a configuration error naming the setting, not its value
    with pytest.raises(ImproperlyConfigured, match="DEFAULT_FROM_EMAIL") as raised:
        send_summaries_to_members(summaries)
    assert_no_address(str(raised.value))
    assert mailoutbox == [] and not SummaryDelivery.objects.filter(status="SENT").exists()


@time_machine.travel(MONDAY_RUN, tick=False)
def test_a_group_without_an_open_round_and_only_bad_addresses_sends_nothing(mailoutbox, caplog):
    # given: every member unusable
    group = make_group(status=Group.Status.ACTIVE, deployed=True, min_members=1, total_rounds=1)
    member = make_member(group, position=1, email="not-an-address")
    make_member(group, position=2, email="")
    make_round(group, number=1, recipient=member, status=Round.Status.COMPLETED)

    # when
    with caplog.at_level(logging.INFO, logger="contributions"):
        sent = send_all()

    # then
    assert sent == 0 and mail.outbox == [] and not SummaryDelivery.objects.filter(status="SENT").exists()
    line = ("Sent 0 contribution summaries for week 2026-11-23 "
            "(2 members without a usable email skipped, 1 of them with an invalid address)")
    assert line in caplog.messages
