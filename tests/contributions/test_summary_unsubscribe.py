"""Unsubscribing from the weekly summaries (issue 10, part 3): signed one-click links, the opt-out, the admin.

Scenario: "Quay Savers" with alice, bob and erin (emails). Bob unsubscribes
through the link of his summary; the next week's run emails alice and erin
only (2), and the audit log holds one ``SUMMARY_UNSUBSCRIBED`` row for bob,
however often his link is replayed.
"""

from __future__ import annotations

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core import signing
from django.test import Client
from django.urls import reverse

from audit.models import AuditLog
from contributions.models import SummaryDelivery, SummaryOptOut
from contributions.services import generate_weekly_summaries, send_summaries_to_members
from contributions.unsubscribe import make_token, unsubscribe_url
from groups.models import Group
from tests.factories import at, make_group, make_member, make_round, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def quay():
    group = make_group(name="Quay Savers", status=Group.Status.ACTIVE, deployed=True)
    members = {name: make_member(group, position=i + 1, username=name)
               for i, name in enumerate(("alice", "bob", "erin"))}
    make_round(group, number=1, recipient=members["alice"])
    return members


def send_week(monday: str, mailoutbox) -> list[str]:
    mailoutbox.clear()
    with time_machine.travel(at(monday), tick=False):
        send_summaries_to_members(generate_weekly_summaries(), unsubscribe_url=unsubscribe_url)
    return sorted(message.to[0] for message in mailoutbox)


def path_of(url: str) -> str:
    return url.removeprefix("http://localhost:8000")


def test_the_summary_carries_one_click_headers_and_a_visible_link(quay, mailoutbox):
    assert send_week("2026-11-30 09:00:00", mailoutbox) == ["alice@example.com", "bob@example.com",
                                                             "erin@example.com"]
    bob = next(m for m in mailoutbox if m.to == ["bob@example.com"])
    assert bob.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = bob.extra_headers["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    token = url.removeprefix("http://localhost:8000/summaries/unsubscribe/").removesuffix("/")
    assert signing.loads(token, salt="contributions.summaries.unsubscribe") == quay["bob"].user_id
    assert f"Unsubscribe: {url}\n" in bob.body
    assert f'<a href="{url}">Unsubscribe</a>' in bob.alternatives[0][0]


def test_one_click_unsubscribes_without_csrf_idempotently_and_the_next_week_skips_the_member(quay, mailoutbox):
    client = Client(enforce_csrf_checks=True)
    url = path_of(unsubscribe_url(quay["bob"].user_id))
    # when: a link scanner fetches the link
    page = client.get(url)
    # then: a confirmation page, nothing recorded
    assert page.status_code == 200 and b"Stop the weekly summaries?" in page.content
    assert not SummaryOptOut.objects.exists()
    # when: the mail provider's one-click POST (RFC 8058), no CSRF token, then twice more (a replay)
    for _ in range(3):
        done = client.post(url, {"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and b"You are unsubscribed" in done.content
    # then: one opt-out, one audit row
    opt_out = SummaryOptOut.objects.get()
    assert (opt_out.user_id, opt_out.source) == (quay["bob"].user_id, "one_click")
    audit = AuditLog.objects.get(action="SUMMARY_UNSUBSCRIBED")
    assert (audit.user_id, audit.entity_type, audit.entity_id) == (quay["bob"].user_id, "user",
                                                                   str(quay["bob"].user_id))
    # and the next run sends to alice and erin only
    assert send_week("2026-11-30 09:00:00", mailoutbox) == ["alice@example.com", "erin@example.com"]
    assert not SummaryDelivery.objects.filter(membership=quay["bob"]).exists()


def test_the_confirm_page_button_unsubscribes(quay, client):
    url = path_of(unsubscribe_url(quay["alice"].user_id))
    assert client.post(url).status_code == 200
    assert SummaryOptOut.objects.get().source == "email_link"


@pytest.mark.parametrize("token", [
    "garbage",
    "not-a-token:at:all",
    signing.dumps(1, salt="another.salt"),  # signed, but not for this purpose
    signing.dumps(1, salt="contributions.summaries.unsubscribe", key="not-our-secret-key"),  # forged
])
def test_a_forged_or_tampered_token_is_refused_and_reveals_nothing(quay, client, token):
    for response in (client.get(f"/summaries/unsubscribe/{token}/"),
                     client.post(f"/summaries/unsubscribe/{token}/", {"List-Unsubscribe": "One-Click"})):
        assert response.status_code == 400
        assert b"This link is not valid" in response.content
        assert b"@" not in response.content and b"alice" not in response.content
    assert not SummaryOptOut.objects.exists() and not AuditLog.objects.exists()


def test_a_tampered_valid_token_and_a_deleted_users_token_are_refused(quay, client):
    token = make_token(quay["bob"].user_id)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.post(f"/summaries/unsubscribe/{tampered}/").status_code == 400
    gone = make_user(username="gone")
    gone_token = make_token(gone.pk)
    gone.delete()
    response = client.post(f"/summaries/unsubscribe/{gone_token}/")
    # a valid signature for nobody: 404, the same words as a bad link
    assert response.status_code == 404 and b"This link is not valid" in response.content
    assert not SummaryOptOut.objects.exists()


def test_the_admin_adds_and_removes_an_opt_out_audited(quay, client):
    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin_user)
    bob = quay["bob"].user
    added = client.post(reverse("admin:contributions_summaryoptout_add"), {"user": bob.pk, "source": "admin"})
    assert added.status_code == 302
    opt_out = SummaryOptOut.objects.get(user=bob)
    assert opt_out.source == "admin"
    deleted = client.post(reverse("admin:contributions_summaryoptout_delete", args=[opt_out.pk]), {"post": "yes"})
    assert deleted.status_code == 302 and not SummaryOptOut.objects.exists()
    assert list(AuditLog.objects.order_by("id").values_list("action", "user_id", "entity_id")) == [
        ("SUMMARY_UNSUBSCRIBED", admin_user.pk, str(bob.pk)),
        ("SUMMARY_RESUBSCRIBED", admin_user.pk, str(bob.pk)),
    ]
