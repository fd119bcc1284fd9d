"""Runs the benchmark matrix and writes docs/benchmarks.md and docs/benchmarks.png.

    make bench                  # the default subset, 11-16 minutes on 2 CPUs
    QUICK=1 make bench          # a short run: 3 contenders, about a minute each
    BENCH_FULL=1 make bench     # every server x layer x database combination

Every contender runs in its own server process on loopback, one after another, driven by
the same client (bench/client.py) and the same emit driver (bench/control.py).
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from websockets.exceptions import WebSocketException

from bench import client, report, workloads
from bench.servers import ROOT, Databases, Redis, ServerProcess, postgres_available, server_env

THREADS = 100


@dataclass(frozen=True)
class Config:
    """One contender on one server, layer and database."""

    contender: str  # L, B, N
    server: str = "raw"  # raw, daphne, uvicorn
    layer: str = "-"  # memory, redis
    db: str = "-"  # sqlite, postgres

    @property
    def name(self) -> str:
        """A short label, e.g. N/daphne/memory/sqlite."""
        parts = [self.contender, self.server]
        if self.layer != "-":
            parts.append(self.layer)
        if self.db != "-":
            parts.append(self.db)
        return "/".join(parts)


@dataclass(frozen=True)
class Plan:
    """The workload sizes of one run."""

    label: str
    fanout_ks: tuple[int, ...]
    fanout_seconds: float
    latency_k: int
    latency_rate: float
    latency_seconds: float
    idle_steps: tuple[int, ...]
    pings: int
    turn_sockets: int
    turn_rounds: int
    replay_events: int
    stream_cs: tuple[int, ...]


PLANS = {
    "default": Plan(
        "default",
        (1, 10, 100),
        3.0,
        10,
        20.0,
        4.0,
        (1000, 2500, 5000),
        100,
        20,
        10,
        10000,
        (50, 200),
    ),
    "quick": Plan("quick", (1, 10, 100), 1.0, 10, 20.0, 2.0, (200,), 50, 20, 5, 10000, (50, 200)),
    "tiny": Plan("tiny", (1, 2), 0.3, 2, 20.0, 0.5, (10,), 5, 2, 2, 200, (3,)),
}
# Threads of N's bench user: fan-out, replay, turns (built-in agent), streaming (bench agent).
TURN_THREADS = 20
# channels-redis' RedisPubSubChannelLayer instead of its core layer (BENCH_ONLY only).
PUBSUB = [
    Config("B", "daphne", "pubsub"),
    Config("N", "daphne", "pubsub", "postgres"),
    Config("N", "daphne", "pubsub", "sqlite"),
]
STREAM_THREADS = 200


def configs(plan: str, full: bool, postgres: bool) -> list[Config]:
    """The matrix of a run: the default subset, QUICK's three, or everything."""
    if plan in ("quick", "tiny"):
        return [
            Config("L"),
            Config("B", "daphne", "memory"),
            Config("N", "daphne", "memory", "sqlite"),
        ]
    dbs = ["sqlite", "postgres"] if postgres else ["sqlite"]
    if full:
        servers, layers = ["daphne", "uvicorn"], ["memory", "redis"]
        result = [Config("L")]
        result += [Config("B", s, la) for s in servers for la in layers]
        result += [Config("N", s, la, d) for s in servers for la in layers for d in dbs]
        return result
    result = [
        Config("L"),
        Config("B", "daphne", "memory"),
        Config("B", "uvicorn", "memory"),
        Config("B", "daphne", "redis"),
        Config("N", "daphne", "memory", "sqlite"),
        Config("N", "uvicorn", "memory", "sqlite"),
    ]
    if postgres:
        result += [
            Config("N", "daphne", "memory", "postgres"),
            Config("N", "daphne", "redis", "postgres"),
        ]
    else:
        result.append(Config("N", "daphne", "redis", "sqlite"))
    return result


async def measure(
    config: Config, target: client.Target, plan: Plan, extra: dict[str, Any]
) -> dict[str, Any]:
    """Runs the workloads on one started server."""
    result: dict[str, Any] = {"config": config.__dict__, "name": config.name}
    result["fanout"] = [
        await client.fanout(target, k=k, duration=plan.fanout_seconds) for k in plan.fanout_ks
    ]
    result["latency"] = await client.latency(
        target, k=plan.latency_k, rate=plan.latency_rate, duration=plan.latency_seconds
    )
    if config.contender in ("B", "N"):
        result["turns"] = await workloads.turns(
            target, threads=extra["turn_threads"][: plan.turn_sockets], rounds=plan.turn_rounds
        )
        result["streaming"] = [
            await workloads.streaming(target, threads=extra["stream_threads"][:c])
            for c in plan.stream_cs
        ]
    if config.contender == "N":
        result["replay"] = await client.replay(
            target, thread=extra["replay_thread"], count=plan.replay_events
        )
    # Last: a server pushed past its capacity here must not cost the other figures.
    try:
        result["idle"] = await client.idle(target, steps=list(plan.idle_steps), pings=plan.pings)
    except (WebSocketException, OSError, TimeoutError, RuntimeError) as exc:
        print(f"bench: {config.name}: idle sockets stopped by {exc!r}", flush=True)
        result["idle"] = {
            "refused_at": plan.idle_steps[0],
            "error": repr(exc),
            "points": [],
            "capacity": 0,
            "all_passed": False,
            "bytes_per_socket": float("nan"),
        }
    return result


