"""A tool module that loads: one tool reading the user's own threads through the ORM."""

from agents.tools import ToolContext, tool
from chat.models import Thread


@tool
def my_thread_titles(ctx: ToolContext) -> list[str]:
    """Lists the titles of the signed-in user's threads."""
    return sorted(Thread.objects.filter(owner_id=ctx.user_id).values_list("title", flat=True))
