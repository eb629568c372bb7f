"""A check that DDP ranks stay one learner: the same online and target weights on every rank."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from rl_lightning.context import RunContext
from rl_lightning.distributed import gather_counts
from rl_lightning.module import QLearningModule


class RanksDriftedApart(RuntimeError):
    """DDP ranks hold different weights: their gradients were not averaged alike."""


def fingerprint(tensors: list[torch.Tensor] | list[np.ndarray]) -> int:
    """A signed 64-bit digest (BLAKE2b) of the tensors' bytes: equal iff bitwise equal (barring
    a 2^-64 collision)."""
    digest = hashlib.blake2b(digest_size=8)
    for t in tensors:
        array = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t
        digest.update(np.ascontiguousarray(array).tobytes())
    return int.from_bytes(digest.digest(), "little", signed=True)


def _weights(network: nn.Module | None) -> list[torch.Tensor]:
    return [] if network is None else list(network.state_dict().values())


class DDPConsistencyCheck(pl.Callback):
    """Every ``every_training_steps`` training steps, compares the fingerprints of the online
    and the target network's weights across ranks (one ``all_gather`` each) and raises
    ``RanksDriftedApart`` if they differ: DDP averages gradients, so every rank must hold the
    same weights bit for bit after every update. Off by default (``callbacks.ddp_check.enabled``);
    does nothing in a single process.

    With ``record: true`` rank 0 appends one JSON line per check to ``<run_dir>/ddp_check.jsonl``:
    the update, every rank's env steps, and every rank's fingerprints of the online weights, the
    target weights and the observations in its replay buffer (which differ: each rank acts in
    its own envs).
    """

    def __init__(
        self, *, context: RunContext, every_training_steps: int = 1, record: bool = False
    ) -> None:
        self.every = max(1, int(every_training_steps))
        self.path = Path(context.run_dir) / "ddp_check.jsonl" if record else None

    def on_train_batch_end(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: QLearningModule, outputs, batch, batch_idx: int
    ) -> None:
        if trainer.world_size == 1 or (batch_idx + 1) % self.every:
            return
        online = gather_counts(fingerprint(_weights(pl_module.q_network)))
        target = gather_counts(fingerprint(_weights(pl_module.target_network)))
        if self.path is not None:
            buffer = trainer.datamodule.buffer  # type: ignore[attr-defined]
            record: dict[str, Any] = {
                "updates": pl_module.updates,
                "env_steps": pl_module.env_steps,
                "env_steps_by_rank": gather_counts(trainer.datamodule.collector.env_steps),  # type: ignore[attr-defined]
                "online": online,
                "target": target,
                "buffer_obs": gather_counts(fingerprint([buffer.obs])),
            }
            if trainer.is_global_zero:
                with open(self.path, "a") as f:
                    f.write(json.dumps(record) + "\n")
        if len(set(online)) > 1 or len(set(target)) > 1:
            raise RanksDriftedApart(
                f"after update {pl_module.updates} the ranks' weights differ (online "
                f"fingerprints {online}, target {target})"
            )
