"""Data path: vector env -> collector -> replay buffer -> sampler -> dataset -> datamodule."""

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.collector import VectorCollector
from rl_lightning.data.datamodule import ReplayDataModule
from rl_lightning.data.dataset import ReplayDataset
from rl_lightning.data.prioritized import PrioritizedSampler
from rl_lightning.data.samplers import OnlineSampler, Sampler, UniformSampler, sampler_class
from rl_lightning.data.sequences import SequenceBatch, SequenceSampler

__all__ = [
    "OnlineSampler",
    "PrioritizedSampler",
    "ReplayBuffer",
    "ReplayDataModule",
    "ReplayDataset",
    "Sampler",
    "SequenceBatch",
    "SequenceSampler",
    "TransitionBatch",
    "UniformSampler",
    "VectorCollector",
    "sampler_class",
]
