"""Settings for the test suite: the real settings, with a test secret and no stream delay."""

import os

os.environ.setdefault("SECRET_KEY", "netra-test-secret-key-not-for-production")
os.environ.setdefault("AGENT_STREAM_DELAY", "0")

from netra_site.settings import *  # noqa: F403
