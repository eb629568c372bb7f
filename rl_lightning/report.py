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
* the probability of improvement P(X > Y) between groups on the same environment, and the
  performance profile (fraction of runs scoring above tau) where two or more groups compare.

Inputs are the run-summary contract only: ``summary.json`` (status, final return, its
evaluation history) and, for a run whose summary holds no history, ``csv/metrics.csv``. No
W&B account or network is needed; ``--wandb`` only uploads the finished figures.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rl_lightning.loggers import run_group
from rl_lightning.summary import SUMMARY_FILE

CI_SIZE = 0.95
DEFAULT_REPS = 10_000
INSTALL_HINT = "rl-report needs the report extra: pip install 'rl-lightning[report]'"


# -- reading runs ----------------------------------------------------------------------------


@dataclass
class Run:
    """One run dir: its summary, its group and its evaluation curve."""

    run_dir: Path
    summary: dict[str, Any]
    group: str
    env_id: str
    curve: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (T, 2) env steps, return

    @property
    def completed(self) -> bool:
        return self.summary.get("status") == "completed"

    @property
    def final_return(self) -> float | None:
        value = self.summary.get("eval_return_mean")
        return None if value is None else float(value)


def _natural_key(path: Path) -> list[Any]:
    """Sort ``.../2`` before ``.../10`` (Hydra's job numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _env_id(run_dir: Path) -> str:
    """``env.id`` from the run's saved Hydra config, "" when there is none."""
    import yaml

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return ""
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return ""
    env = config.get("env") or {}
    return str(env.get("id", "")) if isinstance(env, dict) else ""


def _csv_curve(run_dir: Path) -> np.ndarray:
    """(env steps, eval return) rows of ``csv/metrics.csv`` (the CSV logger), if any."""
    path = run_dir / "csv" / "metrics.csv"
    rows: list[tuple[float, float]] = []
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                value = row.get("eval/return_mean")
                if value not in (None, ""):
                    rows.append((float(row["step"]), float(value)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def run_curve(run_dir: Path, summary: dict[str, Any]) -> np.ndarray:
    """The evaluation return against env steps, shape (T, 2), sorted by env steps.

    The periodic evaluations of ``summary["eval_history"]`` (or ``csv/metrics.csv``), then the
    final evaluation at ``summary["env_steps"]`` (same seeds, ``eval.final_episodes`` episodes).
    """
    history = summary.get("eval_history")
    if history:
        curve = np.asarray(
            [(h["env_steps"], h["eval/return_mean"]) for h in history], dtype=np.float64
        ).reshape(-1, 2)
    else:
        curve = _csv_curve(run_dir)
    final = summary.get("eval_return_mean")
    if final is not None and (len(curve) == 0 or summary["env_steps"] > curve[-1, 0]):
        curve = np.vstack([curve, [[float(summary["env_steps"]), float(final)]]])
    if len(curve):
        curve = curve[np.argsort(curve[:, 0], kind="stable")]
        _, first = np.unique(curve[:, 0], return_index=True)  # one value per env step
        curve = curve[first]
    return curve


def find_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run dir (holding ``summary.json``) under ``paths``, in natural path order."""
    files: list[Path] = []
    for root in map(Path, paths):
        if root.is_file() and root.name == SUMMARY_FILE:
            files.append(root)
        elif root.is_dir():
            files += root.rglob(SUMMARY_FILE)
        else:
            raise FileNotFoundError(f"no run dir or {SUMMARY_FILE} at {root}")
    runs = []
    for path in sorted(set(files), key=_natural_key):
        summary = json.loads(path.read_text())
        run_dir = path.parent
        runs.append(
            Run(
                run_dir=run_dir,
                summary=summary,
                group=run_group(list(summary.get("overrides", []))),
                env_id=_env_id(run_dir),
                curve=run_curve(run_dir, summary),
            )
        )
    return runs


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Group -> runs, groups in the order of their first run (a sweep's job order)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return groups


def group_labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """Short labels: each group's overrides without those that every group shares."""
    split = {g: [o for o in g.split(",") if o != "default"] for g in groups}
    common = set.intersection(*(set(o) for o in split.values())) if split else set()
    labels = {}
    for g, overrides in split.items():
        kept = [o for o in overrides if o not in common]
        labels[g] = " ".join(kept) if kept else (g if len(groups) == 1 else "(shared settings)")
    return labels


# -- statistics (rliable) --------------------------------------------------------------------


@contextlib.contextmanager
def _global_rng(seed: int) -> Iterator[None]:
    """rliable 1.2 resamples with numpy's global RNG: seed it for a repeatable report, and
    restore its state afterwards."""
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _rliable():
    try:
        from rliable import library, metrics
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(INSTALL_HINT) from exc
    return library, metrics


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's 25%-trimmed mean), as rliable."""
    _, metrics = _rliable()
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64).reshape(-1, 1)))