def run_config(
    config: Config, plan: Plan, workdir: Path, dbs: Databases, redis: Redis | None
) -> dict[str, Any]:
    """Starts one contender's server, measures it and stops it."""
    env: dict[str, str] = {"BENCH_CONTENDER": config.contender}
    if config.layer in ("redis", "pubsub"):
        assert redis is not None
        redis.flush()
        env["REDIS_URL"] = redis.url
        if config.layer == "pubsub":
            env["BENCH_REDIS_LAYER"] = "pubsub"
    threads = [f"t{i}" for i in range(THREADS)]
    token = None
    extra: dict[str, Any] = {
        "turn_threads": [f"turn{i}" for i in range(TURN_THREADS)],
        "stream_threads": [f"stream{i}" for i in range(STREAM_THREADS)],
    }
    if config.contender == "N":
        env["DATABASE_URL"] = dbs.fresh(config.db)
        env["NETRA_AGENTS"] = "bench_stream=bench.stream_agent.ScheduledAgent"
        made = _setup(server_env(**env))
        token, threads = made["token"], made["threads"][:THREADS]
        extra = {
            "replay_thread": made["threads"][THREADS],
            "turn_threads": made["threads"][THREADS + 1 :],
            "stream_threads": made["stream_threads"],
        }
    else:
        env["DATABASE_URL"] = f"sqlite:///{dbs.sqlite_template}"
    server = ServerProcess(config.contender, config.server, server_env(**env), workdir).start()
    try:
        target = client.Target(server=server, threads=threads, token=token)
        return asyncio.run(measure(config, target, plan, extra))
    finally:
        server.stop()


def _setup(env: dict[str, str]) -> dict[str, Any]:
    from bench.servers import setup_netra

    return setup_netra(env, threads=THREADS + 1 + TURN_THREADS, stream_threads=STREAM_THREADS)


def environment() -> dict[str, str]:
    """The machine and versions the figures were measured on."""
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {mem_kb // 1024} MiB RAM",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for package in (
        "django",
        "channels",
        "channels-redis",
        "daphne",
        "uvicorn",
        "websockets",
        "redis",
        "psycopg",
        "orjson",
        "uvloop",
    ):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "-"
    info["redis-server"] = _version(["redis-server", "--version"])
    info["postgresql"] = _version(["psql", "--version"])
    return info


def _version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "-"
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    return out.split(" v=")[1].split()[0] if " v=" in out else out.split()[-1] if out else "-"


def main(argv: list[str] | None = None) -> None:
    """Parses the options, runs the matrix and writes the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--plan", choices=sorted(PLANS), default="quick" if os.environ.get("QUICK") else "default"
    )
    parser.add_argument("--full", action="store_true", default=bool(os.environ.get("BENCH_FULL")))
    parser.add_argument(
        "--only", default=os.environ.get("BENCH_ONLY", ""), help="comma-separated config names"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="where benchmarks.md and .png go"
    )
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    plan = PLANS[args.plan]
    postgres = postgres_available()
    matrix = configs(plan.label, args.full, postgres)
    if args.only:  # any contender of the full matrix, whatever the plan
        wanted = set(args.only.split(","))
        matrix = [c for c in configs("default", True, postgres) + PUBSUB if c.name in wanted]
    workdir = Path(tempfile.mkdtemp(prefix="netra-bench-"))
    # SIGTERM unwinds like Ctrl-C, so the servers, Redis and databases are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"bench: plan {plan.label}, {len(matrix)} contenders, work dir {workdir}", flush=True)
    needs_pg = any(c.db == "postgres" for c in matrix)
    dbs = Databases(workdir, postgres=needs_pg)
    redis = Redis(workdir) if any(c.layer in ("redis", "pubsub") for c in matrix) else None
    results = []
    try:
        for config in matrix:
            print(f"bench: {config.name} ...", flush=True)
            try:
                results.append(run_config(config, plan, workdir, dbs, redis))
            except (
                RuntimeError,
                OSError,
                TimeoutError,
                WebSocketException,
                subprocess.CalledProcessError,
            ) as exc:
                print(f"bench: {config.name} failed: {exc!r}", flush=True)
                results.append({"config": config.__dict__, "name": config.name, "error": repr(exc)})
                continue
            print(report.one_line(results[-1]), flush=True)
    finally:
        if redis is not None:
            redis.stop()
        dbs.drop()
    run = {
        "plan": plan.__dict__,
        "full": args.full,
        "postgres": postgres,
        "env": environment(),
        "results": results,
    }
    (workdir / "results.json").write_text(json.dumps(run, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    report.write(
        run, args.out / "benchmarks.md", None if args.no_plot else args.out / "benchmarks.png"
    )
    print(f"bench: wrote {args.out / 'benchmarks.md'} (raw figures: {workdir / 'results.json'})")
    if any("error" in r for r in results):
        sys.exit(1)
