"""The value-bound watchdog on full runs (slow: minutes each; `make test-slow`): the run of
issue 15 (experiment=cartpole_blowup) is stopped within 10,000 env steps of max |Q| crossing
the bound, and the default run and the single-run presets at their own budgets raise no
warning."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rl_lightning.module import TrainingDiverged
from rl_lightning.train import CONFIG_DIR, train
from rl_lightning.train_stats import value_bound

pytestmark = pytest.mark.slow

#: the single-run presets (ablation_* are sweeps; cartpole_blowup blows up on purpose)
PRESETS = sorted(
    p.stem
    for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")
    if not p.stem.startswith("ablation_") and p.stem != "cartpole_blowup"
)


def test_blowup_run_is_stopped_within_10k_env_steps_of_crossing_the_bound(
    compose_config, tmp_path
) -> None:
    run = [
        "experiment=cartpole_blowup",
        "seed=0",
        "logger=csv",
        "progress_bar=false",
        "watchdog.on_value_blowup=stop",
    ]
    with pytest.raises(TrainingDiverged, match="value blow-up"):
        train(compose_config(run), run_dir=tmp_path, overrides=run)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["reason"] == "value-blowup"
    (path,) = tmp_path.glob("**/metrics.csv")
    with path.open() as f:
        logged = [
            (int(r["step"]), float(r["train/q_max"])) for r in csv.DictReader(f) if r["train/q_max"]
        ]
    bound = value_bound(1.0, 0.99)  # CartPole: r = 1
    crossed = next(step for step, q in logged if q == q and q > bound)
    assert summary["diverged_at_env_steps"] - crossed <= 10_000, (crossed, summary)


@pytest.mark.parametrize("preset", [None, *PRESETS])
def test_no_false_alarm(compose_config, tmp_path, preset) -> None:
    run = [*([f"experiment={preset}"] if preset else []), "seed=0", "logger=none"]
    run += ["progress_bar=false", "watchdog.on_value_blowup=stop"]
    summary = train(compose_config(run), run_dir=tmp_path, overrides=run)
    assert summary["status"] == "completed", summary.get("error")
