from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit log and its archive; depends on no other domain app."""

    name = "audit"
    verbose_name = "Audit"
    default_auto_field = "django.db.models.BigAutoField"
