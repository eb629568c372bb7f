"""What an ensemble member's callbacks read of a Lightning Trainer (``MemberTrainer``).

The members of an ensemble are driven by a plain loop (``ensemble/run.py``), not by a Trainer;
each member's callbacks -- evaluation, rollout metrics, checkpoints -- get a ``MemberTrainer``
with the parts of a Trainer they use: its datamodule, loggers and callbacks, a one-process
strategy, and ``save_checkpoint`` in Lightning's layout (so ``rl-eval`` and resume read a
member's checkpoint like a single run's).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from rl_lightning.data import ReplayDataModule
from rl_lightning.ensemble.learner import EnsembleLearner
from rl_lightning.module import QLearningModule


class _OneProcess:
    """The strategy of a single process, as the callbacks ask it (``RunCheckpointCallback``)."""

    def barrier(self, name: str | None = None) -> None:
        return None

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002
        return decision


class MemberTrainer:
    """What a member's callbacks read of a Lightning Trainer, for one ensemble member."""

    is_global_zero = True
    world_size = 1
    global_rank = 0
    ckpt_path = None

    def __init__(
        self,
        member: int,
        learner: EnsembleLearner,
        module: QLearningModule,
        datamodule: ReplayDataModule,
        loggers: list[Any],
        callbacks: list[pl.Callback],
    ) -> None:
        self.member = member
        self.learner = learner
        self.module = module
        self.datamodule = datamodule
        self.loggers = loggers
        self.callbacks = callbacks
        self.strategy = _OneProcess()

    def call(self, hook: str, *args: Any) -> None:
        """Run ``hook`` of every callback of this member."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, self.module, *args)

    def save_checkpoint(self, path: str) -> None:
        """A checkpoint of this member in Lightning's layout (``rl-eval`` reads it): its
        networks, its slice of the shared optimizer's state, its callbacks' and data side's
        state, and what the module and callbacks add through their hooks."""
        module = self.module
        checkpoint: dict[str, Any] = {
            "epoch": 0,
            "global_step": module.updates,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "loops": {},
            "optimizer_states": [self.learner.member_optimizer_state(self.member)],
            "lr_schedulers": [],
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks},
            type(self.datamodule).__qualname__: self.datamodule.state_dict(),
        }
        module.on_save_checkpoint(checkpoint)
        self.call("on_save_checkpoint", checkpoint)
        torch.save(checkpoint, path)
