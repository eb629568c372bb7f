"""The LightningDataModule that owns the environments, the buffer, the sampler and the stream."""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from rl_lightning.data.buffer import ReplayBuffer
from rl_lightning.data.collector import Policy, VectorCollector
from rl_lightning.data.dataset import ReplayDataset
from rl_lightning.data.samplers import Sampler, UniformSampler
from rl_lightning.envs.wrappers import find_stack

log = logging.getLogger("rl_lightning")


class ReplayDataModule(pl.LightningDataModule):
    """Vector env -> VectorCollector -> ReplayBuffer -> (sampler) ReplayDataset -> DataLoader.

    With a frame stack in the env (``StackObservations``) the buffer stores single observations
    and rebuilds the stacks when sampling, with the wrapper's ``StackLayout``.

    Args:
        env: the training vector env (NEXT_STEP auto-reset).
        policy: behaviour policy ``(obs, env_step) -> actions``.
        capacity: replay capacity in time steps (all lanes together).
        seed: seeds the environments' reset (and, with ``sampler=None``, the sampler: seed + 1).
        sampler: which stored transitions each update learns from (``buffer.sampler``);
            None: ``UniformSampler(seed=seed + 1)``.
        save_buffer: whether checkpoints hold the buffer's contents (needed for exact resume).
        **stream: keyword arguments of ``ReplayDataset`` (batch size, n-step, budgets).

    Its ``state_dict`` (which Lightning stores in every checkpoint and gives back to
    ``load_state_dict`` on ``trainer.fit(ckpt_path=...)``, before the first item is drawn) holds
    the whole data side of a run: environments, episodes in progress, buffer, the sampler's
    state (generator, counters) and the policy's generator, and where the stream stands.
    Lightning does not restore an ``IterableDataset`` by itself; this does.
    """

    def __init__(
        self,
        *,
        env: gym.vector.VectorEnv,
        policy: Policy,
        capacity: int,
        seed: int,
        sampler: Sampler | None = None,
        save_buffer: bool = True,
        **stream,
    ) -> None:
        super().__init__()
        self.save_buffer = save_buffer
        stack = find_stack(env)  # a frame stack: the buffer stores single frames
        obs_space = env.single_observation_space if stack is None else stack.frame_space
        assert obs_space.shape is not None and obs_space.dtype is not None
        self.buffer = ReplayBuffer(
            capacity=capacity,
            num_envs=env.num_envs,
            obs_shape=obs_space.shape,
            obs_dtype=obs_space.dtype,
            stack=None if stack is None else stack.layout,
        )
        self.sampler = UniformSampler(seed=seed + 1) if sampler is None else sampler
        self.collector = VectorCollector(env, policy, self.buffer, seed=seed)
        self.dataset = ReplayDataset(
            collector=self.collector, buffer=self.buffer, sampler=self.sampler, **stream
        )

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the dataset already yields whole batches; acting must stay in the
        # training process (it shares the Q-network), so no worker processes.
        return DataLoader(self.dataset, batch_size=None, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        """Numpy arrays become tensors: checkpoints stay loadable with ``weights_only=True``."""
        state = {
            "buffer": self.buffer.state_dict(include_arrays=self.save_buffer),
            "sampler": self.sampler.state_dict(include_arrays=self.save_buffer),
            "collector": self.collector.state_dict(),
            "dataset": self.dataset.state_dict(),
        }
        if state["collector"]["env"] is None:
            log.warning(
                "the environment's state cannot be pickled (%s): the checkpoint resumes with new "
                "episodes, not bit-identically",
                type(self.collector.env).__name__,
            )
        return _map_arrays(state, torch.from_numpy)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = _map_arrays(state_dict, lambda t: t.numpy())
        buffer_restored = self.buffer.load_state_dict(state["buffer"])
        # checkpoints written before the sampler was split off keep its state in the buffer's
        sampler_state = state["sampler"] if "sampler" in state else state["buffer"]
        self.sampler.load_state_dict(sampler_state, buffer_restored=buffer_restored)
        if not self.collector.load_state_dict(state["collector"]):
            log.warning("the checkpoint has no environment state: episodes in progress were cut")
        self.dataset.load_state_dict(state["dataset"], buffer_restored=buffer_restored)
        if not buffer_restored:
            log.warning(
                "the checkpoint has no replay buffer (checkpoint.save_buffer=false): refilling it "
                "with %d env steps of the current policy before learning goes on",
                self.dataset.learning_starts_env_steps,
            )


def _map_arrays(state: Any, fn: Any) -> Any:
    """``state`` with ``fn`` applied to every numpy array (or tensor) in nested dicts/lists."""
    if isinstance(state, dict):
        return {k: _map_arrays(v, fn) for k, v in state.items()}
    if isinstance(state, list):
        return [_map_arrays(v, fn) for v in state]
    if isinstance(state, (np.ndarray, torch.Tensor)):
        return fn(state)
    return state
