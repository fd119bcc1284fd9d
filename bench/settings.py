"""Settings of the benchmark servers: netra's own, with one channels-redis change.

redis-py 8 caps a connection pool at 100 connections and raises MaxConnectionsError past
it (earlier versions had no cap); with 100 threads emitting at once, group_send on the Redis
layer fails with "Too many connections". netra_site/settings.py sets a pool of 1,000
(REDIS_MAX_CONNECTIONS); both Redis contenders get that pool here whatever the environment
says (docs/benchmarks.md, "Found on the way").

Without Redis, B runs on channels' own InMemoryChannelLayer and N on netra's embedded
default, chat.layers.LocalChannelLayer (the same layer with a cheaper group_send and
expiry sweep); BENCH_B_LAYER=local gives B netra's layer, to show what the layer alone is
worth. On Redis, N's thread events go by channels-redis' RedisPubSubChannelLayer and the rest by
its core layer, as netra's settings have it (REDIS_EVENTS_LAYER, chat/layers.py); B, the
tutorial pattern, has only the core layer. BENCH_REDIS_LAYER=pubsub swaps the core layer
for the pub/sub one as well (the `pubsub` layer of bench/run.py): B then has pub/sub alone,
and N both kinds of message on pub/sub.
"""

import os

from netra_site.settings import *  # noqa: F403
from netra_site.settings import CHANNEL_LAYERS, REDIS_URL

# B is the tutorial pattern: channels' own in-memory layer. N has netra's default,
# chat.layers.LocalChannelLayer (BENCH_B_LAYER=local gives B that one too).
_b = os.environ.get("BENCH_CONTENDER") == "B" and os.environ.get("BENCH_B_LAYER") != "local"
if not REDIS_URL and _b:
    CHANNEL_LAYERS["default"]["BACKEND"] = "channels.layers.InMemoryChannelLayer"
if REDIS_URL:
    for _host in CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]:
        _host["max_connections"] = 1000
    if os.environ.get("BENCH_REDIS_LAYER") == "pubsub":
        CHANNEL_LAYERS["default"] = {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]},
        }
