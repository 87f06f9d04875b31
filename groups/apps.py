from __future__ import annotations

from django.apps import AppConfig


class GroupsConfig(AppConfig):
    """Savings groups; may write audit logs, never imports ``contributions``."""

    name = "groups"
    verbose_name = "Savings groups"
    default_auto_field = "django.db.models.BigAutoField"
