"""The admin refuses bad group, round and contribution input with a form error naming the field (issue 11 item 4).

Each row posts the admin's own add or change form as a browser would and
checks the error (field and words) and that nothing was stored.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from contributions.models import Contribution
from groups.models import Group, Round
from tests.factories import make_group, make_member, make_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(get_user_model().objects.create_superuser("op", "op@example.com", "pw"))
    return client


def management_form(prefix: str, total: int = 0, initial: int = 0) -> dict[str, str]:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def group_form(**overrides: str) -> dict[str, str]:
    data = {"name": "Harbour Savers", "min_members": "3", "max_members": "5", "contribution_amount": "50.00",
            "currency": "USD", "total_rounds": "3", "contract_address": "",
            "contract_deployed_at_0": "", "contract_deployed_at_1": "",
            **management_form("memberships"), **management_form("rounds")}
    data.update(overrides)
    return data


# (field or None for the whole form, posted values, words the error must hold)
GROUP_ROWS = [
    ("currency", {"currency": "usd"}, "'usd' is not an ISO 4217 currency code"),
    ("currency", {"currency": "12$"}, "'12$' is not an ISO 4217 currency code"),
    ("currency", {"currency": "ABC"}, "'ABC' is not an ISO 4217 currency code"),
    ("contract_address", {"contract_address": "0x123"}, "'0x123' is not a contract address"),
    ("contract_address", {"contract_address": "1x" + "a" * 40}, "0x followed by 40 hexadecimal digits"),
    ("contract_address", {"contract_address": "0x" + "g" * 40}, "0x followed by 40 hexadecimal digits"),
    (None, {"min_members": "5", "max_members": "3"}, "Max members must be at least min members."),
    (None, {"contribution_amount": "0"}, "Contribution amount must be more than 0."),
    (None, {"min_members": "0"}, "Min members must be at least 1."),
    (None, {"total_rounds": "0"}, "Total rounds must be at least 1."),
]


@pytest.mark.parametrize(("field", "values", "message"), GROUP_ROWS)
def test_group_form_refuses_bad_input(admin_client, field, values, message):
    response = admin_client.post(reverse("admin:groups_group_add"), group_form(**values))

    assert response.status_code == 200  # the form again, not a redirect
    form = response.context["adminform"].form
    errors = form.errors.get(field or "__all__", [])
    assert any(message in error for error in errors), form.errors
    assert "violated" not in response.content.decode()
    assert not Group.objects.exists()


def test_group_form_accepts_good_input(admin_client):
    response = admin_client.post(reverse("admin:groups_group_add"),
                                 group_form(currency="KES", contract_address="0x" + "aB3" * 13 + "c"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Group.objects.get().currency == "KES"


@pytest.fixture
def two_groups():
    group = make_group(total_rounds=3, deployed=True)
    other = make_group(total_rounds=3, deployed=True)
    return group, make_member(group), make_member(other)


def round_form(group, recipient, /, **overrides: str) -> dict[str, str]:
    data = {"group": str(group.pk), "number": "1", "recipient": str(recipient.pk), "due_date": "2026-12-07",
            "status": "OPEN", "completed_at_0": "", "completed_at_1": ""}
    data.update(overrides)
    return data


ROUND_ROWS = [
    ("number", {"number": "4"}, "Round 4 is past the group's last round: it has 3 rounds."),
    ("recipient", {"recipient": "other"}, "The recipient must be a member of this round's group."),
    ("completed_at", {"status": "COMPLETED"}, "A completed round needs the time it was completed."),
    (None, {"number": "0"}, "Round number must be at least 1."),
]


@pytest.mark.parametrize(("field", "values", "message"), ROUND_ROWS)
def test_round_form_refuses_bad_input(admin_client, two_groups, field, values, message):
    group, member, outsider = two_groups
    if values.get("recipient") == "other":
        values = {**values, "recipient": str(outsider.pk)}

    response = admin_client.post(reverse("admin:groups_round_add"), round_form(group, member, **values))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert any(message in error for error in form.errors.get(field or "__all__", [])), form.errors
    assert not Round.objects.exists()


def test_round_number_past_total_rounds_is_refused_in_the_group_inline(admin_client, two_groups):
    group, member, _outsider = two_groups
    data = group_form(name=group.name, contract_address=group.contract_address,
                      **management_form("memberships", total=1, initial=1), **management_form("rounds", total=1))
    data.update({"memberships-0-id": str(member.pk), "memberships-0-group": str(group.pk),
                 "memberships-0-user": str(member.user_id), "memberships-0-payout_position": "1",
                 "memberships-0-joined_at_0": "2026-11-01", "memberships-0-joined_at_1": "00:00:00",
                 "memberships-0-left_at_0": "", "memberships-0-left_at_1": "",
                 "rounds-0-group": str(group.pk), "rounds-0-number": "4", "rounds-0-recipient": str(member.pk),
                 "rounds-0-due_date": "2026-12-07", "rounds-0-status": "OPEN",
                 "rounds-0-completed_at_0": "", "rounds-0-completed_at_1": ""})

    response = admin_client.post(reverse("admin:groups_group_change", args=[group.pk]), data)

    assert response.status_code == 200
    rounds_formset = next(f.formset for f in response.context["inline_admin_formsets"] if f.formset.prefix == "rounds")
    assert rounds_formset.errors[0]["number"] == ["Round 4 is past the group's last round: it has 3 rounds."]
    assert not Round.objects.exists()


def contribution_form(group, membership, round_, /, **overrides: str) -> dict[str, str]:
    data = {"group": str(group.pk), "membership": str(membership.pk), "round": str(round_.pk), "amount": "50.00",
            "status": "PENDING", "created_at_0": "2026-11-30", "created_at_1": "09:00:00",
            "confirmed_at_0": "", "confirmed_at_1": ""}
    data.update(overrides)
    return data


CONTRIBUTION_ROWS = [
    ("membership", {"membership": "other"}, "The membership must belong to the contribution's group"),
    ("round", {"round": "other"}, "The round must belong to the contribution's group"),
    ("confirmed_at", {"status": "CONFIRMED"}, "A confirmed contribution needs the time it was confirmed."),
    (None, {"amount": "0"}, "Amount must be more than 0."),
]


@pytest.mark.parametrize(("field", "values", "message"), CONTRIBUTION_ROWS)
def test_contribution_form_refuses_bad_input(admin_client, two_groups, field, values, message):
    group, member, outsider = two_groups
    round_ = make_round(group, number=1, recipient=member)
    other_round = make_round(outsider.group, number=1, recipient=outsider)
    if values.get("membership") == "other":
        values = {**values, "membership": str(outsider.pk)}
    if values.get("round") == "other":
        values = {**values, "round": str(other_round.pk)}

    response = admin_client.post(reverse("admin:contributions_contribution_add"),
                                 contribution_form(group, member, round_, **values))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert any(message in error for error in form.errors.get(field or "__all__", [])), form.errors
    assert "violated" not in response.content.decode()
    assert not Contribution.objects.exists()


def test_contribution_form_accepts_a_confirmed_contribution_with_its_time(admin_client, two_groups):
    group, member, _outsider = two_groups
    round_ = make_round(group, number=1, recipient=member)

    response = admin_client.post(reverse("admin:contributions_contribution_add"), contribution_form(
        group, member, round_, status="CONFIRMED", confirmed_at_0="2026-11-30", confirmed_at_1="09:05:00"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Contribution.objects.get().status == "CONFIRMED"


# (what the second membership repeats, the sentence)
MEMBERSHIP_ROWS = [
    ("user", "This user is already an active member of this group."),
    ("payout_position", "Another active member of this group has this payout position."),
]


@pytest.mark.parametrize(("repeated", "message"), MEMBERSHIP_ROWS)
def test_membership_constraints_read_as_sentences(admin_client, two_groups, repeated, message):
    group, member, _outsider = two_groups
    other_user = get_user_model().objects.create_user("someone-else")
    data = {"group": str(group.pk), "user": str(member.user_id if repeated == "user" else other_user.pk),
            "payout_position": str(member.payout_position if repeated == "payout_position" else 2),
            "joined_at_0": "2026-11-30", "joined_at_1": "09:00:00", "left_at_0": "", "left_at_1": ""}

    response = admin_client.post(reverse("admin:groups_membership_add"), data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert message in form.errors.get("__all__", []), form.errors
    assert "violated" not in response.content.decode()
    assert group.memberships.count() == 1
