"""URL routes of the HTTP surface (docs/protocol.md)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from agents.admin_views import ops_page

urlpatterns = [
    path("", RedirectView.as_view(url="/threads/", permanent=False)),
    path("admin/ops/", ops_page, name="ops-page"),
    path("admin/", admin.site.urls),
    path("", include("chat.urls")),
    path("", include("agents.urls")),
]
