"""rl-report's figures (matplotlib, Agg backend): learning curves, the value-estimate panel
(overestimation and V(s_0) next to the return), final returns, probability-of-improvement heat
maps and performance profiles, from ``report_stats.GroupStats``.
matplotlib is imported when a figure is drawn, not with this module.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rl_lightning.report_stats import INSTALL_HINT, VALUE_KEYS, GroupStats


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
    """A figure title for ``env_id`` (``$`` escaped: matplotlib reads it as maths)."""
    return env_id.replace("$", r"\$") if env_id else "environment not recorded"


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


VALUE_LABELS = {
    "eval/overestimation": "overestimation: mean of V(s_t) - G_t (mean, 95% CI)",
    "eval/v_initial": "V(s_0) of the evaluation episodes (mean, 95% CI)",
}


def plot_value_estimates(stats: Sequence[GroupStats], path: Path) -> Path:
    """One row per environment: the return curves (IQM) and, next to them, the mean over seeds
    of each value diagnostic in ``VALUE_KEYS`` that some group holds, with 95% CI bands.
    Groups whose runs predate a diagnostic have no line in its panel."""
    plt = _plt()
    envs = sorted({s.env_id for s in stats if s.values})
    keys = [k for k in VALUE_KEYS if any(k in s.values for s in stats)]
    ncols = 1 + len(keys)
    fig, axes = plt.subplots(len(envs), ncols, figsize=(6 * ncols, 4.2 * len(envs)), squeeze=False)
    fig.subplots_adjust(hspace=0.35)  # a row's titles clear of the x labels above them
    colors = dict(zip([s.group for s in stats], _colors(len(stats)), strict=True))
    band_alpha = 0.2 if len(stats) <= 4 else 0.1  # many groups: lighter bands
    for row, env in zip(axes, envs, strict=True):
        for col, key in enumerate(["return", *keys]):
            ax = row[col]
            for s in stats:
                if s.env_id != env:
                    continue
                if key == "return":
                    if s.curve is None:
                        continue
                    grid, (mid, low, high) = s.grid, s.curve
                elif key in s.values:
                    grid, (mid, low, high) = s.values[key]
                else:
                    continue
                label = f"{s.label} (n={len(s.completed)})"
                ax.plot(grid, mid, color=colors[s.group], label=label, lw=1.8)
                ax.fill_between(grid, low, high, color=colors[s.group], alpha=band_alpha, lw=0)
            if key == "eval/overestimation":
                ax.axhline(0.0, color="black", lw=0.8)  # no bias
            if key != "return" and ax.has_data():
                top = max(abs(v) for v in ax.get_ylim())
                if top > 1_000:  # a blown-up group: logarithmic beyond +-100
                    ax.set_yscale("symlog", linthresh=100.0)
            ax.set_title(_env_title(env), fontsize="medium")
            ax.set_xlabel("environment steps")
            ax.set_ylabel(
                VALUE_LABELS.get(key, "greedy evaluation return (IQM, 95% CI)"), fontsize="small"
            )
            ax.grid(alpha=0.3)
        # every group of the row in its legend, also those missing from the last panel
        handles: dict[str, Any] = {}
        for ax in row:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        row[-1].legend(
            list(handles.values()),
            list(handles),
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
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
