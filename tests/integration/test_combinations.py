"""Every estimator x arch x exploration x target combination composes and trains 300 env steps.

The options are read from ``conf/<group>/*.yaml``: the full product (every estimator x 4
feed-forward archs x 5 explorations x 3 targets, 60 runs per estimator, about 0.4 s each, Hydra composition included)
runs in the default suite, so a new option is tested against every other one as soon as its yaml
exists."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.utils import instantiate

from rl_lightning.train import CONFIG_DIR, train

GROUPS = ("estimator", "arch", "exploration", "target")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


#: image archs take image observations, not CartPole's vector (tests/integration/test_configs.py
#: trains them through experiment=atari_dqn and experiment=minatar_dqn)
IMAGE_ARCHS = ("minatar_cnn", "nature_cnn")
FACTORS = {group: [o for o in options(group) if o not in IMAGE_ARCHS] for group in GROUPS}


#: recurrent archs train on sequences (a few times slower per run): every estimator x
#: exploration pair with arch=gru (targets in turn), and each estimator once with arch=lstm
RECURRENT = ("gru", "lstm")
FULL = [
    dict(zip(GROUPS, combo, strict=True))
    for combo in itertools.product(
        FACTORS["estimator"],
        [a for a in FACTORS["arch"] if a not in RECURRENT],
        FACTORS["exploration"],
        FACTORS["target"],
    )
]
PAIRS = list(itertools.product(FACTORS["estimator"], FACTORS["exploration"]))
FULL += [
    {"estimator": e, "arch": "gru", "exploration": x, "target": FACTORS["target"][i % 3]}
    for i, (e, x) in enumerate(PAIRS)
]
FULL += [
    {"estimator": e, "arch": "lstm", "exploration": FACTORS["exploration"][i % 5], "target": "hard"}
    for i, e in enumerate(FACTORS["estimator"])
]


def case_id(case: dict[str, str]) -> str:
    return "-".join(case[group] for group in GROUPS)


def test_the_options_are_the_documented_ones() -> None:
    # a new estimator joins the product by its yaml alone
    assert {"double_q", "expected_sarsa", "q_learning", "sarsa"} <= set(FACTORS["estimator"])
    assert FACTORS["arch"] == ["gru", "linear", "lstm", "mlp", "mlp_action_in", "tabular"]
    assert len(FACTORS["exploration"]) >= 5
    assert FACTORS["target"] == ["hard", "none", "polyak"]


def train_combination(compose_config, tmp_path: Path, case: dict[str, str]) -> None:
    overrides = ["debug=fast", "logger=none", *(f"{g}={case[g]}" for g in GROUPS)]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["env_steps"] >= 300
    # debug=fast: 64 warm-up env steps, then ceil((300 - 64) / (8 * 2)) = 15 bursts of 8 updates
    assert summary["updates"] == 15 * 8
    # debug=fast replays from 1000 time steps, more than 4 bursts of 8 * 2 env steps: only
    # estimators on-policy at n = 1 (SARSA) are warned about
    # (the value watchdog may also warn: without a target network some of these blow up)
    estimator = instantiate(cfg.estimator)
    warned = any("on-policy estimate" in w for w in summary.get("warnings", []))
    assert warned == estimator.is_on_policy


@pytest.mark.parametrize("case", FULL, ids=case_id)
def test_every_combination_trains(compose_config, tmp_path: Path, case) -> None:
    train_combination(compose_config, tmp_path, case)
