"""Turns a run's figures into docs/benchmarks.md (between markers) and a PNG plot."""

import math
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:end -->"
TARGETS = {
    "throughput": 0.8,  # N >= 0.8 x B
    "p99": 1.5,  # N <= 1.5 x B
    "memory": 1.2,  # N <= 1.2 x B
    "cpu": 1.5,  # N <= 1.5 x B
    "replay": 20000.0,  # events/s
}


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def one_line(result: dict[str, Any]) -> str:
    """A progress line for the console."""
    fan = ", ".join(f"K={f['k']}: {f['events_per_s']:,.0f}/s" for f in result["fanout"])
    lat = result["latency"]
    line = (
        f"  {result['name']}: {fan}; p50 {lat['p50_ms']:.1f} ms p99 {lat['p99_ms']:.1f} ms; "
        f"idle {result['idle']['bytes_per_socket'] / 1024:.1f} KiB/socket"
    )
    if "replay" in result:
        line += f"; replay {result['replay']['events_per_s']:,.0f}/s"
    if "turns" in result:
        t = result["turns"]
        line += f"; turns {t['turns_per_s']:.1f}/s p99 {t['p99_ms']:.0f} ms"
    for st in result.get("streaming", []):
        line += (
            f"; C={st['c']}: late p99 {st['lateness_p99_ms']:.0f} ms, first p50 "
            f"{st['first_p50_ms']:.0f} ms, lost {st['lost']}"
        )
    return line


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for fan in result["fanout"]:
        out[f"tput{fan['k']}"] = fan["events_per_s"]
    delivered = sum(f["delivered"] for f in result["fanout"])
    cpu = sum(f["cpu_s"] for f in result["fanout"])
    out["cpu"] = cpu / delivered * 1000 if delivered else float("nan")
    out["p50"] = result["latency"]["p50_ms"]
    out["p99"] = result["latency"]["p99_ms"]
    out["p999"] = result["latency"]["p999_ms"]
    out["mem"] = result["idle"]["bytes_per_socket"]
    out["cap"] = result["idle"]["capacity"]
    return out


def _baseline(results: list[dict[str, Any]], n: dict[str, Any]) -> dict[str, Any] | None:
    cfg = n["config"]
    for r in results:
        c = r["config"]
        if c["contender"] == "B" and c["server"] == cfg["server"] and c["layer"] == cfg["layer"]:
            return r if "error" not in r else None
    return None


