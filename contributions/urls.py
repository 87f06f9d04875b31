"""Public URLs of contributions: the summaries' unsubscribe link (no login)."""

from django.urls import path

from contributions.unsubscribe import unsubscribe

app_name = "contributions"

urlpatterns = [
    path("unsubscribe/<str:token>/", unsubscribe, name="unsubscribe"),
]
