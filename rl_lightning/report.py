"""rl-report: a statistically sound comparison of the runs under one or more (multi)run dirs.

    rl-report multirun/ablation_target/2026-11-25_12-00-00 [more dirs] [--out DIR]
    rl-report multirun/... --reps 50000 --wandb online   # tighter CIs; upload the figures

Every run dir (a dir holding ``summary.json``) below the given paths is read; runs are grouped
by their command-line overrides without the seed (the W&B group, ``loggers.run_group``), and
``report.md`` plus PNG figures are written (default: ``PATH/report/`` for one PATH):

* a table, one row per group: final greedy return (mean ± std over seeds), its interquartile
  mean (IQM: the mean of the middle 50% of runs) with a 95% stratified-bootstrap confidence
  interval (rliable), the number of completed / failed seeds, env steps and wall time;
* learning curves: IQM of the evaluation return against env steps with 95% CI bands;
* value estimates (runs that log them): the mean over seeds of ``eval/overestimation`` and
  ``eval/v_initial`` against env steps, with 95% CI bands, next to the return curves;
* the probability of improvement P(X > Y) between groups on the same environment, and the
  performance profile (fraction of runs scoring above tau) where two or more groups compare.

Inputs are the run-summary contract only: ``summary.json`` (status, final return, its
evaluation history) and, for a run whose summary holds no history, ``csv/metrics.csv``. No
W&B account or network is needed; ``--wandb`` only uploads the finished figures.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_lightning.report_plots import (
    plot_final_returns,
    plot_improvement,
    plot_learning_curves,
    plot_profiles,
    plot_value_estimates,
)
from rl_lightning.report_stats import (
    DEFAULT_REPS,
    GroupStats,
    Run,
    by_env,
    compute_stats,
    find_runs,
    improvement_interval,
    performance_profile,
    steps_to_threshold,
)
from rl_lightning.summary import SUMMARY_FILE

# rl-report in three modules: report_stats reads the runs and computes the statistics,
# report_plots draws the figures, this one writes report.md, uploads to W&B and is the CLI.

# -- the report ------------------------------------------------------------------------------
THRESHOLD_HEAD = "| group | env | reached | median env step | per seed (seed: env step) |\n" + (
    "| --- " * 5 + "|"
)
THRESHOLD_NOTE = (
    "The env step of the first greedy evaluation at or above the threshold (evaluations every "
    "`eval.every_env_steps`); the median only when every seed reached it."
)


@dataclass
class Report:
    path: Path
    figures: dict[str, Path]
    groups: list[GroupStats]
    improvements: list[tuple[str, str, tuple[float, float, float]]]  # (X, Y, P(X > Y) + CI)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _seeds(runs: Sequence[Run]) -> str:
    return ",".join(str(r.summary.get("seed", "?")) for r in runs)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "env"


def write_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    title: str | None = None,
    threshold: float | None = None,
) -> Report:
    """Read the runs under ``paths``; write ``report.md`` and its figures to ``out_dir``
    (``threshold``: also when each run's evaluation return first reached it)."""
    sources = [Path(p) for p in paths]
    runs = find_runs(sources)
    if not runs:
        raise FileNotFoundError(f"no {SUMMARY_FILE} under {', '.join(map(str, sources))}")
    out = Path(out_dir) if out_dir is not None else default_out_dir(sources)
    out.mkdir(parents=True, exist_ok=True)
    stats = compute_stats(runs, reps=reps, seed=seed)
    figures: dict[str, Path] = {}
    if any(s.curve is not None for s in stats):
        figures["learning_curves"] = plot_learning_curves(stats, out / "learning_curves.png")
    if any(s.values for s in stats):
        figures["value_estimates"] = plot_value_estimates(stats, out / "value_estimates.png")
    if any(s.iqm is not None for s in stats):
        figures["final_returns"] = plot_final_returns(stats, out / "final_returns.png")

    improvements: list[tuple[str, str, tuple[float, float, float]]] = []
    comparisons: list[str] = []
    for env_id, groups in by_env(stats).items():
        if len(groups) < 2:
            continue
        suffix = "" if len(by_env(stats)) == 1 else f"_{_slug(env_id)}"
        n = len(groups)
        matrix = np.full((n, n), 0.5)
        for (i, x), (j, y) in itertools.combinations(enumerate(groups), 2):
            p = improvement_interval(x.scores, y.scores, reps=reps, seed=seed)
            improvements.append((x.label, y.label, p))
            matrix[i, j], matrix[j, i] = p[0], 1.0 - p[0]
        key = f"probability_of_improvement{suffix}"
        figures[key] = plot_improvement(groups, matrix, out / f"{key}.png", env_id)
        scores = np.concatenate([g.scores for g in groups])
        taus = np.linspace(scores.min(), scores.max(), 101) if np.ptp(scores) > 0 else None
        if taus is not None:
            profiles, cis = performance_profile(
                {g.group: g.scores for g in groups}, taus, reps=reps, seed=seed
            )
            key = f"performance_profile{suffix}"
            figures[key] = plot_profiles(groups, taus, profiles, cis, out / f"{key}.png", env_id)
        comparisons.append(env_id)

    text = render_markdown(
        stats,
        figures,
        improvements,
        sources=sources,
        out=out,
        reps=reps,
        title=title,
        compared=comparisons,
    )
    if threshold is not None:
        text += "\n" + threshold_section(stats, threshold)
    report_path = out / "report.md"
    report_path.write_text(text)
    return Report(report_path, figures, stats, improvements)


def default_out_dir(paths: Sequence[Path]) -> Path:
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0] / "report"
    return Path("report")


