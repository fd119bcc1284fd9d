"""Routes of the chat pages and API."""

from django.contrib.auth import views as auth_views
from django.urls import path

from chat import health, sse_views, views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", views.signup, name="signup"),
    path("threads/", views.thread_list, name="thread-list"),
    path("threads/<uuid:thread_id>/", views.thread_detail, name="thread-detail"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("api/threads/", views.api_threads, name="api-threads"),
    path("api/threads/<uuid:thread_id>/", views.api_thread, name="api-thread"),
    path(
        "api/threads/<uuid:thread_id>/history/",
        views.api_thread_history,
        name="api-thread-history",
    ),
    path("api/threads/<uuid:thread_id>/events/", views.api_thread_events, name="api-thread-events"),
    path(
        "api/threads/<uuid:thread_id>/stream/",
        sse_views.api_thread_stream,
        name="api-thread-stream",
    ),
]
