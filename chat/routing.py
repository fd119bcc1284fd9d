"""WebSocket routing: the Origin check for cookie handshakes, sessions, the chat consumer."""

from typing import Any

from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import SessionMiddlewareStack
from django.urls import path

from chat.auth import header
from chat.consumers import ChatConsumer


class OriginUnlessBearer:
    """Checks Origin against ALLOWED_HOSTS for cookie handshakes (the cross-site hijacking
    defence); a handshake with an Authorization header passes, since its token alone decides.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.checked = AllowedHostsOriginValidator(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        """Routes the handshake through the Origin check unless it carries a token."""
        if header(scope, b"authorization") is not None:
            return await self.inner(scope, receive, send)
        return await self.checked(scope, receive, send)


websocket_urlpatterns = [
    path("ws/chat/<str:thread_id>/", ChatConsumer.as_asgi()),
]

websocket_application = OriginUnlessBearer(SessionMiddlewareStack(URLRouter(websocket_urlpatterns)))
