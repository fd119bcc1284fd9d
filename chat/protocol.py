"""WebSocket protocol v1: client frames (validated with pydantic) and server frames."""

import collections
import json
import time
import uuid
from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from chat.errors import bad_request

PROTOCOL_VERSION = 1
MAX_SEQ = 2**62  # seqs are 64-bit in the database; larger numbers are bad requests


class _Frame(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)


class MessageBody(_Frame):
    """A user message as the HTTP API takes it."""

    text: str = Field(min_length=1, max_length=8000)
    client_msg_id: str = Field(min_length=1, max_length=64)


class UserMessageFrame(MessageBody):
    type: Literal["user_message"]


class CancelFrame(_Frame):
    type: Literal["cancel"]
    run_id: uuid.UUID


class ResumeFrame(_Frame):
    type: Literal["resume"]
    after_seq: int = Field(ge=0, le=MAX_SEQ)


class PingFrame(_Frame):
    type: Literal["ping"]


class ApprovalBody(_Frame):
    """An answer to an approval as the HTTP API takes it."""

    decision: Literal["approve", "deny"]
    comment: str = Field(default="", max_length=2000)


class ApprovalFrame(ApprovalBody):
    type: Literal["approval"]
    approval_id: uuid.UUID


ClientFrame = Annotated[
    UserMessageFrame | CancelFrame | ResumeFrame | ApprovalFrame | PingFrame,
    Field(discriminator="type"),
]
_client_frame = TypeAdapter(ClientFrame)
_TAGS = {"user_message", "cancel", "resume", "approval", "ping"}


def describe_error(exc: ValidationError) -> str:
    """Returns one sentence naming what is wrong in a frame or body."""
    error = exc.errors(include_url=False, include_input=False)[0]
    kind = error["type"]
    loc = error["loc"][1:] if error["loc"] and error["loc"][0] in _TAGS else error["loc"]
    where = ".".join(str(part) for part in loc if part != "")
    if kind == "json_invalid":
        return "The frame is not valid JSON."
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        return (
            "Unknown or missing frame type; expected user_message, cancel, resume, approval "
            "or ping."
        )
    if kind in {"model_attributes_type", "model_type", "dict_type"}:
        return "A frame must be a JSON object."
    return (
        f"Invalid field '{where}': {error['msg']}." if where else f"Invalid frame: {error['msg']}."
    )


def _ref_of(text: str) -> str | None:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json can follow
        return None
    if isinstance(raw, dict):
        for key in ("client_msg_id", "run_id", "approval_id"):
            value = raw.get(key)
            if isinstance(value, str) and len(value) <= 64:
                return value
    return None


def parse_client_frame(text: str, *, max_bytes: int) -> ClientFrame:
    """Validates one text frame; raises `bad_request` naming what is wrong."""
    if len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes:
        raise bad_request(f"The frame is larger than {max_bytes} bytes.")
    try:
        frame: ClientFrame = _client_frame.validate_json(text)
    except ValidationError as exc:
        raise bad_request(describe_error(exc), ref=_ref_of(text)) from exc
    return frame


def encode(frame: dict[str, Any]) -> str:
    """Encodes a server frame as compact JSON."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def ref_of(frame: ClientFrame) -> str | None:
    """The `ref` of an answer to `frame`: the client_msg_id or run_id it named."""
    if isinstance(frame, UserMessageFrame):
        return frame.client_msg_id
    if isinstance(frame, CancelFrame):
        return str(frame.run_id)
    if isinstance(frame, ApprovalFrame):
        return str(frame.approval_id)
    return None


class InvalidFrames:
    """A socket's invalid frames within the last WS_INVALID_FRAME_WINDOW seconds."""

    def __init__(self) -> None:
        # Made at the first invalid frame: most sockets never send one, and an empty deque
        # is about 600 bytes of every idle socket.
        self._at: collections.deque[float] | None = None

    def count(self) -> int:
        """Counts one more invalid frame; returns how many fell within the window."""
        now = time.monotonic()
        if self._at is None:
            self._at = collections.deque()
        self._at.append(now)
        while self._at and now - self._at[0] > settings.WS_INVALID_FRAME_WINDOW:
            self._at.popleft()
        return len(self._at)
