"""Configuration of the OpenAI-compatible provider: read once from the settings, checked
by the system checks (agents/checks.py) and again before each run."""

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings

from agents.tools import default_registry

SECRET_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*-]{6,}")
# auto: the model decides; required (or a tool's name): the first step must call a tool
# (that one), later steps are auto, or the run could never end; none: no tools offered.
TOOL_CHOICES = ("auto", "required", "none")
MIN_CONTEXT_TOKENS = 512


@dataclass(frozen=True)
class ConfigProblem:
    """One misconfiguration, with the id of the system check that reports it."""

    id: str
    message: str
    hint: str


def url_problem(url: str) -> str | None:
    """Returns why `url` cannot be a chat-completions base URL, or None if it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})."
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must start with http:// or https://."
    if not parts.hostname:
        return f"{url!r} has no host."
    if port == 0:
        return f"{url!r} has port 0."
    if parts.query or parts.fragment:
        return f"{url!r} must not have a query or fragment."
    return None


@dataclass(frozen=True)
class ProviderConfig:
    """Everything the provider needs, read once from the settings."""

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    system_prompt: str = ""
    max_steps: int = 8
    request_timeout: float = 120.0
    connect_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_retries: int = 2
    retry_max_wait: float = 20.0
    retry_base: float = 0.5
    history_chars: int = 24000
    context_tokens: int = 8192
    max_output_tokens: int = 0  # 0: not sent, the server's own limit applies
    tool_choice: str = "auto"
    temperature: float | None = None  # None: not sent, the server's default applies
    flush_chars: int = 64
    flush_interval: float = 0.05

    @classmethod
    def from_settings(cls) -> "ProviderConfig":
        """Reads the LLM provider block of the settings."""
        return cls(
            base_url=settings.OPENAI_BASE_URL,
            model=settings.AGENT_MODEL,
            api_key=settings.OPENAI_API_KEY,
            system_prompt=settings.AGENT_SYSTEM_PROMPT,
            max_steps=settings.AGENT_MAX_STEPS,
            request_timeout=settings.AGENT_LLM_TIMEOUT,
            connect_timeout=settings.AGENT_LLM_CONNECT_TIMEOUT,
            idle_timeout=settings.AGENT_LLM_IDLE_TIMEOUT,
            max_retries=settings.AGENT_LLM_MAX_RETRIES,
            retry_max_wait=settings.AGENT_LLM_RETRY_MAX_WAIT,
            history_chars=settings.AGENT_HISTORY_CHARS,
            context_tokens=settings.AGENT_CONTEXT_TOKENS,
            max_output_tokens=settings.AGENT_MAX_OUTPUT_TOKENS,
            tool_choice=settings.AGENT_TOOL_CHOICE,
        )

    def problems(self) -> list[ConfigProblem]:
        """Returns what makes this configuration unusable (empty when it is fine)."""
        found: list[ConfigProblem] = []
        if not self.model.strip():
            found.append(
                ConfigProblem(
                    "netra.E102",
                    "AGENT_MODEL is not set; an OpenAI-compatible agent needs a model.",
                    "Set AGENT_MODEL to a model the server serves, e.g. gpt-4o-mini or "
                    "qwen2.5:7b (docs/providers.md), or `model` on the agent's class.",
                )
            )
        problem = url_problem(self.base_url)
        if problem is not None:
            found.append(
                ConfigProblem(
                    "netra.E103",
                    f"OPENAI_BASE_URL {problem}",
                    "Use the server's OpenAI-compatible root, e.g. http://127.0.0.1:11434/v1.",
                )
            )
        elif urlsplit(self.base_url).hostname == "api.openai.com" and not self.api_key:
            found.append(
                ConfigProblem(
                    "netra.E104",
                    "OPENAI_BASE_URL is api.openai.com but OPENAI_API_KEY is not set.",
                    "Set OPENAI_API_KEY, or point OPENAI_BASE_URL at a local server.",
                )
            )
        found += self._bound_problems()
        tool_names = sorted(default_registry().tools)
        if self.tool_choice not in (*TOOL_CHOICES, *tool_names):
            found.append(
                ConfigProblem(
                    "netra.E106",
                    f"AGENT_TOOL_CHOICE is {self.tool_choice!r}; it must be one of "
                    f"{', '.join(TOOL_CHOICES)} or a tool's name ({', '.join(tool_names)}).",
                    "Leave it unset (auto) unless the model needs pushing (docs/providers.md).",
                )
            )
        return found

    def _bound_problems(self) -> list[ConfigProblem]:
        """Returns the numeric settings out of their range (netra.E105)."""
        found: list[ConfigProblem] = []
        numbers = {
            "AGENT_MAX_STEPS": self.max_steps >= 1,
            "AGENT_LLM_TIMEOUT": self.request_timeout > 0,
            "AGENT_LLM_CONNECT_TIMEOUT": self.connect_timeout > 0,
            "AGENT_LLM_IDLE_TIMEOUT": self.idle_timeout > 0,
            "AGENT_LLM_MAX_RETRIES": self.max_retries >= 0,
            "AGENT_LLM_RETRY_MAX_WAIT": self.retry_max_wait >= 0,
            "AGENT_HISTORY_CHARS": self.history_chars >= 0,
            "AGENT_CONTEXT_TOKENS": self.context_tokens >= MIN_CONTEXT_TOKENS,
            "AGENT_MAX_OUTPUT_TOKENS": 0 <= self.max_output_tokens < self.context_tokens,
        }
        for name, ok in numbers.items():
            if not ok:
                found.append(
                    ConfigProblem(
                        "netra.E105",
                        f"{name} is out of range.",
                        "Steps must be at least 1, timeouts above 0, AGENT_CONTEXT_TOKENS at "
                        f"least {MIN_CONTEXT_TOKENS} and above AGENT_MAX_OUTPUT_TOKENS, the "
                        "rest at least 0.",
                    )
                )
        return found

    def redact(self, text: str) -> str:
        """Removes the API key (and anything shaped like one) from text shown or logged."""
        if self.api_key:
            text = text.replace(self.api_key, "[redacted]")
        return SECRET_LIKE.sub("[redacted]", text)
