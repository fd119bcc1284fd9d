"""Settings of the benchmark servers: netra's own, with one channels-redis change.

redis-py 8 caps a connection pool at 100 connections and raises MaxConnectionsError past
it (earlier versions had no cap); with 100 threads emitting at once, group_send on the Redis
layer fails with "Too many connections". netra_site/settings.py sets a pool of 1,000
(REDIS_MAX_CONNECTIONS); both Redis contenders get that pool here whatever the environment
says (docs/benchmarks.md, "Found on the way").

On Redis, N's thread events go by channels-redis' RedisPubSubChannelLayer and the rest by
its core layer, as netra's settings have it (REDIS_EVENTS_LAYER, chat/layers.py); B, the
tutorial pattern, has only the core layer. BENCH_REDIS_LAYER=pubsub swaps the core layer
for the pub/sub one as well (the `pubsub` layer of bench/run.py): B then has pub/sub alone,
and N both kinds of message on pub/sub.
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
