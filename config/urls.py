"""URLs: the Django admin is the operator's console (schedules, runs, data)."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from scheduler_app import health, metrics

admin.site.site_header = "Savings groups scheduler"
admin.site.site_title = "Scheduler admin"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("metrics", metrics.metrics, name="metrics"),
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
