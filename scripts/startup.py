"""Where a short run's wall time goes outside the training loop (docs/perf.md, "Start-up").

    python scripts/startup.py                          # a 1,000-env-step default run
    python scripts/startup.py --repeat 3 total_env_steps=100000 experiment=bench_cartpole

Runs ``python -X importtime -m rl_lightning.train <overrides>`` in a fresh process (one torch
thread, W&B offline) and prints: the process's whole wall time; the import time of torch,
pytorch_lightning, wandb, matplotlib, sklearn and everything else (from ``-X importtime``,
cumulative times of the top-level imports); and the phases the run records in summary.json's
``timings_s`` (validation, env creation, components, callbacks, loggers, Trainer set-up,
training, checkpoint, final evaluation). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: packages whose import time is reported on its own line (the rest: "other")
PACKAGES = (
    "torch",
    "pytorch_lightning",
    "lightning_fabric",
    "torchmetrics",
    "hydra",
    "omegaconf",
    "gymnasium",
    "numpy",
    "wandb",
    "matplotlib",
    "sklearn",
    "ale_py",
    "rl_lightning",
)
_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|\s*(\S+)")


def import_times(stderr: str) -> dict[str, float]:
    """Seconds spent importing each package's own modules (the *self* times of ``-X
    importtime``, summed per top-level package name), so that a package imported by another
    is charged to itself, not to the one that imported it."""
    out: dict[str, float] = {}
    for match in _LINE.finditer(stderr):
        self_us, name = int(match.group(1)), match.group(3)
        root = name.split(".")[0]
        key = root if root in PACKAGES else "other"
        out[key] = out.get(key, 0.0) + self_us / 1e6
    return out


def one_run(overrides: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
        cmd = [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "rl_lightning.train",
            *overrides,
            "progress_bar=false",
            f"hydra.run.dir={tmp}",
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"rl-train failed:\n{proc.stderr[-3000:]}")
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    result = {"process": wall}
    result.update({f"import {k}": v for k, v in import_times(proc.stderr).items()})
    result.update({f"run {k}": v for k, v in summary["timings_s"].items()})
    accounted = sum(v for k, v in result.items() if k != "process")
    result["unaccounted (interpreter, Hydra compose, teardown)"] = wall - accounted
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is printed")
    parser.add_argument("overrides", nargs="*", default=["total_env_steps=1000"])
    args = parser.parse_args(argv)
    runs = [one_run(args.overrides) for _ in range(args.repeat)]
    print(f"rl-train {' '.join(args.overrides)}: median of {args.repeat} runs, seconds")
    for key in runs[0]:
        print(f"  {key:<50} {statistics.median(r.get(key, 0.0) for r in runs):7.2f}")


if __name__ == "__main__":
    main()