def _relative(path: Path, start: Path) -> str:
    try:
        return path.resolve().relative_to(start.resolve()).as_posix()
    except ValueError:
        return str(path)


def render_markdown(
    stats: Sequence[GroupStats],
    figures: dict[str, Path],
    improvements: Sequence[tuple[str, str, tuple[float, float, float]]],
    *,
    sources: Sequence[Path],
    out: Path,
    reps: int,
    title: str | None,
    compared: Sequence[str],
) -> str:
    runs = [r for s in stats for r in s.runs]
    failed = [r for r in runs if not r.completed]
    lines = [f"# {title or 'Run report'}", ""]
    lines.append(
        f"{len(runs)} runs in {len(stats)} groups ({len(runs) - len(failed)} completed, "
        f"{len(failed)} failed) from {', '.join(f'`{p}`' for p in sources)}. A group is a "
        "setting: the runs' overrides without the seed."
    )
    lines.append("")
    shared = set.intersection(*(set(s.group.split(",")) for s in stats)) - {"default"}
    if shared and len(stats) > 1:
        lines.append(f"Settings shared by every group: `{' '.join(sorted(shared))}`.")
    lines += [
        "",
        "## Final greedy return",
        "",
        "| group | env | seeds (completed) | failed | return mean ± std | IQM [95% CI] | "
        "env steps | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in stats:
        done = s.completed
        steps = [float(r.summary.get("env_steps", 0)) for r in done]
        walls = [float(r.summary.get("wall_s", 0.0)) for r in done]
        ret = "-"
        if len(s.scores):
            ret = f"{s.scores.mean():.1f} ± {s.scores.std():.1f}"
        ci = "-"
        if s.iqm is not None:
            ci = f"{s.iqm[0]:.1f} [{s.iqm[1]:.1f}, {s.iqm[2]:.1f}]"
        lines.append(
            f"| {s.label} | {s.env_id or '-'} | {len(done)} ({_seeds(done) or '-'}) | "
            f"{len(s.failed)} | {ret} | {ci} | {_fmt(float(np.mean(steps)) if steps else None, 0)} | "
            f"{_fmt(float(np.mean(walls)) if walls else None)} |"
        )
    lines += [
        "",
        "Return: the final greedy evaluation of each run (`eval_return_mean` of summary.json). "
        "IQM: the interquartile mean over runs (the mean of the middle 50%; with fewer than "
        "four runs, the plain mean); 95% confidence interval by stratified bootstrap over runs "
        f"(rliable, {reps} resamples). env steps and wall s: means over completed runs.",
        "",
    ]
    captions = {
        "learning_curves": "Each line is the IQM over a group's completed runs of the greedy "
        "evaluation return, against environment steps (each run interpolated onto the "
        "evaluation points that all its group's runs cover); the band is its 95% "
        "stratified-bootstrap CI.",
        "value_estimates": "Left: the return curves above. Next to them, the mean over a "
        "group's completed runs (95% stratified-bootstrap CI band) of `eval/overestimation`, "
        "the mean over the visited states of the greedy evaluation episodes of V(s_t) - G_t (G_t: "
        "the discounted return actually obtained from s_t; > 0: the network overestimates), and "
        "of `eval/v_initial`, the mean V(s_0) of the episodes' first states. A y-axis beyond "
        "±1,000 is logarithmic past ±100. Runs that do not log them are left out.",
        "final_returns": "Each run's final return (dots), the group's IQM (|) and its 95% CI "
        "(bar).",
    }
    for key, caption in (
        ("learning_curves", "Learning curves"),
        ("value_estimates", "Value estimates"),
        ("final_returns", "Final returns"),
    ):
        if key in figures:
            lines += [f"## {caption}", "", f"![{caption}]({_relative(figures[key], out)})", ""]
            lines += [captions[key], ""]
    if improvements:
        lines += [
            "## Probability of improvement",
            "",
            "P(X > Y): the probability that a run of X ends with a higher final return than a "
            "run of Y (ties count one half; the Mann-Whitney U statistic over n m), with a 95% "
            "bootstrap CI (runs of X and of Y resampled independently). 0.5 means no "
            "difference; a CI that excludes 0.5 is a difference these seeds support.",
            "",
            "| X | Y | P(X > Y) [95% CI] |",
            "| --- | --- | --- |",
        ]
        for x, y, (p, low, high) in improvements:
            lines.append(f"| {x} | {y} | {p:.2f} [{low:.2f}, {high:.2f}] |")
        lines.append("")
        for key, path in figures.items():
            if key.startswith("probability_of_improvement"):
                lines += [f"![{key}]({_relative(path, out)})", ""]
    profiles = {k: p for k, p in figures.items() if k.startswith("performance_profile")}
    if profiles:
        lines += [
            "## Performance profiles",
            "",
            "The fraction of a group's runs whose final return exceeds tau, for every tau "
            "between the lowest and the highest final return; bands are 95% bootstrap CIs. A "
            "curve above another everywhere dominates it (stochastic dominance).",
            "",
        ]
        lines += [f"![{k}]({_relative(p, out)})\n" for k, p in profiles.items()]
    if not compared:
        lines += [
            "No comparison between groups: it needs two groups with completed runs on one "
            "environment.",
            "",
        ]
    if failed:
        lines += [
            "## Failed runs",
            "",
            "| run dir | group | seed | error |",
            "| --- | --- | --- | --- |",
        ]
        labels = {s.group: s.label for s in stats}
        for r in failed:
            error = str(r.summary.get("error", r.summary.get("status", "?"))).replace("|", "\\|")
            error = error.splitlines()[0] if error else "?"
            lines.append(
                f"| `{r.run_dir}` | {labels[r.group]} | {r.summary.get('seed', '?')} | "
                f"status `{r.summary.get('status')}`: {error} |"
            )
        lines.append("")
    return "\n".join(lines)


def threshold_section(stats: Sequence[GroupStats], threshold: float) -> str:
    """Markdown: per group, the env step at which each completed seed's evaluation return first
    reached ``threshold`` ("never" within its budget), how many did, and the median step."""
    lines = [f"## Env steps to reach a return of {threshold:g}", "", THRESHOLD_HEAD]
    for s in stats:
        steps = {r.summary.get("seed", "?"): steps_to_threshold(r, threshold) for r in s.completed}
        hits = [v for v in steps.values() if v is not None]
        median = _fmt(float(np.median(hits)), 0) if hits and len(hits) == len(steps) else "-"
        seeds = ", ".join(f"{k}: {'never' if v is None else f'{v:.0f}'}" for k, v in steps.items())
        lines.append(f"| {s.label} | {s.env_id} | {len(hits)}/{len(steps)} | {median} | {seeds} |")
    return "\n".join([*lines, "", THRESHOLD_NOTE, ""])


# -- W&B upload ------------------------------------------------------------------------------


def upload_to_wandb(report: Report, *, mode: str, project: str, name: str | None = None) -> None:
    """Log the report's figures and its table to one W&B run (job type ``report``)."""
    import wandb

    run = wandb.init(
        project=project,
        job_type="report",
        name=name or report.path.parent.name,
        mode=mode,  # type: ignore[arg-type]
        dir=str(report.path.parent),
        config={"groups": [s.group for s in report.groups]},
    )
    try:
        table = wandb.Table(
            columns=["group", "env", "seeds", "failed", "iqm", "ci_low", "ci_high", "mean"]
        )
        for s in report.groups:
            iqm_ = s.iqm or (float("nan"),) * 3
            mean = float(s.scores.mean()) if len(s.scores) else float("nan")
            table.add_data(s.label, s.env_id, len(s.completed), len(s.failed), *iqm_, mean)
        run.log(
            {"report/final_returns": table}
            | {f"report/{k}": wandb.Image(str(p)) for k, p in report.figures.items()}
        )
        run.save(str(report.path), base_path=str(report.path.parent), policy="now")
    finally:
        run.finish()


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        prog="rl-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", help="run or multirun dirs (searched recursively)")
    parser.add_argument(
        "--out", default=None, help="output dir (default: PATH/report for one PATH, else ./report)"
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=DEFAULT_REPS,
        help=f"bootstrap resamples per confidence interval (default {DEFAULT_REPS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--title", default=None, help="the report's title")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="also report the env step at which each run's evaluation return first reached this",
    )
    parser.add_argument(
        "--wandb",
        choices=("offline", "online"),
        default=None,
        help="also log the figures and the table to W&B (online uploads; offline: sync later)",
    )
    parser.add_argument("--wandb-project", default="rl-lightning", help="W&B project")
    args = parser.parse_args(argv)
    try:
        options = {"reps": args.reps, "seed": args.seed, "threshold": args.threshold}
        report = write_report(args.paths, args.out, title=args.title, **options)
    except (FileNotFoundError, ImportError) as exc:
        parser.exit(2, f"rl-report: {exc}\n")
    if args.wandb:
        upload_to_wandb(report, mode=args.wandb, project=args.wandb_project)
    failed = sum(len(s.failed) for s in report.groups)
    print(
        f"[rl-report] {len(report.groups)} groups, {failed} failed runs -> {report.path} "
        f"({len(report.figures)} figures)"
    )
    return report.path


def cli() -> None:
    """Console-script entry point: ``main`` returns a value for Python callers; a console script
    must not (``sys.exit(value)`` would print it and exit with status 1)."""
    main()


if __name__ == "__main__":
    main()
