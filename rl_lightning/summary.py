"""The run-summary contract: every run, finished or failed, writes <run_dir>/summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
REQUIRED_KEYS = (
    "status",
    "env_steps",
    "updates",
    "wall_s",
    "env_steps_per_s",
    "eval_return_mean",
    "eval_return_std",
    "eval_episodes",
    "seed",
    "overrides",
)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write atomically (temporary file, then rename) so a reader never sees half a file."""
    path = Path(run_dir) / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)
    return path


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
