"""One measurement per fresh process, for the benchmark scripts: a script calls
``measure(__file__, spec)`` for each measurement, one after another, and starts with
``serve(WORKERS)``, which runs the worker named by ``spec["kind"]`` when the script was
started as one. Workers run with one torch thread and offline W&B; a worker's result is the
last line of its stdout that starts with the tag. ``publish`` writes a script's JSON and
markdown table and prints the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULT_TAG = "FRESH_PROCESS_RESULT "
REPO = Path(__file__).resolve().parents[1]


def worker_env(threads: int = 1) -> dict[str, str]:
    """The environment of a measured process: ``threads`` torch threads, offline W&B."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONWARNINGS": "ignore",
    }


def rl_train_command() -> str:
    """``rl-train`` of this interpreter's environment (else the one on PATH)."""
    script = Path(sys.executable).parent / "rl-train"
    return str(script) if script.exists() else "rl-train"


def measure(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --worker <spec>`` in a fresh process; its worker's result."""
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(
        cmd, env=worker_env(), cwd=REPO, capture_output=True, text=True, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def serve(workers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> bool:
    """If this process was started by ``measure``: run the worker, print its result, return
    True (the script should exit); else return False."""
    if len(sys.argv) < 3 or sys.argv[1] != "--worker":
        return False
    import torch

    torch.set_num_threads(1)
    spec = json.loads(sys.argv[2])
    print(RESULT_TAG + json.dumps(workers[spec["kind"]](spec)), flush=True)
    return True


def publish(out: Path, name: str, report: dict[str, Any], table: str) -> None:
    """``out/<name>.json`` (every number) and ``out/<name>.md`` (the table); print the table."""
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
