"""Savings groups, memberships and payout rounds (SPEC §4).

A group collects ``contribution_amount`` from each member every round and
pays the pot to the round's recipient; it has ``total_rounds`` rounds.
Status moves PENDING -> ACTIVE -> COMPLETED only, through
:func:`groups.services.update_group_statuses` (SPEC §5).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from groups.validators import validate_contract_address, validate_currency_code


class Group(models.Model):
    """A savings group."""

    class Status(models.TextChoices):
        #: Gathering members; waits for ``min_members`` and a deployed contract.
        PENDING = "PENDING", "Pending"
        #: Collecting contributions round by round.
        ACTIVE = "ACTIVE", "Active"
        #: Every round completed; final, never changes again.
        COMPLETED = "COMPLETED", "Completed"

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    min_members = models.PositiveSmallIntegerField()
    max_members = models.PositiveSmallIntegerField()
    #: What each member pays per round, in ``currency``.
    contribution_amount = models.DecimalField(max_digits=12, decimal_places=2)
    #: ISO 4217 code, e.g. ``USD``.
    currency = models.CharField(max_length=3, default="USD", validators=[validate_currency_code])
    total_rounds = models.PositiveSmallIntegerField()
    #: Null until the group's contract is deployed (SPEC §4).
    # Null, not "", until deployed: SPEC §4 names the null state.
    contract_address = models.CharField(  # noqa: DJ001
        max_length=128, null=True, blank=True, validators=[validate_contract_address],
        help_text="0x followed by 40 hexadecimal digits; empty until the contract is deployed.")
    contract_deployed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The hourly status job and the weekly summaries select by status.
            models.Index(fields=["status"], name="group_status_idx"),
        ]
        constraints = [
            # The messages are what the admin shows when a form breaks the constraint.
            models.CheckConstraint(condition=Q(min_members__gte=1), name="group_min_members_positive",
                                   violation_error_message="Min members must be at least 1."),
            models.CheckConstraint(condition=Q(max_members__gte=F("min_members")), name="group_max_members_gte_min",
                                   violation_error_message="Max members must be at least min members."),
            models.CheckConstraint(condition=Q(contribution_amount__gt=0), name="group_contribution_amount_positive",
                                   violation_error_message="Contribution amount must be more than 0."),
            models.CheckConstraint(condition=Q(total_rounds__gte=1), name="group_total_rounds_positive",
                                   violation_error_message="Total rounds must be at least 1."),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_status_display()})"

    @property
    def contract_deployed(self) -> bool:
        """True once the group's contract has an address (SPEC §5 activation rule)."""
        return bool(self.contract_address)


class Membership(models.Model):
    """A user's place in a group; counts as a member while ``left_at`` is null (SPEC §4)."""

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    # PROTECT: a member's contributions are financial records; deleting the
    # user must not silently remove them.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="savings_memberships")
    #: 1-based order in which members receive the pot.
    payout_position = models.PositiveSmallIntegerField()
    joined_at = models.DateTimeField(default=timezone.now)
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["group_id", "payout_position"]
        indexes = [
            # Counting active members per group (status job, summaries).
            models.Index(fields=["group", "left_at"], name="membership_group_active_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "user"], condition=Q(left_at__isnull=True), name="membership_one_active_per_user",
                violation_error_message="This user is already an active member of this group.",
            ),
            models.UniqueConstraint(
                fields=["group", "payout_position"], condition=Q(left_at__isnull=True),
                name="membership_unique_active_position",
                violation_error_message="Another active member of this group has this payout position.",
            ),
        ]

    def __str__(self) -> str:
        return f"member #{self.payout_position} of group {self.group_id}"

    @property
    def is_active(self) -> bool:
        return self.left_at is None


class Round(models.Model):
    """One payout round of a group: members contribute, ``recipient`` receives the pot."""

    class Status(models.TextChoices):
        OPEN = "OPEN", "Open"
        COMPLETED = "COMPLETED", "Completed"

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="rounds")
    #: 1..total_rounds, unique per group.
    number = models.PositiveSmallIntegerField()
    # RESTRICT, not PROTECT: a recipient cannot be removed on their own, but
    # deleting a whole group (which cascades to its rounds) still works.
    recipient = models.ForeignKey(Membership, on_delete=models.RESTRICT, related_name="rounds_received")
    due_date = models.DateField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["group_id", "number"]
        indexes = [
            models.Index(fields=["group", "status", "number"], name="round_group_status_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["group", "number"], name="round_unique_number_per_group",
                                    violation_error_message="This group already has a round with this number."),
            models.CheckConstraint(condition=Q(number__gte=1), name="round_number_positive",
                                   violation_error_message="Round number must be at least 1."),
        ]

    def __str__(self) -> str:
        return f"round {self.number} of group {self.group_id} ({self.get_status_display()})"

    def clean(self) -> None:
        """Refuse a number past the group's ``total_rounds``, another group's recipient, a completion without a time.

        Raises:
            ValidationError: keyed by the field at fault.
        """
        errors: dict[str, str] = {}
        group = _related_or_none(self, "group")
        if group is not None and self.number is not None and group.total_rounds and self.number > group.total_rounds:
            errors["number"] = (f"Round {self.number} is past the group's last round: it has "
                                f"{group.total_rounds} round{'s' if group.total_rounds != 1 else ''}.")
        recipient = _related_or_none(self, "recipient")
        if group is not None and recipient is not None and recipient.group_id != group.pk:
            errors["recipient"] = "The recipient must be a member of this round's group."
        if self.status == self.Status.COMPLETED and self.completed_at is None:
            errors["completed_at"] = "A completed round needs the time it was completed."
        if errors:
            raise ValidationError(errors)


def _related_or_none(instance: models.Model, name: str) -> Any:
    """``instance.<name>``, or None while the foreign key is not set (a form being validated)."""
    try:
        return getattr(instance, name)
    except ObjectDoesNotExist:
        return None
