"""Rainbow's settings: each file of conf/ablation/rainbow/ composes to exactly the components its
header names (the name rl-report shows is the truth), and trains a few hundred env steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_lightning.train import CONFIG_DIR, train

SETTINGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "ablation" / "rainbow").glob("*.yaml"))
COMPONENTS = ("double", "prioritized", "dueling", "nstep", "c51", "noisy")


def components_of(cfg) -> set[str]:
    """The Rainbow components a composed config has, read off the classes and values."""
    has = {
        "double": cfg.estimator._target_.endswith("DoubleQLearning"),
        "prioritized": cfg.buffer.sampler._target_.endswith("PrioritizedSampler"),
        "dueling": bool(cfg.arch.head.get("dueling", False)),
        "nstep": cfg.estimator.n_step > 1,
        "c51": cfg.arch.head._target_.endswith("CategoricalHead"),
        "noisy": cfg.exploration._target_.endswith("NoisyExploration"),
    }
    return {name for name, on in has.items() if on}


def named_components(setting: str) -> set[str]:
    """The components listed in the setting file's header (``# Components: a, b.``)."""
    text = (Path(CONFIG_DIR) / "ablation" / "rainbow" / f"{setting}.yaml").read_text()
    line = next(s for s in text.splitlines() if s.startswith("# Components:"))
    names = line.removeprefix("# Components:").strip().rstrip(".")
    return set() if names.startswith("none") else {n.strip() for n in names.split(",")}


def test_the_sweeps_cover_remove_one_and_add_one() -> None:
    assert set(SETTINGS) == {
        "rainbow",
        "dqn",
        *(f"minus_{c}" for c in COMPONENTS),
        *(f"plus_{c}" for c in COMPONENTS),
    }


@pytest.mark.parametrize("setting", SETTINGS)
def test_each_setting_has_the_components_it_names_and_trains(
    compose_config, tmp_path: Path, setting: str
) -> None:
    expected = {
        "rainbow": set(COMPONENTS),
        "dqn": set(),
        **{f"minus_{c}": set(COMPONENTS) - {c} for c in COMPONENTS},
        **{f"plus_{c}": {c} for c in COMPONENTS},
    }[setting]
    overrides = ["experiment=rainbow", f"ablation/rainbow={setting}", "debug=fast", "logger=none"]
    cfg = compose_config(overrides)
    assert components_of(cfg) == expected == named_components(setting)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["env_steps"] >= 300


def test_rainbow_on_acrobot_has_the_envs_support(compose_config) -> None:
    # the C51 support is env.reward_range / (1 - gamma): Acrobot's -1 per step at gamma 0.98
    cfg = compose_config(["experiment=rainbow", "ablation/rainbow_env=acrobot"])
    assert cfg.env.id == "Acrobot-v1" and cfg.total_env_steps == 100_000
    assert (cfg.env.reward_range[0] / (1 - cfg.gamma), cfg.env.reward_range[1]) == pytest.approx(
        (-50.0, 0.0)
    )


def test_rainbow_on_minatar_has_revisiting_rainbows_settings(
    compose_config, tmp_path: Path
) -> None:
    # JohanSamir/revisiting_rainbow Configs/rainbow_breakout.gin; the support is [0, 100] here
    overrides = [
        "experiment=rainbow",
        "ablation/rainbow_env=minatar",
        "total_env_steps=1500",
        "eval.every_env_steps=0",
        "eval.final_episodes=1",
        "logger=none",
        "progress_bar=false",
    ]
    cfg = compose_config(overrides)
    assert cfg.env.id == "MinAtar/Breakout-v1" and cfg.total_env_steps == 1500
    assert (cfg.gamma, cfg.batch_size, cfg.env_steps_per_update) == (0.99, 32, 4)
    assert (cfg.optim.lr, cfg.optim.eps, cfg.target.every_updates) == (1e-4, 3.125e-4, 1000)
    assert cfg.estimator.n_step == 3 and cfg.arch.head.atoms == 51
    assert cfg.env.reward_range[1] / (1 - cfg.gamma) == pytest.approx(100.0)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["updates"] == (1500 - 1000) // 4
