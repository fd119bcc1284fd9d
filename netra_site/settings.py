"""Settings of netra-chat, read from the environment (django-environ).

Embedded defaults: a SQLite file, the in-memory channel layer, DEBUG off.
`DATABASE_URL` switches to PostgreSQL, `REDIS_URL` to the channels-redis layer.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# With DEBUG off there is no default: management commands that sign nothing (migrate,
# makemigrations) still run, but the ASGI application refuses to start without a key
# (netra_site/asgi.py), and Django raises wherever an empty key would be used.
SECRET_KEY = env.str(
    "SECRET_KEY", default="netra-insecure-development-key-only-for-debug" if DEBUG else ""
)

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "chat",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "chat.middleware.content_security_policy",
    # Last, as django-axes asks: it turns a locked-out login into our 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "netra_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "netra_site.asgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
# SQLite's WAL checkpoint in a thread of each server process this often (chat/checkpoint.py),
# not inside the commit that crosses 1,000 pages; 0: SQLite's own checkpoint as it comes.
SQLITE_CHECKPOINT_INTERVAL = env.float("SQLITE_CHECKPOINT_INTERVAL", default=1.0)
# With that thread on, a connection's own checkpoint is only a safety net (about 40 MB of WAL).
SQLITE_AUTOCHECKPOINT_PAGES = 10_000 if SQLITE_CHECKPOINT_INTERVAL > 0 else 1_000
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite's production configuration (docs/deployment.md, "The embedded SQLite"):
    # waiting for the write lock beats failing with "database is locked" under bursts:
    # IMMEDIATE transactions take the lock at BEGIN, so a transaction that reads and then
    # writes waits its turn (busy timeout) instead of failing on the upgrade; WAL lets
    # readers (replays, gap fills) go on while a writer commits; synchronous=NORMAL (per
    # connection) syncs the WAL at checkpoints, not at every commit: a process crash loses
    # nothing committed, a power loss can drop the last commits.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES};",
        }
    )
# One persistent connection per database thread (health-checked before reuse) instead of a
# new connection, and on PostgreSQL a new backend, for every call of the async code.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login throttling (django-axes; policy in README and docs/operations.md) ----------------
# The first backend refuses a login while its username or its client address is locked out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# LOGIN_FAILURE_LIMIT failed logins for one username, or from one client address, lock that
# username (from every address) or that address (for every username) out for
# LOGIN_LOCKOUT_MINUTES after the last failure; a failure during the lockout restarts it.
# The web login and the admin login share the count (one database table, every worker).
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Not reset by a successful login: django-axes would then delete every failure from that
# address, the guesses at other accounts too (log in to your own, guess on).
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "chat.views.login_locked_out"
# The client address is REMOTE_ADDR only: a client-sent X-Forwarded-For must not pick its
# own address. Behind a proxy, daphne's --proxy-headers puts the real client there.
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_DISABLE_ACCESS_LOG = True  # failures are kept; successful logins are not logged

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/threads/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# The ASGI application serves /static/ from the apps' static/ folders (no collectstatic
# step); behind a proxy, run collectstatic into STATIC_ROOT and let the proxy serve it.
STATIC_ROOT = env.str("STATIC_ROOT", default="") or None

# --- Channel layer -----------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CHANNEL_CAPACITY = env.int("CHANNEL_CAPACITY", default=1000)
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 defaults socket_timeout to 5 s, which tears down every socket
                # idle for 5 s (channels_redis #422): the blocking receive must not time out.
                # It also caps a pool at 100 connections and then raises instead of waiting:
                # a worker with a few hundred sockets joining, leaving and checking at once
                # needs more (tests/test_load.py).
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": None,
                        "max_connections": env.int("REDIS_MAX_CONNECTIONS", default=1000),
                    }
                ],
                "capacity": CHANNEL_CAPACITY,
                "group_expiry": env.int("CHANNEL_GROUP_EXPIRY", default=86400),
            },
        }
    }
    # Thread events go by Redis pub/sub (one PUBLISH per event, docs/benchmarks.md); what it
    # loses while it reconnects, the sockets fill from the log. The control messages that
    # close sockets (revoked token, logout, drain, deleted thread) stay on the core layer,
    # which keeps them in Redis across a receiver's reconnect (chat/layers.py).
    REDIS_EVENTS_LAYER = env.str("REDIS_EVENTS_LAYER", default="pubsub")
    if REDIS_EVENTS_LAYER == "pubsub":
        CHANNEL_LAYERS["events"] = {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]},
        }
    elif REDIS_EVENTS_LAYER != "core":
        raise ImproperlyConfigured(
            f"REDIS_EVENTS_LAYER must be 'pubsub' or 'core', not {REDIS_EVENTS_LAYER!r}"
        )
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.LocalChannelLayer",
            "CONFIG": {
                "capacity": CHANNEL_CAPACITY,
                "group_expiry": env.int("CHANNEL_GROUP_EXPIRY", default=86400),
            },
        }
    }

# --- WebSocket protocol limits -------------------------------------------------------------
WS_AUTH_TIMEOUT = env.float("WS_AUTH_TIMEOUT", default=5.0)
WS_MAX_FRAME_BYTES = env.int("WS_MAX_FRAME_BYTES", default=65536)
WS_MAX_INVALID_FRAMES = env.int("WS_MAX_INVALID_FRAMES", default=10)
WS_INVALID_FRAME_WINDOW = env.float("WS_INVALID_FRAME_WINDOW", default=60.0)
WS_RATE_MESSAGES_PER_MINUTE = env.int("WS_RATE_MESSAGES_PER_MINUTE", default=30)
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=20)
WS_STUCK_AFTER = env.float("WS_STUCK_AFTER", default=60.0)
# Each socket re-joins its channel-layer groups this often (a restarted Redis forgot them).
WS_GROUP_REFRESH_INTERVAL = env.float("WS_GROUP_REFRESH_INTERVAL", default=15.0)
# Every background loop (run heartbeat and reaper, housekeeping) starts with the first
# request of each server process; off, none starts anywhere (README, settings table).
BACKGROUND_TASKS = env.bool("BACKGROUND_TASKS", default=True)
PROCESS_HEARTBEAT_INTERVAL = env.float("PROCESS_HEARTBEAT_INTERVAL", default=5.0)
PROCESS_STALE_AFTER = env.float("PROCESS_STALE_AFTER", default=30.0)

# --- Streams over HTTP: SSE and AG-UI (docs/protocol.md) ------------------------------------
# A `: keep-alive` comment this often while a stream is idle.
SSE_KEEPALIVE_SECONDS = env.float("SSE_KEEPALIVE_SECONDS", default=15.0)
# A stream whose client reads too slowly holds at most this many events; when no room is
# made for SSE_STALL_TIMEOUT seconds it ends with a final comment (the client resumes).
SSE_MAX_BUFFERED_EVENTS = env.int("SSE_MAX_BUFFERED_EVENTS", default=1000)
SSE_STALL_TIMEOUT = env.float("SSE_STALL_TIMEOUT", default=30.0)
# After this many bytes a stream ends with a final comment and the client reconnects: what
# a server without back-pressure (daphne) buffers for an unread connection stays bounded.
SSE_MAX_STREAM_BYTES = env.int("SSE_MAX_STREAM_BYTES", default=16 * 1024 * 1024)

# --- Agent runs ----------------------------------------------------------------------------
RUN_STALE_AFTER = env.float("RUN_STALE_AFTER", default=30.0)
RUN_HEARTBEAT_INTERVAL = env.float("RUN_HEARTBEAT_INTERVAL", default=2.0)
RUN_REAPER_INTERVAL = env.float("RUN_REAPER_INTERVAL", default=5.0)
# On SIGTERM/SIGINT a worker lets its runs finish for this long, then releases the rest to
# other workers (docs/operations.md); the process manager's stop timeout must be longer.
SHUTDOWN_GRACE_SECONDS = env.float("SHUTDOWN_GRACE_SECONDS", default=20.0)
# A run is continued after its worker was gone at most this many times, then worker_lost.
RUN_MAX_RESUMES = env.int("RUN_MAX_RESUMES", default=3)
# An approval nobody answers within this many seconds expires (docs/protocol.md).
APPROVAL_TIMEOUT = env.float("APPROVAL_TIMEOUT", default=3600.0)
AGENT_STREAM_DELAY = env.float("AGENT_STREAM_DELAY", default=0.03)
AGENT_STREAM_CHUNK = env.int("AGENT_STREAM_CHUNK", default=24)
EVENT_API_MAX_LIMIT = 5000
# A JSON API body over this is 413 too_large (8000 characters of text, JSON-escaped at
# 12 bytes each, fit). Form pages keep Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=262144)

# --- Tools (docs/extending.md) ----------------------------------------------------------------
# Modules imported at start-up whose @tool functions register themselves (env: comma list).
NETRA_TOOLS = [path.strip() for path in env.list("NETRA_TOOLS", default=[]) if path.strip()]

# --- Data lifecycle (docs/operations.md) -----------------------------------------------------
# The events of finished runs older than this are pruned, whole runs only (never a thread's
# newest run, never an active or waiting one); 0 keeps every event. Messages always stay.
EVENT_RETENTION_DAYS = env.float("EVENT_RETENTION_DAYS", default=30.0)
# Closed connections older than this are pruned with their state log; 0 keeps them all.
CONNECTION_LOG_RETENTION_DAYS = env.float("CONNECTION_LOG_RETENTION_DAYS", default=14.0)
# The most rows one prune transaction deletes (whole runs: a run bigger than this is deleted
# alone), so that no transaction holds its row locks for long on a busy database.
PRUNE_BATCH_SIZE = env.int("PRUNE_BATCH_SIZE", default=2000)
# How often housekeeping prunes (once a day; one process of the cluster does it).
PRUNE_INTERVAL = env.float("PRUNE_INTERVAL", default=86400.0)
# Deleting a thread first cancels its active runs and waits this long for them to end.
THREAD_DELETE_CANCEL_WAIT = env.float("THREAD_DELETE_CANCEL_WAIT", default=5.0)

# --- Agents (docs/extending.md) ---------------------------------------------------------------
# Name -> dotted path of an agent class, added to the built-in `builtin` and `openai` (an
# entry of the same name replaces one); env: NETRA_AGENTS=name=path,name2=path2. An item
# without "=" keeps an empty path, which the system check reports.
NETRA_AGENTS: dict[str, str] = {
    name.strip(): path.strip()
    for name, _, path in (item.partition("=") for item in env.list("NETRA_AGENTS", default=[]))
    if name.strip()
}

# --- LLM provider (docs/providers.md) --------------------------------------------------------
# builtin: the offline agent; openai: any OpenAI-compatible chat-completions server.
AGENT_PROVIDER = env.str("AGENT_PROVIDER", default="builtin")
# The agent of a new thread (default: AGENT_PROVIDER's value, so existing set-ups keep working).
NETRA_DEFAULT_AGENT = env.str("NETRA_DEFAULT_AGENT", default=AGENT_PROVIDER)
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
AGENT_MODEL = env.str("AGENT_MODEL", default="")
AGENT_SYSTEM_PROMPT = env.str(
    "AGENT_SYSTEM_PROMPT",
    default=(
        "You are the assistant in netra-chat. Answer clearly and concisely. Use the tools "
        "you are given when they help; always use the calculator for arithmetic and the "
        "clock for the current date or time, and never guess their results."
    ),
)
AGENT_MAX_STEPS = env.int("AGENT_MAX_STEPS", default=8)
AGENT_LLM_TIMEOUT = env.float("AGENT_LLM_TIMEOUT", default=120.0)
AGENT_LLM_CONNECT_TIMEOUT = env.float("AGENT_LLM_CONNECT_TIMEOUT", default=10.0)
AGENT_LLM_IDLE_TIMEOUT = env.float("AGENT_LLM_IDLE_TIMEOUT", default=30.0)
AGENT_LLM_MAX_RETRIES = env.int("AGENT_LLM_MAX_RETRIES", default=2)
AGENT_LLM_RETRY_MAX_WAIT = env.float("AGENT_LLM_RETRY_MAX_WAIT", default=20.0)
AGENT_HISTORY_CHARS = env.int("AGENT_HISTORY_CHARS", default=24000)
AGENT_CONTEXT_TOKENS = env.int("AGENT_CONTEXT_TOKENS", default=8192)
AGENT_TOOL_CHOICE = env.str("AGENT_TOOL_CHOICE", default="auto")
AGENT_MAX_OUTPUT_TOKENS = env.int("AGENT_MAX_OUTPUT_TOKENS", default=0)
# --- end of LLM provider -------------------------------------------------------------------

# --- Operations ----------------------------------------------------------------------------
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_SEND_MESSAGE_TEXT = env.bool("SENTRY_SEND_MESSAGE_TEXT", default=False)
HEALTHCHECK_TOKEN = env.str("HEALTHCHECK_TOKEN", default="")
METRICS_ALLOWED_IPS: list[str] = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
LOG_FORMAT = env.str("LOG_FORMAT", default="text")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "netra_site.logs.JsonFormatter"},
    },
    "filters": {"client_errors": {"()": "netra_site.logs.ClientErrorFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["client_errors"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}

# --- Security ------------------------------------------------------------------------------
HTTPS = env.bool("HTTPS", default=False)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if HTTPS:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

if SENTRY_DSN:
    from netra_site.sentry import init_sentry

    init_sentry(dsn=SENTRY_DSN, send_message_text=SENTRY_SEND_MESSAGE_TEXT)
