"""Settings for the test suite: the real settings, with a test secret and no stream delay."""

import os

os.environ.setdefault("SECRET_KEY", "netra-test-secret-key-not-for-production")
os.environ.setdefault("AGENT_STREAM_DELAY", "0")
# In-process tests start the loops they need themselves (each test has its own event loop).
os.environ.setdefault("BACKGROUND_TASKS", "0")

from netra_site.settings import *  # noqa: F403
