"""The benchmark harness runs end to end on a tiny workload (figures are not checked)."""

import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT


def test_bench_harness_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--plan", "tiny", "--no-plot", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = (tmp_path / "benchmarks.md").read_text()
    for contender in ("L/raw", "B/daphne/memory", "N/daphne/memory/sqlite"):
        assert contender in report
    assert "replay of the log" in report
