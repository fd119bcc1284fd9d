"""A tool module with two tools of one name."""

from agents.tools import tool


@tool
def lookup_order(order_id: int) -> dict[str, int]:
    """Looks an order up."""
    return {"order_id": order_id}


@tool(name="lookup_order")
def find_order(order_id: int) -> dict[str, int]:
    """Finds an order."""
    return {"order_id": order_id}
