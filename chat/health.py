"""Operations endpoints: /readyz (database and channel layer) and /metrics (Prometheus)."""

import asyncio
import logging
import os
import uuid
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from chat import metrics
from chat.connections import WORKER_ID, process_heartbeat
from chat.layers import events_alias, events_layer
from chat.models import ServerProcess

logger = logging.getLogger("netra.health")

READY_TIMEOUT = 2.0


def _database_round_trip() -> None:
    process_heartbeat()
    if not ServerProcess.objects.filter(pk=WORKER_ID).exists():
        raise DatabaseError("the heartbeat row written a moment ago cannot be read back")


async def _channel_layer_round_trip() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured")
    channel = await layer.new_channel("readyz.")
    nonce = uuid.uuid4().hex
    await layer.send(channel, {"type": "readyz.ping", "nonce": nonce})
    message = await layer.receive(channel)
    if message.get("nonce") != nonce:
        raise RuntimeError("the channel layer returned another message")
    if events_alias() != DEFAULT_CHANNEL_LAYER:  # thread events' own layer: it must publish
        await events_layer().group_send("readyz", {"type": "readyz.ping", "nonce": nonce})


async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: a database write and read and a channel-layer round trip; 503 names the
    failed check."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(
            database_sync_to_async(_database_round_trip)(), timeout=READY_TIMEOUT
        )
        checks["database"] = "ok"
    except (DatabaseError, TimeoutError) as exc:
        checks["database"] = f"error: {type(exc).__name__}: {exc}"
    try:
        await asyncio.wait_for(_channel_layer_round_trip(), timeout=READY_TIMEOUT)
        checks["channel_layer"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any layer failure means not ready; logged below
        metrics.CHANNEL_LAYER_ERRORS.labels(operation="readyz").inc()
        checks["channel_layer"] = f"error: {type(exc).__name__}: {exc}"
    failed = [name for name, outcome in checks.items() if outcome != "ok"]
    if failed:
        logger.warning("not ready: %s", checks)
    return JsonResponse(
        {"status": "fail" if failed else "ok", "checks": checks, "failed": failed},
        status=503 if failed else 200,
    )


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; only for the addresses in METRICS_ALLOWED_IPS."""
    if request.META.get("REMOTE_ADDR") not in settings.METRICS_ALLOWED_IPS:
        return JsonResponse(
            {"error": {"code": "forbidden", "message": "Metrics are not served to this address."}},
            status=403,
        )
    registry: Any = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
