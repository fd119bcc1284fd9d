"""A tool module with a tool whose parameter type has no JSON schema."""

import socket

from agents.tools import tool


@tool
def send_raw(connection: socket.socket) -> None:
    """Sends on a raw socket (a type pydantic cannot describe)."""