def tables(run: dict[str, Any]) -> str:
    """The markdown of one run."""
    env = run["env"]
    results = [r for r in run["results"] if "error" not in r]
    ks = [f"tput{k}" for k in run["plan"]["fanout_ks"]]
    lines = [
        f"Measured {env['date']} on {env['machine']}, {env['os']}; plan `{run['plan']['label']}`"
        + (" (full matrix)" if run["full"] else "")
        + ".",
        "",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k not in ("date", "machine", "os")),
        "",
        "L = raw `websockets` broadcast server; B = bare Channels consumer (tutorial pattern: "
        "group_send then send_json, no persistence); N = netra-chat (event log, seq, gap check) "
        "driven through its real Broadcaster.",
        "",
        "### Figures",
        "",
        "| contender | "
        + " | ".join(f"fan-out K={k[4:]} ev/s" for k in ks)
        + " | p50 ms | p99 ms | p99.9 ms | CPU s / 1000 ev | KiB / idle socket | idle capacity |",
        "|---" * (len(ks) + 7) + "|",
    ]
    for r in results:
        m = _metrics(r)
        cap = f"{m['cap']:,.0f}" + ("+" if r["idle"]["all_passed"] else "")
        if r["idle"].get("refused_at"):
            cap += f" (handshakes failed at {r['idle']['refused_at']:,})"
        lines.append(
            f"| {r['name']} | "
            + " | ".join(_fmt(m[k]) for k in ks)
            + f" | {_fmt(m['p50'], 2)} | {_fmt(m['p99'], 2)} | {_fmt(m['p999'], 2)} | "
            f"{_fmt(m['cpu'], 3)} | {_fmt(m['mem'] / 1024, 1)} | {cap} |"
        )
    lines += [
        "",
        "Fan-out: K threads x 2 sockets, each thread emitting as fast as its emits return for "
        f"{run['plan']['fanout_seconds']:g} s; delivered events per second at the client. "
        f"Latency: {run['plan']['latency_k']} threads x 2 sockets at "
        f"{run['plan']['latency_rate']:g} events/s per thread, emit (server clock) to receipt. "
        "CPU: the server process's user+system seconds over the fan-out runs per 1,000 "
        "delivered events. Idle: RSS growth per socket at the largest step; capacity is the "
        f"largest of {', '.join(str(s) for s in run['plan']['idle_steps'])} sockets whose "
        "ping p99 stayed under 100 ms ('+': every step passed, a lower bound).",
        "",
        "### N as a ratio to B (same server and layer) and to L, same run",
        "",
        "| N | "
        + " | ".join(f"K={k[4:]} /B | /L" for k in ks)
        + " | p99 /B | /L | CPU /B | /L | memory /B | /L |",
        "|---" * (1 + 2 * len(ks) + 6) + "|",
    ]
    raw = next((r for r in results if r["config"]["contender"] == "L"), None)
    verdicts = []
    for r in results:
        if r["config"]["contender"] != "N":
            continue
        m = _metrics(r)
        b = _baseline(results, r)
        bm = _metrics(b) if b else {}
        lm = _metrics(raw) if raw else {}
        cells = []
        for k in ks:
            cells += [_x(_ratio(m[k], bm.get(k))), _x(_ratio(m[k], lm.get(k)))]
        for key in ("p99", "cpu", "mem"):
            cells += [_x(_ratio(m[key], bm.get(key))), _x(_ratio(m[key], lm.get(key)))]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
        if b:
            worst_tput = min((_ratio(m[k], bm[k]) or 0.0) for k in ks)
            verdicts.append(
                (
                    r["name"],
                    worst_tput,
                    _ratio(m["p99"], bm["p99"]),
                    _ratio(m["mem"], bm["mem"]),
                    _ratio(m["cpu"], bm["cpu"]),
                    r["replay"]["events_per_s"],
                )
            )
    lines += _turns_and_streams(run, results)
    lines += [
        "",
        "### Targets",
        "",
        "| N | throughput >= 0.8x B (worst K) | p99 <= 1.5x B | memory <= 1.2x B "
        "| CPU <= 1.5x B | replay >= 20,000/s |",
        "|---|---|---|---|---|---|",
    ]
    for name, tput, p99, mem, cpu, replay in verdicts:
        lines.append(
            f"| {name} | {_check(tput, TARGETS['throughput'], True)} | "
            f"{_check(p99, TARGETS['p99'], False)} | {_check(mem, TARGETS['memory'], False)} | "
            f"{_check(cpu, TARGETS['cpu'], False)} | "
            f"{_check(replay, TARGETS['replay'], True, ratio=False)} |"
        )
    failed = [r["name"] for r in run["results"] if "error" in r]
    if failed:
        lines += ["", "Failed in this run: " + ", ".join(failed) + "."]
    return "\n".join(lines) + "\n"


