"""Settings of the benchmark servers: netra's own, with one channels-redis change.

redis-py 8 caps a connection pool at 100 connections and raises MaxConnectionsError past
it (earlier versions had no cap); with 100 threads emitting at once, group_send on the Redis
layer fails with "Too many connections" for B and N alike. Both Redis contenders therefore
get a larger pool; docs/benchmarks.md records this, and netra_site/settings.py should get the
same setting.
"""

from netra_site.settings import *  # noqa: F403
from netra_site.settings import CHANNEL_LAYERS, REDIS_URL

if REDIS_URL:
    for _host in CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]:
        _host["max_connections"] = 1000
