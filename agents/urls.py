"""Routes of the run API."""

from django.urls import path

from agents import agui_views, views

urlpatterns = [
    path("healthz/events", views.healthz_events, name="healthz-events"),
    path(
        "api/threads/<uuid:thread_id>/messages/", views.api_post_message, name="api-thread-messages"
    ),
    path("api/agents/", views.api_agents, name="api-agents"),
    path("api/runs/<uuid:run_id>/cancel/", views.api_cancel_run, name="api-run-cancel"),
    path("api/agui/", agui_views.api_agui_run, name="api-agui"),
    path("api/agui/runs/<str:run_id>/", agui_views.api_agui_rejoin, name="api-agui-rejoin"),
    path(
        "api/approvals/<uuid:approval_id>/", views.api_answer_approval, name="api-approval-answer"
    ),
]
