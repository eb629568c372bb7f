"""The LightningDataModule that owns the environments, the buffer and the stream."""

from __future__ import annotations

import gymnasium as gym
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from rl_lightning.data.buffer import ReplayBuffer
from rl_lightning.data.collector import Policy, VectorCollector
from rl_lightning.data.dataset import ReplayDataset


class ReplayDataModule(pl.LightningDataModule):
    """Vector env -> VectorCollector -> ReplayBuffer -> ReplayDataset -> DataLoader.

    Args:
        env: the training vector env (NEXT_STEP auto-reset).
        policy: behaviour policy ``(obs, env_step) -> actions``.
        capacity: replay capacity in time steps (all lanes together).
        seed: seeds the environments' reset and the buffer's sampler.
        **stream: keyword arguments of ``ReplayDataset`` (batch size, n-step, budgets).
    """

    def __init__(
        self, *, env: gym.vector.VectorEnv, policy: Policy, capacity: int, seed: int, **stream
    ) -> None:
        super().__init__()
        obs_space = env.single_observation_space
        assert obs_space.shape is not None and obs_space.dtype is not None
        self.buffer = ReplayBuffer(
            capacity=capacity,
            num_envs=env.num_envs,
            obs_shape=obs_space.shape,
            obs_dtype=obs_space.dtype,
            seed=seed + 1,
        )
        self.collector = VectorCollector(env, policy, self.buffer, seed=seed)
        self.dataset = ReplayDataset(collector=self.collector, buffer=self.buffer, **stream)

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the dataset already yields whole batches; acting must stay in the
        # training process (it shares the Q-network), so no worker processes.
        return DataLoader(self.dataset, batch_size=None, num_workers=0)
