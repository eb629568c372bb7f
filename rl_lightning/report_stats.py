"""rl-report's numbers: the runs under some dirs, their groups, and rliable statistics.

A run is a dir holding ``summary.json`` (the run-summary contract); runs are grouped by their
command-line overrides without the seed (``loggers.run_group``). Per group: the final greedy
returns of the completed runs, their interquartile mean (IQM) with a 95% stratified-bootstrap
confidence interval, and the IQM learning curve with CI bands; between groups: the probability
of improvement P(X > Y) and performance profiles. Every bootstrap is seeded, so a report is
repeatable. ``rl_lightning.report`` writes them up, ``rl_lightning.report_plots`` draws them.
"""

from __future__ import annotations

import contextlib
import csv
import json
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
RETURN_KEY = "eval/return_mean"
# per-evaluation value diagnostics drawn next to the return curves (mean over seeds, CI bands)
VALUE_KEYS = ("eval/overestimation", "eval/v_initial")
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
    values: dict[str, np.ndarray] = field(default_factory=dict)  # VALUE_KEYS -> (T, 2) curves

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
    """``env.id`` from the run's saved Hydra config, resolved (``env=minatar`` stores
    ``MinAtar/${minatar_id:${env.game}}-v1``); "" when there is none."""
    from omegaconf import OmegaConf

    import rl_lightning.config  # noqa: F401 - registers the ``minatar_id`` resolver

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return ""
    try:
        return str(OmegaConf.select(OmegaConf.load(path), "env.id", default=""))
    except Exception:  # unreadable YAML, an interpolation that no longer resolves
        return ""


def _csv_curve(run_dir: Path, key: str = RETURN_KEY) -> np.ndarray:
    """(env steps, ``key``) rows of ``csv/metrics.csv`` (the CSV logger), if any."""
    path = run_dir / "csv" / "metrics.csv"
    rows: list[tuple[float, float]] = []
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                value = row.get(key)
                if value not in (None, ""):
                    rows.append((float(row["step"]), float(value)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def value_curve(run_dir: Path, summary: dict[str, Any], key: str) -> np.ndarray:
    """A value diagnostic (``VALUE_KEYS``) against env steps, shape (T, 2), sorted by env steps.

    The entries of ``summary["eval_history"]`` that hold ``key`` (else ``csv/metrics.csv``'s
    column), then the final evaluation's (``eval_overestimation`` / ``eval_v_initial`` at
    ``summary["env_steps"]``, as ``run_curve``); non-finite values (a blown-up network; no
    state counted) are left out. Runs from before the metric existed give (0, 2).
    """
    history = summary.get("eval_history") or []
    rows = [(h["env_steps"], h[key]) for h in history if h.get(key) is not None]
    curve = np.asarray(rows, dtype=np.float64).reshape(-1, 2) if rows else _csv_curve(run_dir, key)
    final = summary.get(key.replace("/", "_"))  # eval/v_initial -> eval_v_initial
    if final is not None and (len(curve) == 0 or summary["env_steps"] > curve[:, 0].max()):
        curve = np.vstack([curve, [[float(summary["env_steps"]), float(final)]]])
    curve = curve[np.isfinite(curve).all(axis=1)]
    curve = curve[np.argsort(curve[:, 0], kind="stable")]
    _, first = np.unique(curve[:, 0], return_index=True)  # one value per env step
    return curve[first]


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
                values={k: value_curve(run_dir, summary, k) for k in VALUE_KEYS},
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


def curve_matrix(runs: Sequence[Run], key: str = RETURN_KEY) -> tuple[np.ndarray, np.ndarray]:
    """Curves of ``runs`` on a shared grid: (grid (T,), values (n_runs, T)).

    ``key``: the return (``Run.curve``) or one of ``VALUE_KEYS`` (``Run.values``; runs without
    it are left out). The grid is every env step at which some run was evaluated, within the
    range that all runs cover; each run is linearly interpolated onto it.
    """
    all_curves = [r.curve if key == RETURN_KEY else r.values.get(key) for r in runs]
    curves = [c for c in all_curves if c is not None and len(c)]
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


def mean_curve_intervals(
    values: np.ndarray, *, reps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean across runs at each grid point with 95% stratified-bootstrap CIs (rliable):
    (mean (T,), lower (T,), upper (T,)); ``values``: (n_runs, T)."""
    library, _ = _rliable()
    n_runs, n_points = values.shape
    with _global_rng(seed):
        points, intervals = library.get_interval_estimates(
            {"x": values.reshape(n_runs, 1, n_points)},
            lambda x: x.reshape(-1, x.shape[-1]).mean(axis=0),
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


# -- per group -------------------------------------------------------------------------------


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
    # VALUE_KEYS -> (grid, (mean, lower, upper)) over the completed runs that hold the key
    values: dict[str, tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(
        default_factory=dict
    )

    @property
    def completed(self) -> list[Run]:
        return [r for r in self.runs if r.completed]

    @property
    def failed(self) -> list[Run]:
        return [r for r in self.runs if not r.completed]


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
        for key in VALUE_KEYS:
            grid, values = curve_matrix(s.completed, key)
            if len(grid):
                s.values[key] = (grid, mean_curve_intervals(values, reps=reps, seed=seed + index))
        stats.append(s)
    return stats


def steps_to_threshold(run: Run, threshold: float) -> float | None:
    """The env step of the run's first evaluation whose return is >= ``threshold`` (None:
    never), read off its evaluation curve: sample efficiency ("solved at step ...")."""
    if not len(run.curve):
        return None
    reached = np.flatnonzero(run.curve[:, 1] >= threshold)
    return float(run.curve[reached[0], 0]) if len(reached) else None


def by_env(stats: Sequence[GroupStats]) -> dict[str, list[GroupStats]]:
    """Groups with completed runs, per environment (comparisons only within one)."""
    out: dict[str, list[GroupStats]] = {}
    for s in stats:
        if len(s.scores):
            out.setdefault(s.env_id, []).append(s)
    return out
