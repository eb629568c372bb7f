"""fault_injection.fail_at_env_steps: a run fails on purpose and says so in summary.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from rl_lightning.callbacks import InjectedFault
from rl_lightning.summary import REQUIRED_KEYS, read_summary
from rl_lightning.train import train
from rl_lightning.validation import ConfigError, validate_config


def test_injected_fault_fails_the_run(compose_config, tmp_path: Path) -> None:
    overrides = ["debug=fast", "logger=none", "fault_injection.fail_at_env_steps=100"]
    cfg = compose_config(overrides)
    with pytest.raises(InjectedFault, match="fail_at_env_steps=100"):
        train(cfg, run_dir=tmp_path, overrides=overrides)
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed"
    assert set(REQUIRED_KEYS) <= set(summary)
    assert summary["error"].startswith("InjectedFault: ")
    # debug=fast: 64 warm-up env steps, then bursts of 8 updates per 8 * 2 env steps; the first
    # burst end at or past 100 is the third, which collects to 64 + 3 * 16 = 112 env steps (a
    # vector step of 2 lanes may overshoot by 1: an auto-reset step is no env step)
    assert 112 <= summary["env_steps"] < 112 + 2
    assert summary["updates"] == 3 * 8


def test_no_fault_by_default(compose_config) -> None:
    assert compose_config([]).fault_injection.fail_at_env_steps is None


def test_fault_step_is_validated(compose_config) -> None:
    with pytest.raises(ConfigError, match="fault_injection.fail_at_env_steps=-1: must be >= 0"):
        validate_config(compose_config(["fault_injection.fail_at_env_steps=-1"]))
