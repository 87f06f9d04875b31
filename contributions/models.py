"""Contributions and weekly summaries (SPEC §4).

``WeeklySummary`` is unique per (group, week start) and ``SummaryDelivery`` per
(summary, membership): the database itself makes a second summary or a second
delivery impossible (SPEC §5 "Weekly summaries"). ``SummaryOptOut``: members
who unsubscribed.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from groups.models import Group, Membership, Round


class Contribution(models.Model):
    """One payment by a member towards a round."""

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        CONFIRMED = "CONFIRMED", "Confirmed"
        FAILED = "FAILED", "Failed"

    # Contributions are financial records: a group that has any cannot be
    # deleted (PROTECT), nor can a membership or round on its own (RESTRICT,
    # which lets the group's cascade through when the group could go).
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="contributions")
    membership = models.ForeignKey(Membership, on_delete=models.RESTRICT, related_name="contributions")
    round = models.ForeignKey(Round, on_delete=models.RESTRICT, related_name="contributions")
    #: In the group's currency; Decimal end to end, never float (SPEC §4).
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    #: When the payment was confirmed; null unless CONFIRMED.
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The weekly summary: status = CONFIRMED AND confirmed_at in [start, end).
            models.Index(fields=["status", "confirmed_at"], name="contribution_week_idx"),
            # "Any confirmed contribution of this group since ..." (inactive groups).
            models.Index(fields=["group", "status", "confirmed_at"], name="contribution_group_recent_idx"),
            # What a member paid in a round (amount owed in the summary).
            models.Index(fields=["round", "membership", "status"], name="contribution_round_member_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="contribution_amount_positive",
                                   violation_error_message="Amount must be more than 0."),
        ]

    def __str__(self) -> str:
        return f"{self.amount} to round {self.round_id} ({self.get_status_display()})"

    def clean(self) -> None:
        """Refuse a membership or round of another group, and a confirmation without a time.

        Raises:
            ValidationError: keyed by the field at fault.
        """
        errors: dict[str, str] = {}
        group_id = self.group_id
        for name in ("membership", "round"):
            try:
                related = getattr(self, name)
            except ObjectDoesNotExist:
                continue
            if group_id is not None and related.group_id != group_id:
                errors[name] = f"The {name} must belong to the contribution's group (group {group_id})."
        if self.status == self.Status.CONFIRMED and self.confirmed_at is None:
            errors["confirmed_at"] = "A confirmed contribution needs the time it was confirmed."
        if errors:
            raise ValidationError(errors)


class WeeklySummary(models.Model):
    """A group's totals for one Monday-to-Monday week (SPEC §5).

    Created once per (group, week_start) and never recomputed, so every member
    of the group is sent the same figures, however many runs it takes.
    """

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="weekly_summaries")
    #: The Monday the week starts on, in TIME_ZONE; the week ends the next Monday 00:00 (exclusive).
    week_start = models.DateField()
    #: CONFIRMED contributions with confirmed_at in the week.
    contribution_count = models.PositiveIntegerField(default=0)
    #: Their sum, in the group's currency.
    total_amount = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "weekly summaries"
        ordering = ["-week_start", "group_id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "week_start"], name="summary_unique_group_week"),
        ]

    def __str__(self) -> str:
        return f"group {self.group_id}, week of {self.week_start:%Y-%m-%d}"


class SummaryDelivery(models.Model):
    """One member's copy of a summary: claimed, then sent (or refused, or skipped).

    The unique (summary, membership) constraint decides who sends: a run
    inserts a PENDING row per member (``INSERT ... ON CONFLICT DO NOTHING``),
    a delivery batch claims its rows with one conditional UPDATE to SENDING
    under its task id before sending, and records SENT / FAILED / SKIPPED
    after. A row SENT is never sent again; a row claimed by another batch is
    never touched (see ``contributions.services.send_delivery_batch``).
    """

    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        SENDING = "SENDING", "Sending"
        SENT = "SENT", "Sent"
        FAILED = "FAILED", "Failed"
        SKIPPED = "SKIPPED", "Skipped"

    #: ``reason`` of a SKIPPED row.
    REASON_INVALID = "invalid address"
    REASON_UNSUBSCRIBED = "unsubscribed"

    summary = models.ForeignKey(WeeklySummary, on_delete=models.CASCADE, related_name="deliveries")
    membership = models.ForeignKey(Membership, on_delete=models.CASCADE, related_name="summary_deliveries")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    #: When the mail server (or the email service) accepted it; null until SENT.
    sent_at = models.DateTimeField(null=True, blank=True)
    #: The ``scheduler_app.JobRun`` whose batches deliver it (not a foreign key: run history is pruned).
    run_id = models.BigIntegerField(null=True, blank=True)
    #: The batch (its Celery task id) that claimed it; a redelivered batch re-claims its own rows only.
    claimed_by = models.CharField(max_length=255, blank=True)
    #: Why it is FAILED or SKIPPED, e.g. "refused by the mail server (SMTP 550)"; never an address.
    reason = models.CharField(max_length=100, blank=True)

    class Meta:
        verbose_name_plural = "summary deliveries"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["summary", "membership"], name="delivery_unique_summary_member"),
        ]
        indexes = [models.Index(fields=["run_id", "status"], name="delivery_run_status_idx")]

    def __str__(self) -> str:
        return f"summary {self.summary_id} to membership {self.membership_id} ({self.status})"


class SummaryOptOut(models.Model):
    """A user who does not want the weekly summaries (unsubscribed from an email, or set in the admin).

    The next run skips them. Changes are audited (``SUMMARY_UNSUBSCRIBED`` /
    ``SUMMARY_RESUBSCRIBED`` in the audit log); deleting the row opts back in.
    """

    class Source(models.TextChoices):
        EMAIL_LINK = "email_link", "unsubscribe link"
        ONE_CLICK = "one_click", "one-click (mail client)"
        ADMIN = "admin", "admin"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="summary_opt_out")
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.ADMIN)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "summary opt-out"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"user {self.user_id} opted out of summaries"