def _turns_and_streams(run: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """The turn and streaming workloads (B and N), N's ratios and targets, and replay."""
    plan = run["plan"]
    cs = plan.get("stream_cs", [])
    lines = [
        "",
        "### Turns and streamed answers (B and N)",
        "",
        "| contender | turns/s | turn p50 / p99 ms | "
        + " | ".join(
            f"C={c}: chunk lateness p50 / p99 ms | first word p50 / p99 ms | answer p99 s | "
            f"lost | CPU ms / chunk"
            for c in cs
        )
        + " |",
        "|---" * (3 + 5 * len(cs)) + "|",
    ]
    both = [r for r in results if "turns" in r]
    for r in both:
        t = r["turns"]
        cells = [_fmt(t["turns_per_s"], 1), f"{_fmt(t['p50_ms'], 1)} / {_fmt(t['p99_ms'], 1)}"]
        for st in r["streaming"]:
            cells += [
                f"{_fmt(st['lateness_p50_ms'], 1)} / {_fmt(st['lateness_p99_ms'], 1)}",
                f"{_fmt(st['first_p50_ms'], 1)} / {_fmt(st['first_p99_ms'], 1)}",
                _fmt(st["answer_p99_ms"] / 1000, 2),
                f"{st['lost']:,}" + (f" ({st['unfinished']} open)" if st["unfinished"] else ""),
                _fmt(st["cpu_per_chunk_ms"], 2),
            ]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Turns: {plan['turn_sockets']} sockets on their own threads, {plan['turn_rounds']} "
        "turns each one after another, `what is 12*7 and 2**10` (N: the built-in agent, two "
        "calculator calls, AGENT_STREAM_DELAY=0; B: the same nine events group_sent by a task "
        "of the consumer); a turn is user_message to agent_completed. Streamed answers: C "
        "sockets ask at once; each answer is 40 chunks that a scripted model sends at 20 a "
        "second (bench/schedule.py; N: a bench-only agent, B: a task of the consumer), each "
        "chunk stamped with the time the model sent it. Lateness: receipt minus that time; "
        "first word: receipt of the first chunk minus sending the message.",
        "",
        "### N as a ratio to B: turns and streamed answers, with the targets",
        "",
        "| N | turns/s >= 0.8x | turn p99 <= 1.5x | "
        + " | ".join(
            f"C={c}: lateness p99 <= 1.5x | first word p99 <= 1.5x | nothing lost" for c in cs
        )
        + " | CPU / chunk (C=max) |",
        "|---" * (4 + 3 * len(cs)) + "|",
    ]
    for r in both:
        if r["config"]["contender"] != "N":
            continue
        b = _baseline(results, r)
        if b is None or "turns" not in b:
            continue
        t, bt = r["turns"], b["turns"]
        cells = [
            _check(_ratio(t["turns_per_s"], bt["turns_per_s"]), 0.8, True),
            _check(_ratio(t["p99_ms"], bt["p99_ms"]), 1.5, False),
        ]
        for st, bst in zip(r["streaming"], b["streaming"], strict=True):
            cells += [
                _check(_ratio(st["lateness_p99_ms"], bst["lateness_p99_ms"]), 1.5, False),
                _check(_ratio(st["first_p99_ms"], bst["first_p99_ms"]), 1.5, False),
                "ok" if st["lost"] == 0 and not st["unfinished"] else f"MISSED ({st['lost']})",
            ]
        top, btop = r["streaming"][-1], b["streaming"][-1]
        cells.append(_x(_ratio(top["cpu_per_chunk_ms"], btop["cpu_per_chunk_ms"])))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### N only: replay of the log",
        "",
        "| N | replay of the log, events/s | emit without sockets, events/s |",
        "|---|---|---|",
    ]
    for r in results:
        if r["config"]["contender"] != "N":
            continue
        rp = r["replay"]
        lines.append(
            f"| {r['name']} | {_fmt(rp['events_per_s'])} ({rp['events']:,} events) | "
            f"{_fmt(rp['fill_events_per_s'])} |"
        )
    lines += [
        "",
        f"Replay: {plan['replay_events']:,} logged events nobody watched, resumed with "
        "`?after_seq=0`, timed from the handshake to `resume_complete`.",
    ]
    return lines


def _check(value: float | None, target: float, at_least: bool, ratio: bool = True) -> str:
    if value is None:
        return "-"
    ok = value >= target if at_least else value <= target
    shown = _x(value) if ratio else f"{value:,.0f}"
    return f"{'ok' if ok else 'MISSED'} ({shown})"


def write(run: dict[str, Any], markdown: Path, plot: Path | None) -> None:
    """Writes the tables between the markers of `markdown` (creating it) and the plot."""
    body = tables(run)
    if plot is not None:
        _plot(run, plot)
        body += f"\n![fan-out throughput and latency]({plot.name})\n"
    block = f"{BEGIN}\n{body}{END}"
    if markdown.exists() and BEGIN in markdown.read_text():
        text = markdown.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1] if END in rest else ""
        markdown.write_text(head + block + tail)
    else:
        markdown.write_text(f"# Benchmarks\n\n{block}\n")


def _plot(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in run["results"] if "error" not in r]
    names = [r["name"] for r in results]
    ks = run["plan"]["fanout_ks"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    width = 0.8 / len(ks)
    for i, k in enumerate(ks):
        values = [next(f["events_per_s"] for f in r["fanout"] if f["k"] == k) for r in results]
        left.bar([x + i * width for x in range(len(names))], values, width, label=f"K={k}")
    left.set_xticks([x + width * (len(ks) - 1) / 2 for x in range(len(names))])
    left.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("delivered events/s (log)")
    left.set_title("Fan-out throughput (K threads x 2 sockets)")
    left.legend()
    for i, (key, label) in enumerate((("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"))):
        values = [r["latency"][key] for r in results]
        right.bar([x + i * 0.27 for x in range(len(names))], values, 0.27, label=label)
    right.set_xticks([x + 0.27 for x in range(len(names))])
    right.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("ms (log)")
    right.set_title("Emit-to-socket latency at a fixed rate")
    right.legend()
    fig.suptitle(f"netra-chat benchmarks, {run['env']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
