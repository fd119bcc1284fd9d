"""A tool module with a tool whose parameter has no type annotation."""

from typing import Any

from agents.tools import tool


@tool
def search(query, limit: int = 5) -> list[Any]:
    """Searches the knowledge base."""
    return [query, limit]
