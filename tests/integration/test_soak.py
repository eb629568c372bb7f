"""scripts/soak.py runs end to end with a tiny budget (the 1,000,000-step soak is not in CI)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_soak_script_with_a_tiny_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "soak"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "soak.py"),
        "--env-steps=3000",
        "--checkpoint-every=1000",
        "--sample-every-s=0.2",
        "--max-rss-growth-mb=200",
        f"--run-dir={run_dir}",
        "logger=csv",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["elapsed_s", "env_steps", "rss_mb", "files", "dir_mb"]
    end = next(i for i, line in enumerate(lines) if line.split()[:1] == ["end"])
    samples = [line.split() for line in lines[2:end]]
    assert len(samples) >= 2
    steps = [int(s[1]) for s in samples]  # env step of the newest checkpoint, 0 before one
    assert steps == sorted(steps)
    # the end row and the per-entry rows: what is in the run dir (nothing writes there after)
    assert lines[end].split() == ["end", str(len(files(run_dir))), f"{size_mb(run_dir):.1f}"]
    kept_at = next(i for i, line in enumerate(lines) if line.startswith("checkpoints kept: "))
    assert [line.split() for line in lines[kept_at + 1 : -1]] == [
        [entry.name, str(len(files(entry))), "files", f"{size_mb(entry):.2f}", "MB"]
        for entry in sorted(run_dir.iterdir())
    ]
    # the memory verdict is the table's numbers: first and last sample after the first
    # checkpoint, their difference, the peak
    trained = [float(s[2]) for s in samples if int(s[1]) > 0]
    verdict = lines[end + 1]
    if len(trained) >= 2:
        match = re.fullmatch(
            r"RSS after the first checkpoint (\S+) MB, at the end (\S+) MB "
            r"\(growth (\S+) MB, peak (\S+) MB\)",
            verdict,
        )
        assert match is not None, verdict
        first, last, growth, peak = map(float, match.groups())
        assert (first, last) == (trained[0], trained[-1])
        assert peak == max(float(s[2]) for s in samples)
        # the script subtracts the unrounded values: three roundings to 0.1 MB apart at most
        assert growth == pytest.approx(last - first, abs=0.15 + 1e-9)
    else:
        assert verdict.startswith("RSS: fewer than two samples after the first checkpoint")
    kept = lines[kept_at]
    assert kept.count("'step-") == 2 and "'last.ckpt'" in kept  # keep_last=2, and the end's
    assert proc.stdout.rstrip().endswith("soak: PASS")
    assert (run_dir / "summary.json").is_file()


def files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in files(path)) / 1e6
