"""Settings of the benchmark servers: netra's own, with one channels-redis change.

redis-py 8 caps a connection pool at 100 connections and raises MaxConnectionsError past
it (earlier versions had no cap); with 100 threads emitting at once, group_send on the Redis
layer fails with "Too many connections". netra_site/settings.py sets a pool of 1,000
(REDIS_MAX_CONNECTIONS); both Redis contenders get that pool here whatever the environment
says (docs/benchmarks.md, "Found on the way").

BENCH_REDIS_LAYER=pubsub swaps channels-redis' core layer for its RedisPubSubChannelLayer
(one PUBLISH per group message, no capacity: what pub/sub drops, gap fill recovers), so
the two can be compared side by side (the `pubsub` layer of bench/run.py).
"""

import os

from netra_site.settings import *  # noqa: F403
from netra_site.settings import CHANNEL_LAYERS, REDIS_URL

if REDIS_URL:
    for _host in CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]:
        _host["max_connections"] = 1000
    if os.environ.get("BENCH_REDIS_LAYER") == "pubsub":
        CHANNEL_LAYERS["default"] = {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]},
        }
