"""Shared fixtures: one torch thread, offline W&B, a clean Hydra between compose calls."""

from __future__ import annotations

import os

# before torch is imported anywhere: small networks run fastest (and most reproducibly) on one
# thread, and W&B must never ask for an account or reach the network
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from collections.abc import Callable, Iterator  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def clear_global_hydra() -> Iterator[None]:
    """Hydra keeps a process-wide singleton: clear it before and after every test."""
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


@pytest.fixture
def compose_config() -> Callable[[list[str]], DictConfig]:
    """``compose_config(overrides)`` -> the real ``conf/config.yaml`` composed with overrides."""
    from rl_lightning.train import CONFIG_DIR

    def _compose(overrides: list[str]) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


@pytest.fixture
def crash_and_resume(compose_config, tmp_path) -> Callable[..., tuple[dict, dict, dict, dict]]:
    """``crash_and_resume(base, fail_at)``: run ``base`` uninterrupted (``tmp_path/reference``),
    run it again with a fault injected after the burst reaching env step ``fail_at``
    (``tmp_path/run``: status failed), resume that run, and check the resumed run ends exactly as
    the uninterrupted one: the same counters, evaluation returns and history, and bit-identical
    final weights. Returns (reference summary, resumed summary, reference last.ckpt, resumed
    last.ckpt) for the caller's own checks of the state."""
    from rl_lightning.callbacks import InjectedFault
    from rl_lightning.summary import read_summary
    from rl_lightning.train import CHECKPOINT_NAME, train

    def _run(base: list[str], fail_at: int) -> tuple[dict, dict, dict, dict]:
        reference = train(compose_config(base), run_dir=tmp_path / "reference", overrides=base)
        crashing = [*base, f"fault_injection.fail_at_env_steps={fail_at}"]
        with pytest.raises(InjectedFault):
            train(compose_config(crashing), run_dir=tmp_path / "run", overrides=crashing)
        assert read_summary(tmp_path / "run")["status"] == "failed"
        again = [f"resume={tmp_path / 'run'}", "fault_injection.fail_at_env_steps=null"]
        resumed = train(compose_config(again), run_dir=tmp_path / "hydra_output", overrides=again)
        assert resumed["status"] == "completed" and resumed["resumed_from"]
        figures = ("env_steps", "updates", "episodes", "eval_returns", "eval_history")
        assert {k: resumed[k] for k in figures} == {k: reference[k] for k in figures}
        a = torch.load(tmp_path / "reference" / CHECKPOINT_NAME, weights_only=True)
        b = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
        for key, tensor in a["state_dict"].items():
            assert torch.equal(tensor, b["state_dict"][key]), key
        return reference, resumed, a, b

    return _run
