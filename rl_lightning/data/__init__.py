"""Data path: vector env -> collector -> replay buffer -> dataset -> datamodule."""

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.collector import VectorCollector
from rl_lightning.data.datamodule import ReplayDataModule
from rl_lightning.data.dataset import ReplayDataset

__all__ = [
    "ReplayBuffer",
    "ReplayDataModule",
    "ReplayDataset",
    "TransitionBatch",
    "VectorCollector",
]
