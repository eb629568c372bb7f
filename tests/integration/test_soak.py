"""scripts/soak.py runs end to end with a tiny budget (the 1,000,000-step soak is not in CI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    samples = [line.split() for line in lines[2:] if line.split()[:1] != ["end"]]
    samples = samples[: next(i for i, s in enumerate(samples) if not s[0][0].isdigit())]
    assert len(samples) >= 2
    assert max(float(s[2]) for s in samples) > 50  # a real process's RSS, in MB
    kept = next(line for line in lines if line.startswith("checkpoints kept: "))
    assert kept.count("'step-") == 2 and "'last.ckpt'" in kept  # keep_last=2, and the end's
    assert proc.stdout.rstrip().endswith("soak: PASS")
    assert (run_dir / "summary.json").is_file()
