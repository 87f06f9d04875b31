from __future__ import annotations

from django.apps import AppConfig


class ContributionsConfig(AppConfig):
    """Contributions and weekly summaries; reads ``groups``."""

    name = "contributions"
    verbose_name = "Contributions"
    default_auto_field = "django.db.models.BigAutoField"
