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