def iqm_interval(scores: np.ndarray, *, reps: int, seed: int = 0) -> tuple[float, float, float]:
    """(IQM, lower, upper) of one group's final scores, 95% stratified bootstrap CI (rliable).

    ``scores``: (n_runs,) one task. rliable resamples runs with numpy's global RNG: it is
    seeded here, so a report is repeatable.
    """
    library, metrics = _rliable()
    matrix = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    with _global_rng(seed):
        points, intervals = library.get_interval_estimates(
            {"x": matrix},
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            confidence_interval_size=CI_SIZE,
        )
    return float(points["x"][0]), float(intervals["x"][0, 0]), float(intervals["x"][1, 0])


def improvement_probability(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) = mean over task of (1 / nm) sum_ij [x_i > y_j] + 0.5 [x_i = y_j].

    The Mann-Whitney U statistic over n m, as ``rliable.metrics.probability_of_improvement``
    (which calls scipy per resample); this vectorised form is what the bootstrap calls.
    Inputs: (n_runs, n_tasks) and (m_runs, n_tasks).
    """
    x = np.asarray(scores_x, dtype=np.float64)[:, None, :]
    y = np.asarray(scores_y, dtype=np.float64)[None, :, :]
    wins = (x > y).astype(np.float64) + 0.5 * (x == y)
    return float(wins.mean(axis=(0, 1)).mean())


def improvement_interval(
    scores_x: np.ndarray, scores_y: np.ndarray, *, reps: int, seed: int = 0
) -> tuple[float, float, float]:
    """(P(X > Y), lower, upper): runs of X and of Y resampled independently (rliable)."""
    library, _ = _rliable()
    x = np.asarray(scores_x, dtype=np.float64).reshape(-1, 1)
    y = np.asarray(scores_y, dtype=np.float64).reshape(-1, 1)
    with _global_rng(seed):
        points, intervals = library.get_interval_estimates(
            {"p": [x, y]},
            lambda a, b: np.array([improvement_probability(a, b)]),
            reps=reps,
            confidence_interval_size=CI_SIZE,
        )
    return float(points["p"][0]), float(intervals["p"][0, 0]), float(intervals["p"][1, 0])


def curve_matrix(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray]:
    """Curves of ``runs`` on a shared grid: (grid (T,), returns (n_runs, T)).

    The grid is every env step at which some run was evaluated, within the range that all
    runs cover; each run is linearly interpolated onto it.
    """
    curves = [r.curve for r in runs if len(r.curve)]
    if not curves:
        return np.zeros(0), np.zeros((0, 0))
    start = max(c[0, 0] for c in curves)
    stop = min(c[-1, 0] for c in curves)
    grid = np.unique(np.concatenate([c[:, 0] for c in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    return grid, np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])


def curve_intervals(
    returns: np.ndarray, *, reps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM across runs at each grid point with 95% CIs: (iqm (T,), lower (T,), upper (T,))."""
    from scipy.stats import trim_mean

    library, _ = _rliable()
    n_runs, n_points = returns.shape
    with _global_rng(seed):
        points, intervals = library.get_interval_estimates(
            {"x": returns.reshape(n_runs, 1, n_points)},
            # aggregate_iqm of every grid point at once (a trimmed mean over runs and tasks)
            lambda x: trim_mean(x.reshape(-1, x.shape[-1]), proportiontocut=0.25, axis=0),
            reps=reps,
            confidence_interval_size=CI_SIZE,
        )
    return points["x"], intervals["x"][0], intervals["x"][1]


