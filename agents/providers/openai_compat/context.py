"""Fitting a run's conversation into the model's context window (AGENT_CONTEXT_TOKENS).

No tokenizer is available at run time (none can be downloaded here, nor on many users'
machines), so tokens are estimated from the characters, on the high side: a word of
letters counts one token per three letters, a digit or ASCII symbol one token each
(tokenizers of Llama-family models split numbers into digits), and a non-ASCII character
one token per UTF-8 byte (the byte fallback of small vocabularies). Against
SmolLM2-135M's tokenizer this overestimates English prose by about 1.4x and code and
arithmetic by 1.1x.
"""

import json
import re
from typing import Any

from agents.errors import AgentFailure

# Role markers and separators a chat template adds around each message.
MESSAGE_OVERHEAD = 8
# Tokens kept free for the answer: a quarter of the window, at most this many.
ANSWER_RESERVE_MAX = 1024
_PIECE = re.compile(r"[A-Z]*[a-z]+|[A-Z]+|[ \t]+|\s+|[\x00-\x7f]|[^\x00-\x7f]+")


def estimate_tokens(text: str) -> int:
    """Returns a conservative estimate of the tokens of `text`."""
    count = 0
    for match in _PIECE.finditer(text):
        piece = match.group(0)
        first = piece[0]
        if first.isascii() and first.isalpha():
            count += -(-len(piece) // 3)
        elif first in " \t":
            count += (len(piece) + 2) // 4 if len(piece) > 1 else 0
        elif first.isascii():
            count += 1
        else:
            count += len(piece.encode())
    return count


def message_tokens(content: str) -> int:
    """Returns the estimated tokens of one chat message with `content`."""
    return estimate_tokens(content) + MESSAGE_OVERHEAD


def answer_reserve(context_tokens: int) -> int:
    """Returns the tokens kept free for the model's answer."""
    return min(ANSWER_RESERVE_MAX, context_tokens // 4)


def conversation_budget(
    *, context_tokens: int, system_prompt: str, tools: list[dict[str, Any]], text: str
) -> int:
    """Returns the tokens left for earlier messages once the system prompt, the tool
    schemas, the user's text and the answer's reserve are counted; raises
    llm_context_exceeded when the user's text alone does not fit."""
    fixed = answer_reserve(context_tokens) + estimate_tokens(json.dumps(tools))
    if system_prompt:
        fixed += message_tokens(system_prompt)
    needed = fixed + message_tokens(text)
    if needed > context_tokens:
        raise AgentFailure(
            "llm_context_exceeded",
            f"The message is too long for the model's context window (about {needed} "
            f"tokens with the instructions and a reserve for the answer; the window is "
            f"{context_tokens}, AGENT_CONTEXT_TOKENS). Send a shorter message or split it.",
            retryable=False,
        )
    return context_tokens - needed


def context_exceeded() -> AgentFailure:
    """Returns the failure of a request the model server refused as too long."""
    return AgentFailure(
        "llm_context_exceeded",
        "The conversation is longer than the model server's context window. Start a new "
        "thread or send a shorter message; an operator can raise the server's context size "
        "and set AGENT_CONTEXT_TOKENS to it (docs/providers.md).",
        retryable=False,
    )
