// The names of WebSocket protocol v1 as the client uses them (docs/protocol.md): run event
// types (the server's chat.runevents.EventType), frame types, error codes and close codes.
// Every other module names them through here, never as string literals.

export const PROTOCOL_VERSION = 1;

/** Run event types: every frame that carries a seq has one of these (or a newer one). */
export const EventType = Object.freeze({
  AGENT_STARTED: "agent_started",
  AGENT_THINKING: "agent_thinking",
  TOOL_EXECUTING: "tool_executing",
  TOOL_COMPLETED: "tool_completed",
  APPROVAL_REQUESTED: "approval_requested",
  APPROVAL_RESOLVED: "approval_resolved",
  PARTIAL_RESULT: "partial_result",
  AGENT_ERROR: "agent_error",
  AGENT_COMPLETED: "agent_completed",
});

/** Server frames that are not run events; OUT_OF_SYNC and HISTORY_PRUNED are the client's
 * own, never sent. */
export const FrameType = Object.freeze({
  CONNECTION_ESTABLISHED: "connection_established",
  ACK: "ack",
  RESUME_COMPLETE: "resume_complete",
  ERROR: "error",
  PONG: "pong",
  OUT_OF_SYNC: "out_of_sync",
  HISTORY_PRUNED: "history_pruned",
});

/** Frames the client sends. */
export const ClientFrameType = Object.freeze({
  USER_MESSAGE: "user_message",
  CANCEL: "cancel",
  RESUME: "resume",
  APPROVAL: "approval",
  PING: "ping",
});

/** The `status` of agent_completed. */
export const RunStatus = Object.freeze({
  COMPLETED: "completed",
  FAILED: "failed",
  CANCELLED: "cancelled",
});

/** The `status` of a successful tool_completed, and of one the user denied. */
export const TOOL_OK = "ok";
export const TOOL_DENIED = "denied";

/** An answer to approval_requested (the `approval` frame's `decision`), and what
 * approval_resolved says came of it. */
export const ApprovalAnswer = Object.freeze({ APPROVE: "approve", DENY: "deny" });
export const ApprovalDecision = Object.freeze({
  APPROVED: "approved",
  DENIED: "denied",
  EXPIRED: "expired",
});

/** `error.code` values the page treats specially. */
export const ErrorCode = Object.freeze({
  RUN_NOT_ACTIVE: "run_not_active",
  APPROVAL_RESOLVED: "approval_resolved",
  APPROVAL_NOT_FOUND: "approval_not_found",
});

/** Close codes: 4000-4499 the client must change something; 4500-4999 transient. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  ABNORMAL: 1006,
  PROTOCOL_ERROR: 4400,
  UNAUTHENTICATED: 4401,
  FORBIDDEN: 4403,
  THREAD_NOT_FOUND: 4404,
  AUTH_TIMEOUT: 4408,
  RATE_LIMITED: 4429,
  INTERNAL_ERROR: 4500,
  UNAVAILABLE: 4503,
});

/** True for close codes after which the client must change something (4000-4499). */
export function isFinalClose(code) {
  return code >= 4000 && code < 4500;
}
