"""Soak test (not in CI): a long CartPole run with periodic checkpoints; memory must stay flat and
the run dir must not grow beyond its checkpoints and logs.

    python scripts/soak.py                     # 1,000,000 env steps (~20x the 20 s default run)
    python scripts/soak.py --env-steps 3000 --checkpoint-every 1000 --sample-every-s 0.2  # smoke

Starts ``rl-train`` (the default run: CartPole-v1, W&B offline) as a child process with
``total_env_steps``, ``checkpoint.every_env_steps`` and ``hydra.run.dir`` set (further
``KEY=VALUE`` arguments are passed on as overrides), and every ``--sample-every-s`` seconds
records its resident memory (``VmRSS`` from ``/proc/<pid>/status``), the env step of its newest
checkpoint, and the number of files and bytes in the run dir. It prints the table, then the
verdict:

* memory: RSS at the first sample after the first checkpoint (imports done, buffer allocated,
  every code path warm) against the last sample; the run fails the soak if it grew by more than
  ``--max-rss-growth-mb``;
* files: checkpoints kept (at most ``checkpoint.keep_last`` periodic ones plus ``last.ckpt``)
  and no temporary file left behind (``.*.tmp``).

Exit status 0 when rl-train completed and both hold, 1 otherwise. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sample:
    elapsed_s: float
    env_steps: int  # of the newest checkpoint (0 before the first)
    rss_mb: float
    files: int
    dir_mb: float


def rss_mb(pid: int) -> float | None:
    """Resident set size of process ``pid`` in MB (None once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def dir_usage(run_dir: Path) -> tuple[int, float]:
    """(files, MB) under ``run_dir``."""
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def newest_checkpoint_env_steps(run_dir: Path) -> int:
    names = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))
    return int(names[-1].stem.split("-")[1]) if names else 0


def rl_train_command() -> list[str]:
    script = Path(sys.executable).parent / "rl-train"
    if script.exists():
        return [str(script)]
    found = shutil.which("rl-train")
    return [found] if found else [sys.executable, "-m", "rl_lightning.train"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-steps", type=int, default=1_000_000)
    parser.add_argument("--checkpoint-every", type=int, default=50_000, help="env steps")
    parser.add_argument("--keep-last", type=int, default=2)
    parser.add_argument("--sample-every-s", type=float, default=30.0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("overrides", nargs="*", help="further rl-train overrides, KEY=VALUE")
    args = parser.parse_args(argv)

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="rl-soak-"))
    command = [
        *rl_train_command(),
        f"total_env_steps={args.env_steps}",
        f"checkpoint.every_env_steps={args.checkpoint_every}",
        f"checkpoint.keep_last={args.keep_last}",
        "progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *args.overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE=os.environ.get("WANDB_MODE", "offline"))
    print("$ " + " ".join(command), flush=True)
    start = time.monotonic()
    samples: list[Sample] = []
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        while True:
            rss = rss_mb(proc.pid)
            done = proc.poll() is not None
            if rss is not None and not done:
                files, size = dir_usage(run_dir) if run_dir.exists() else (0, 0.0)
                samples.append(
                    Sample(
                        time.monotonic() - start,
                        newest_checkpoint_env_steps(run_dir),
                        rss,
                        files,
                        size,
                    )
                )
            if done:
                break
            time.sleep(args.sample_every_s)
    files, size = dir_usage(run_dir)
    print(f"{'elapsed_s':>10} {'env_steps':>10} {'rss_mb':>8} {'files':>6} {'dir_mb':>8}")
    for s in samples:
        print(f"{s.elapsed_s:10.1f} {s.env_steps:10d} {s.rss_mb:8.1f} {s.files:6d} {s.dir_mb:8.1f}")
    print(f"{'end':>10} {'':>10} {'':>8} {files:6d} {size:8.1f}")

    problems = []
    if proc.returncode != 0:
        problems.append(f"rl-train exited with {proc.returncode} (log: {log_file.name})")
    trained = [s for s in samples if s.env_steps > 0]
    if len(trained) >= 2:
        growth = trained[-1].rss_mb - trained[0].rss_mb
        print(
            f"RSS after the first checkpoint {trained[0].rss_mb:.1f} MB, at the end "
            f"{trained[-1].rss_mb:.1f} MB (growth {growth:+.1f} MB, peak "
            f"{max(s.rss_mb for s in samples):.1f} MB)"
        )
        if growth > args.max_rss_growth_mb:
            problems.append(f"RSS grew by {growth:.1f} MB > {args.max_rss_growth_mb} MB")
    else:
        print("RSS: fewer than two samples after the first checkpoint (sample more often)")
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    leftovers = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*.tmp"))
    print(f"checkpoints kept: {checkpoints}")
    if len([c for c in checkpoints if c.startswith("step-")]) > args.keep_last:
        problems.append(f"more than keep_last={args.keep_last} periodic checkpoints")
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    for entry in sorted(run_dir.iterdir()):
        entry_files, entry_size = (
            dir_usage(entry) if entry.is_dir() else (1, entry.stat().st_size / 1e6)
        )
        print(f"  {entry.name:<24} {entry_files:6d} files {entry_size:10.2f} MB")
    print("soak: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
