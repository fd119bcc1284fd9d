"""Prometheus metrics, with the exact names listed in docs/operations.md.

With PROMETHEUS_MULTIPROC_DIR set, prometheus-client keeps the values in files shared by
the worker processes of one host; gauges then aggregate with the modes chosen below.
"""

from prometheus_client import Counter, Gauge, Histogram

WS_CONNECTIONS_CURRENT = Gauge(
    "netra_ws_connections_current",
    "WebSocket connections by state.",
    ["state"],
    multiprocess_mode="livesum",
)
WS_CONNECTIONS_TOTAL = Counter(
    "netra_ws_connections",
    "WebSocket handshakes by outcome.",
    ["outcome"],
)
WS_AUTH_FAILURES = Counter(
    "netra_ws_auth_failures",
    "WebSocket authentication failures by error code.",
    ["code"],
)
WS_STATE_TRANSITIONS = Counter(
    "netra_ws_state_transitions",
    "Connection state transitions.",
    ["from_state", "to_state"],
)
EVENTS_EMITTED = Counter("netra_events_emitted", "Run events written to the log.", ["type"])
EVENTS_DELIVERED = Counter(
    "netra_events_delivered",
    "Run events sent on a socket.",
    ["type"],
)
EVENT_DELIVERY_SECONDS = Histogram(
    "netra_event_delivery_seconds",
    "Time from emit to send on the socket.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENT_GAPS_FILLED = Counter(
    "netra_event_gaps_filled",
    "Events a socket took from the log because the layer lost them.",
)
RUNS_TOTAL = Counter("netra_runs", "Finished agent runs by status.", ["status"])
RUNS_RESUMED = Counter(
    "netra_runs_resumed",
    "Runs this worker took over and continued, by why their worker was gone.",
    ["reason"],
)
RUNS_FENCED = Counter(
    "netra_runs_fenced",
    "Runs this worker stopped because another worker had taken them over.",
)
RUNS_ACTIVE = Gauge("netra_runs_active", "Agent runs executing now.", multiprocess_mode="livesum")
APPROVALS = Counter(
    "netra_approvals",
    "Approvals requested, and how they were resolved (approved, denied, expired).",
    ["decision"],
)
APPROVALS_PENDING = Gauge(
    "netra_approvals_pending",
    "Approvals waiting for an answer (read from the database by each worker's sweep).",
    multiprocess_mode="max",
)
APPROVAL_OLDEST_PENDING = Gauge(
    "netra_approval_oldest_pending_seconds",
    "Age of the oldest approval waiting for an answer (0 when none is).",
    multiprocess_mode="max",
)
TOOL_CALLS = Counter("netra_tool_calls", "Tool calls by tool and status.", ["tool", "status"])
UNPAIRED_TOOL_CALLS = Gauge(
    "netra_unpaired_tool_calls",
    "Tool calls executing for longer than their timeout.",
    multiprocess_mode="livesum",
)
CHANNEL_LAYER_ERRORS = Counter(
    "netra_channel_layer_errors",
    "Channel layer operations that failed.",
    ["operation"],
)
RATE_LIMITED = Counter(
    "netra_rate_limited", "Sockets and messages refused by a per-user limit.", ["kind"]
)
LLM_REQUESTS = Counter("netra_llm_requests", "Requests to the LLM provider.", ["outcome"])
PRUNED = Counter(
    "netra_pruned",
    "Rows pruned: events, runs whose events were pruned, closed connections.",
    ["kind"],
)

# Label values known in advance start at 0, so that rate() and increase() see the first
# failure of a process rather than a series appearing out of nowhere.
for _outcome in ("accepted", "rejected"):
    WS_CONNECTIONS_TOTAL.labels(outcome=_outcome)
for _code in ("unauthenticated", "forbidden", "auth_timeout"):
    WS_AUTH_FAILURES.labels(code=_code)
SQLITE_CHECKPOINT_ERRORS = Counter(
    "netra_sqlite_checkpoint_errors",
    "Failed WAL checkpoints of the SQLite checkpoint thread (chat/checkpoint.py).",
)

for _operation in ("group_send", "group_add", "group_discard", "send", "receive", "readyz"):
    CHANNEL_LAYER_ERRORS.labels(operation=_operation)
for _kind in ("sockets", "messages"):
    RATE_LIMITED.labels(kind=_kind)
for _status in ("completed", "failed", "cancelled"):
    RUNS_TOTAL.labels(status=_status)
for _kind in ("events", "runs", "connections"):
    PRUNED.labels(kind=_kind)
for _reason in ("shutdown", "worker_lost"):
    RUNS_RESUMED.labels(reason=_reason)
for _decision in ("requested", "approved", "denied", "expired"):
    APPROVALS.labels(decision=_decision)
