"""An agent backed by any OpenAI-compatible chat-completions server, streamed, with tools.

Modules: config (settings and their checks), messages (the conversation sent), stream
(reading one streamed response), failures (typed failures, retries), agent (the loop).
"""

from agents.providers.openai_compat.agent import OpenAICompatAgent
from agents.providers.openai_compat.config import ConfigProblem, ProviderConfig, url_problem
from agents.providers.openai_compat.failures import classify, retry_delay
from agents.providers.openai_compat.messages import build_messages, decode_arguments
from agents.providers.openai_compat.stream import DeltaCoalescer, StreamReader

__all__ = [
    "ConfigProblem",
    "DeltaCoalescer",
    "OpenAICompatAgent",
    "ProviderConfig",
    "StreamReader",
    "build_messages",
    "classify",
    "decode_arguments",
    "retry_delay",
    "url_problem",
]
