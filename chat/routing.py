"""WebSocket routing: the Origin check and the session for cookie handshakes, the chat
consumer, and a clean 4404 for every other path."""

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import SessionMiddlewareStack
from django.urls import path, re_path

from chat.auth import header
from chat.consumers import ChatConsumer
from chat.errors import CLOSE_THREAD_NOT_FOUND, ErrorCode, NetraError
from chat.protocol import encode


class OriginUnlessBearer:
    """Checks Origin against ALLOWED_HOSTS for cookie handshakes (the cross-site hijacking
    defence), which then get their session; a handshake with an Authorization header passes
    without either, since its token alone decides (chat.auth.principal_from_scope), and
    keeps no session objects for the life of the socket."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.checked = AllowedHostsOriginValidator(SessionMiddlewareStack(inner))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        """Routes the handshake through the Origin check and the session unless it carries
        a token."""
        if header(scope, b"authorization") is not None:
            return await self.inner(scope, receive, send)
        return await self.checked(scope, receive, send)


class NoSuchEndpoint(AsyncWebsocketConsumer):
    """Any path that is no WebSocket endpoint: accepted, one `error` frame `not_found`, closed
    with 4404, as a refused chat socket is (a router miss would be an HTTP 500)."""

    async def connect(self) -> None:
        """Accepts, explains, closes."""
        err = NetraError(
            ErrorCode.NOT_FOUND,
            "No WebSocket endpoint at this path; connect to /ws/chat/<thread_id>/.",
            status=404,
            close_code=CLOSE_THREAD_NOT_FOUND,
        )
        await self.accept()
        await self.send(text_data=encode(err.frame()))
        await self.close(code=CLOSE_THREAD_NOT_FOUND)


websocket_urlpatterns = [
    path("ws/chat/<str:thread_id>/", ChatConsumer.as_asgi()),
    re_path(r"", NoSuchEndpoint.as_asgi()),
]

websocket_application = OriginUnlessBearer(URLRouter(websocket_urlpatterns))
