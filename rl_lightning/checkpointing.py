"""Periodic checkpoints, exact resume, and clean stops on SIGTERM / SIGINT / SLURM's requeue signal.

A checkpoint is Lightning's (``trainer.save_checkpoint``: model, target network, optimizer, loop
progress, callback states) plus what this project adds through Lightning's hooks: the data side
(``ReplayDataModule.state_dict``: environments, episodes in progress, replay buffer, the sampler's
and the actor's generators, where the stream stands), the module's counters and statistics not
yet logged, and this module's section ``RESUME_KEY``: the global python / numpy / torch
generators, the W&B run id, the number of CSV metric rows written, and the run's overrides.
Everything is a tensor or a plain Python value, so a checkpoint loads with ``weights_only=True``
(the environments' state is a pickled byte string inside it, unpickled only when resuming).

Checkpoints are written only between training steps -- a clean point of the data stream, after
the step's updates, evaluation and logs -- to a temporary file in the same directory, flushed to
disk and renamed, so a crash never leaves half a checkpoint under a checkpoint's name.
"""

from __future__ import annotations

import csv
import logging
import os
import random
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from rl_lightning.context import RunContext
from rl_lightning.signals import StopSignals, TrainingInterrupted

log = logging.getLogger("rl_lightning")

CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.ckpt"
#: the checkpoint's section written by ``RunCheckpointCallback``
RESUME_KEY = "rl_lightning_resume"
#: ``checkpoint.save_buffer: null`` saves the buffer when its arrays are smaller than this
SAVE_BUFFER_AUTO_LIMIT_BYTES = 1 << 30


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable (truncated, corrupt) or not one of this project's."""


def periodic_checkpoint_name(env_steps: int) -> str:
    """``step-000000012000.ckpt``: zero-padded, so names sort like env steps."""
    return f"step-{env_steps:012d}.ckpt"


def buffer_checkpoint_choice(save_buffer: bool | None, *, online: bool, nbytes: int) -> bool:
    """Whether checkpoints hold the replay buffer: as configured, or (``None``) when it is
    smaller than ``SAVE_BUFFER_AUTO_LIMIT_BYTES``; an online buffer (one rollout) always."""
    if online:
        return True
    if save_buffer is None:
        return nbytes < SAVE_BUFFER_AUTO_LIMIT_BYTES
    return bool(save_buffer)


