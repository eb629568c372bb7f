"""Print a markdown table of the summary.json files under the given run / multirun dirs.

    python scripts/summarize_runs.py multirun/2026-11-25/12-00-00 [--threshold 475]

One row per run (overrides, seed, status, final greedy return, the mean over the run -- the mean
of its periodic greedy evaluations, a sample-efficiency measure --, V - G at the final evaluation,
env steps, wall time; with ``--threshold`` also the env step of the first evaluation at or above
it), then the count of runs at or above ``--threshold``. Reads only summary.json (the
run-summary contract).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def find_summaries(paths: list[str]) -> list[tuple[Path, dict]]:
    found = []
    for root in map(Path, paths):
        files = [root] if root.name == "summary.json" else sorted(root.rglob("summary.json"))
        found += [(f.parent, json.loads(f.read_text())) for f in files]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+")
    parser.add_argument(
        "--threshold", type=float, default=None, help="count runs with eval_return_mean >= this"
    )
    args = parser.parse_args()
    runs = find_summaries(args.paths)
    first = "" if args.threshold is None else f" first eval >= {args.threshold:g} |"
    print(
        "| run | overrides | seed | status | eval return (mean ± std) | mean over the run |"
        f"{first} V - G final | env steps | wall s |"
    )
    print("| --- " * (9 if args.threshold is None else 10) + "|")
    for run_dir, s in runs:
        ret = (
            "-"
            if s.get("eval_return_mean") is None
            else f"{s['eval_return_mean']:.1f} ± {s['eval_return_std']:.1f}"
        )
        overrides = " ".join(o for o in s.get("overrides", []) if not o.startswith("seed="))
        history = s.get("eval_history") or []
        returns = [h["eval/return_mean"] for h in history if h.get("eval/return_mean") is not None]
        over_run = f"{sum(returns) / len(returns):.1f}" if returns else "-"
        hit = ""
        if args.threshold is not None:
            steps = [
                h["env_steps"]
                for h in history
                if h.get("eval/return_mean") is not None and h["eval/return_mean"] >= args.threshold
            ]
            hit = f" {steps[0]:,.0f} |" if steps else " never |"
        bias = s.get("eval_overestimation")
        bias_cell = "-" if bias is None else f"{bias:.1f}"
        print(
            f"| {run_dir.name} | {overrides} | {s['seed']} | {s['status']} | {ret} | {over_run} |"
            f"{hit} {bias_cell} | {s['env_steps']} | {s['wall_s']:.0f} |"
        )
    if args.threshold is not None:
        hits = sum(
            1 for _, s in runs if (s.get("eval_return_mean") or float("-inf")) >= args.threshold
        )
        print(f"\n{hits} of {len(runs)} runs reach eval_return_mean >= {args.threshold:g}")


if __name__ == "__main__":
    main()
