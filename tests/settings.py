"""Settings for the test suite: the real settings, with a test secret and no stream delay.

The in-process suite always runs on SQLite, the in-memory channel layer and the built-in
agent, whatever the caller's shell exports (`make run-cluster` leaves REDIS_URL, the
README's model example AGENT_PROVIDER and OPENAI_*): those variables are removed here, so
that neither these settings nor the servers the tests start see them. A test that wants a
service or a model says so: it overrides a setting, or passes the variable to the server
it starts (tests/servers.py, tests/cluster.py).
"""

import os

from tests.servers import is_service_env

for _name in [name for name in os.environ if is_service_env(name)]:
    del os.environ[_name]

os.environ.setdefault("SECRET_KEY", "netra-test-secret-key-not-for-production")
os.environ.setdefault("AGENT_STREAM_DELAY", "0")
# In-process tests start the loops they need themselves (each test has its own event loop).
os.environ.setdefault("BACKGROUND_TASKS", "0")

from netra_site.settings import *  # noqa: E402, F403