# -- the global generators ------------------------------------------------------------------------
def global_rng_states() -> dict[str, Any]:
    """python, numpy and torch (CPU, and CUDA when in use) generator states, as plain values."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global one is the point
    assert isinstance(np_state, dict)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_global_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np_state = dict(states["numpy"])
    np_state["state"] = dict(np_state["state"], key=np.asarray(np_state["state"]["key"], np.uint32))
    np.random.set_state(np_state)  # noqa: NPY002
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# -- writing ----------------------------------------------------------------------------------------
def rank_state_path(checkpoint: Path, rank: int) -> Path:
    """Where DDP rank ``rank`` > 0 keeps its own data side of ``checkpoint``:
    ``<checkpoint>.rank<k>`` (rank 0's is inside the checkpoint)."""
    return checkpoint.with_name(f"{checkpoint.name}.rank{rank}")


def save_atomically(trainer: pl.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, fsync, rename.

    Under DDP each rank k > 0 first writes its own data side (``ReplayDataModule.state_dict``:
    envs, buffer, generators) and its global generators to ``rank_state_path(path, k)``, and
    all ranks wait for each other before rank 0 writes ``path``: a checkpoint that exists has
    every rank's state beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if trainer.world_size > 1:
        if not trainer.is_global_zero:
            state = {"datamodule": trainer.datamodule.state_dict(), "rng": global_rng_states()}  # type: ignore[attr-defined]
            _write_atomically(path=rank_state_path(path, trainer.global_rank), state=state)
        trainer.strategy.barrier("rank states written")
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(str(tmp))
    if trainer.is_global_zero:
        _commit(tmp, path)


def _write_atomically(*, path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    _commit(tmp, path)


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it to ``path``, fsync the directory."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def csv_metrics_file(loggers: Sequence[Logger]) -> Path | None:
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            return Path(logger.log_dir) / "metrics.csv"
    return None


def count_csv_rows(path: Path | None) -> int:
    if path is None or not path.is_file():
        return 0
    with open(path, newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


class RunCheckpointCallback(pl.Callback):
    """Writes ``step-<env steps>.ckpt`` every ``every_env_steps`` env steps (0: never) keeping
    the newest ``keep_last``, and stops the run cleanly on a signal (``StopSignals``).

    Both happen in ``on_train_batch_end``, after the training step's updates, evaluation and
    logs: a checkpoint is a clean point of the data stream. Before writing, the module checks
    that no update since the last check diverged (``QLearningModule.check_finite``), so a
    checkpoint never holds non-finite weights. Logs are flushed first, and the checkpoint
    records how many CSV metric rows exist: a resume drops rows written after it.

    Args:
        context: the run's facts: checkpoints go to ``<run_dir>/checkpoints``; the signal
            flags, overrides, start time and earlier sessions' wall time come from it.
        every_env_steps: period in env steps (0 or None: only on signals and at the end).
        keep_last: periodic checkpoints kept (older ones are deleted).
    """

    def __init__(self, *, context: RunContext, every_env_steps: int | None, keep_last: int) -> None:
        self.directory = Path(context.run_dir) / CHECKPOINT_DIR
        self.every_env_steps = int(every_env_steps or 0)
        self.keep_last = int(keep_last)
        self.stop: StopSignals = context.stop
        self.overrides = list(context.overrides)
        self.wall_s_before = float(context.wall_s_before)
        self._started = context.started_at
        self._next_save = self.every_env_steps
        self._rng_to_restore: dict[str, Any] | None = None
        self._csv_rows = 0

    @property
    def wall_s(self) -> float:
        """Wall time of the whole run so far, earlier sessions included."""
        return self.wall_s_before + time.perf_counter() - self._started

    # -- Lightning's state hooks -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"next_save": self._next_save, "every_env_steps": self.every_env_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("every_env_steps", self.every_env_steps) == self.every_env_steps:
            self._next_save = int(state_dict["next_save"])
        # else a resume changed the period: the next step saves, the schedule follows from there

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        dataset = trainer.datamodule.dataset  # type: ignore[attr-defined]
        wandb_id = next((lg.version for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        checkpoint[RESUME_KEY] = {
            "format": 1,
            "env_steps": int(dataset.env_steps),  # all ranks' (ReplayDataset.env_steps)
            "updates": int(getattr(pl_module, "updates", 0)),
            "rng": global_rng_states(),
            "wandb_id": wandb_id,
            "csv_rows": self._csv_rows,
            "overrides": self.overrides,
            "wall_s": self.wall_s,
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._rng_to_restore = checkpoint[RESUME_KEY]["rng"]
        if trainer.global_rank > 0:  # DDP: this rank's own data side and generators
            assert trainer.ckpt_path is not None
            path = rank_state_path(Path(trainer.ckpt_path), trainer.global_rank)
            if not path.is_file():
                raise CheckpointError(
                    f"{trainer.ckpt_path} has no state for DDP rank {trainer.global_rank} "
                    f"({path.name}): it was written by a run with fewer ranks"
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            trainer.datamodule.load_state_dict(state["datamodule"])  # type: ignore[attr-defined]
            self._rng_to_restore = state["rng"]

    def on_train_batch_start(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # restored here, not on load: Lightning draws a DataLoader seed from the torch generator
        # when it creates the iterator, after loading and before the first training step
        if self._rng_to_restore is not None:
            set_global_rng_states(self._rng_to_restore)
            self._rng_to_restore = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop.reclaim()  # after Lightning registered its handlers

    # -- saving ----------------------------------------------------------------------------------
    def on_train_batch_end(  # type: ignore[override]
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        dataset = trainer.datamodule.dataset  # type: ignore[attr-defined]
        env_steps = int(dataset.env_steps)  # all ranks' env steps: the same on every rank
        # the stream's last step is saved as last.ckpt once training ends
        due = self.every_env_steps > 0 and self._next_save <= env_steps < dataset.total_env_steps
        signum = self.stop.signum
        # DDP: ``due`` is the same on every rank (all ranks' env steps); a signal may reach one
        # rank only, so that decision is shared: all ranks save and stop together
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(
            signum is not None, all=False
        ):
            signum = signum or signal.SIGTERM
        if not (due or signum is not None):
            return
        pl_module.check_finite()  # raises TrainingDiverged: never checkpoint non-finite weights
        if due:
            while self._next_save <= env_steps:
                self._next_save += self.every_env_steps
        path = self.save(trainer, self.directory / periodic_checkpoint_name(env_steps))
        self._prune()
        signum = self.stop.signum  # also one that came while saving: this checkpoint serves it
        if signum is not None:
            raise TrainingInterrupted(signum, path, self.stop.requeue)

    def save(self, trainer: pl.Trainer, path: Path) -> Path:
        """Flush the loggers, then write a checkpoint at ``path`` atomically."""
        for logger in trainer.loggers:
            logger.save()
        self._csv_rows = count_csv_rows(csv_metrics_file(trainer.loggers))
        save_atomically(trainer, path)
        return path

    def _prune(self) -> None:
        periodic = sorted(self.directory.glob("step-*.ckpt"))
        for old in periodic[: max(0, len(periodic) - self.keep_last)]:
            old.unlink(missing_ok=True)
            for rank_state in self.directory.glob(f"{old.name}.rank*"):  # DDP ranks' data sides
                rank_state.unlink(missing_ok=True)