def performance_profile(
    scores: dict[str, np.ndarray], taus: np.ndarray, *, reps: int, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Fraction of runs with a final return above each tau, with 95% CI bands (rliable)."""
    library, _ = _rliable()

    def profile(x: np.ndarray, tau_list: np.ndarray) -> np.ndarray:
        # rliable's run-score distribution, vectorised over tau
        return (x.reshape(-1, 1) > np.asarray(tau_list).reshape(1, -1)).mean(axis=0)

    with _global_rng(seed):
        return library.create_performance_profile(
            {k: np.asarray(v, dtype=np.float64).reshape(-1, 1) for k, v in scores.items()},
            taus,
            custom_profile_func=profile,
            reps=reps,
            confidence_interval_size=CI_SIZE,
        )


# -- the report ------------------------------------------------------------------------------


@dataclass
class GroupStats:
    group: str
    label: str
    env_id: str
    runs: list[Run]
    scores: np.ndarray  # final returns of the completed runs
    iqm: tuple[float, float, float] | None = None  # point, lower, upper
    grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.completed]


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


def compute_stats(runs: Sequence[Run], *, reps: int, seed: int) -> list[GroupStats]:
    groups = group_runs(runs)
    labels = group_labels(groups)
    stats = []
    for index, (group, members) in enumerate(groups.items()):
        scores = np.asarray(
            [r.final_return for r in members if r.completed and r.final_return is not None]
        )
        env_ids = sorted({r.env_id for r in members})
        s = GroupStats(group, labels[group], "/".join(env_ids), list(members), scores)
        if len(scores):
            s.iqm = iqm_interval(scores, reps=reps, seed=seed + index)
        grid, returns = curve_matrix(s.completed)
        if len(grid):
            s.grid = grid
            s.curve = curve_intervals(returns, reps=reps, seed=seed + index)
        stats.append(s)
    return stats


def _by_env(stats: Sequence[GroupStats]) -> dict[str, list[GroupStats]]:
    """Groups with completed runs, per environment (comparisons only within one)."""
    out: dict[str, list[GroupStats]] = {}
    for s in stats:
        if len(s.scores):
            out.setdefault(s.env_id, []).append(s)
    return out


def _plt():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        raise ImportError(INSTALL_HINT) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _env_title(env_id: str) -> str:
    return env_id or "environment not recorded"


def plot_learning_curves(stats: Sequence[GroupStats], path: Path) -> Path:
    plt = _plt()
    envs = sorted({s.env_id for s in stats if s.curve is not None})
    fig, axes = plt.subplots(1, max(len(envs), 1), figsize=(7 * max(len(envs), 1), 4.5))
    axes = np.atleast_1d(axes)
    colors = dict(zip([s.group for s in stats], _colors(len(stats)), strict=True))
    for ax, env in zip(axes, envs, strict=False):
        for s in stats:
            if s.env_id != env or s.curve is None:
                continue
            mid, low, high = s.curve
            n = len(s.completed)
            ax.plot(s.grid, mid, color=colors[s.group], label=f"{s.label} (n={n})", lw=1.8)
            band_alpha = 0.2 if len(stats) <= 4 else 0.1  # many groups: lighter bands
            ax.fill_between(s.grid, low, high, color=colors[s.group], alpha=band_alpha, lw=0)
        ax.set_title(_env_title(env))
        ax.set_xlabel("environment steps")
        ax.set_ylabel("greedy evaluation return (IQM, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_final_returns(stats: Sequence[GroupStats], path: Path) -> Path:
    """IQM with its 95% CI per group, each run's final return as a dot."""
    plt = _plt()
    shown = [s for s in stats if s.iqm is not None]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(shown) + 1.5))
    colors = _colors(len(shown))
    for i, (s, color) in enumerate(zip(shown, colors, strict=True)):
        assert s.iqm is not None
        point, low, high = s.iqm
        ax.plot([low, high], [i, i], color=color, lw=6, alpha=0.45, solid_capstyle="butt")
        ax.plot([point], [i], marker="|", color="black", ms=16, mew=2)
        jitter = np.linspace(-0.15, 0.15, len(s.scores)) if len(s.scores) > 1 else [0.0]
        ax.scatter(s.scores, i + np.asarray(jitter), color=color, s=14, zorder=3)
    ax.set_yticks(range(len(shown)), [f"{s.label}\n{_env_title(s.env_id)}" for s in shown])
    ax.invert_yaxis()
    ax.set_xlabel("final greedy return: IQM (|), 95% CI (bar), runs (dots)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_improvement(
    groups: Sequence[GroupStats], matrix: np.ndarray, path: Path, env_id: str
) -> Path:
    """Heat map of P(row > column)."""
    plt = _plt()
    n = len(groups)
    fig, ax = plt.subplots(figsize=(1.2 * n + 4, 1.0 * n + 2))
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="RdBu")
    for i, j in itertools.product(range(n), range(n)):
        if i != j:
            strong = abs(matrix[i, j] - 0.5) > 0.3  # dark cell: white text
            ax.text(
                j,
                i,
                f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if strong else "black",
            )
    labels = [g.label for g in groups]
    ax.set_xticks(range(n), labels, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(n), labels, fontsize="small")
    ax.set_title(f"P(row > column), final return: {_env_title(env_id)}")
    fig.colorbar(image, ax=ax, label="probability of improvement")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_profiles(
    groups: Sequence[GroupStats],
    taus: np.ndarray,
    profiles: dict[str, np.ndarray],
    cis: dict[str, np.ndarray],
    path: Path,
    env_id: str,
) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, color in zip(groups, _colors(len(groups)), strict=True):
        ax.plot(taus, profiles[s.group], color=color, label=s.label, lw=1.8)
        ax.fill_between(taus, cis[s.group][0], cis[s.group][1], color=color, alpha=0.2, lw=0)
    ax.set_xlabel("final greedy return tau")
    ax.set_ylabel("fraction of runs with return > tau")
    ax.set_title(f"performance profile: {_env_title(env_id)}")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "env"


def write_report(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    title: str | None = None,
) -> Report:
    """Read the runs under ``paths``; write ``report.md`` and its figures to ``out_dir``."""
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
    if any(s.iqm is not None for s in stats):
        figures["final_returns"] = plot_final_returns(stats, out / "final_returns.png")

    improvements: list[tuple[str, str, tuple[float, float, float]]] = []
    comparisons: list[str] = []
    for env_id, groups in _by_env(stats).items():
        if len(groups) < 2:
            continue
        suffix = "" if len(_by_env(stats)) == 1 else f"_{_slug(env_id)}"
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
        "final_returns": "Each run's final return (dots), the group's IQM (|) and its 95% CI "
        "(bar).",
    }
    for key, caption in (
        ("learning_curves", "Learning curves"),
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
        "--wandb",
        choices=("offline", "online"),
        default=None,
        help="also log the figures and the table to W&B (online uploads; offline: sync later)",
    )
    parser.add_argument("--wandb-project", default="rl-lightning", help="W&B project")
    args = parser.parse_args(argv)
    try:
        report = write_report(
            args.paths, args.out, reps=args.reps, seed=args.seed, title=args.title
        )
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
