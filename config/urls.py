"""URLs: the Django admin is the operator's console (schedules, runs, data)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "Savings groups scheduler"
admin.site.site_title = "Scheduler admin"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("summaries/", include("contributions.urls")),
]
