"""URLs: the Django admin is the operator's console (schedules, runs, data)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from scheduler_app import dashboard, health, metrics

admin.site.site_header = "Savings groups scheduler"
admin.site.site_title = "Scheduler admin"
# The index links the "Scheduled jobs" dashboard for those allowed to see it.
admin.site.index_template = "admin/scheduler_app/index.html"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("metrics", metrics.metrics, name="metrics"),
    path("healthz", health.healthz, name="healthz"),
    path("admin/scheduler/dashboard/", admin.site.admin_view(dashboard.dashboard_view), name="scheduler-dashboard"),
    path("admin/scheduler/dashboard/run/", admin.site.admin_view(dashboard.run_now_view),
         name="scheduler-dashboard-run"),
    path("admin/", admin.site.urls),
    path("summaries/", include("contributions.urls")),
]
