"""The learning diagnostics through ``rl_lightning.train.train``: train/grad_norm and
train/q_max in the CSV metrics, eval/v_initial and eval/overestimation in the CSV metrics and in
summary.json's eval_history, the collector's max |r|, and the value watchdog's stop."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from rl_lightning.module import TrainingDiverged
from rl_lightning.train import train

FAST = ["debug=fast", "logger=csv", "progress_bar=false"]


def metric_columns(run_dir: Path) -> dict[str, list[float]]:
    (path,) = run_dir.glob("**/metrics.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows if r[k] != ""] for k in rows[0]}


def test_diagnostic_metrics_are_logged_and_summarised(compose_config, tmp_path) -> None:
    runs = []
    summary = train(compose_config(FAST), run_dir=tmp_path, overrides=FAST, on_built=runs.append)
    assert summary["status"] == "completed"
    assert runs[0].datamodule.collector.max_abs_reward == 1.0  # CartPole: +1 per step
    assert summary["eval_history"], summary
    for entry in summary["eval_history"]:
        assert math.isfinite(entry["eval/v_initial"])
        assert entry["eval/overestimation"] is None or math.isfinite(entry["eval/overestimation"])
    assert math.isfinite(summary["eval_v_initial"])
    columns = metric_columns(tmp_path)
    for key in ("train/grad_norm", "train/q_max", "eval/v_initial", "eval/overestimation"):
        assert columns.get(key), key
    assert all(g > 0 for g in columns["train/grad_norm"])
    # max |Q| bounds the mean Q logged with it
    assert all(
        m >= abs(q) for m, q in zip(columns["train/q_max"], columns["train/q_mean"], strict=True)
    )


def test_value_watchdog_stop_ends_the_run_diverged(compose_config, tmp_path) -> None:
    overrides = [*FAST, "watchdog.on_value_blowup=stop"]

    def hair_trigger(run) -> None:  # any |Q| above 1e-6 x the bound 1 / (1 - 0.98) = 50
        run.module.watchdog.margin = 1e-6

    with pytest.raises(TrainingDiverged, match="value blow-up"):
        train(
            compose_config(overrides), run_dir=tmp_path, overrides=overrides, on_built=hair_trigger
        )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["reason"] == "value-blowup", summary
    assert "value blow-up" in summary["error"]
    assert summary["diverged_at_env_steps"] > 0
