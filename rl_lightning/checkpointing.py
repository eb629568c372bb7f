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
import subprocess
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from rl_lightning.validation import ConfigError

log = logging.getLogger("rl_lightning")

CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.ckpt"
#: the checkpoint's section written by ``RunCheckpointCallback``
RESUME_KEY = "rl_lightning_resume"
#: ``checkpoint.save_buffer: null`` saves the buffer when its arrays are smaller than this
SAVE_BUFFER_AUTO_LIMIT_BYTES = 1 << 30
#: config keys a resume may change: they do not change what the run computes
MAY_CHANGE_ON_RESUME = ("resume", "progress_bar", "checkpoint", "fault_injection", "embedding")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable (truncated, corrupt) or not one of this project's."""


class TrainingInterrupted(RuntimeError):
    """The run stopped on a signal after writing a checkpoint (``checkpoint``, None if none could
    be written). The process should exit with ``exit_code`` (128 + signal number)."""

    def __init__(self, signum: int, checkpoint: Path | None, requeue: bool) -> None:
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"
        super().__init__(f"stopped by {name}; {where}" + ("; requeued" if requeue else ""))
        self.signum = signum
        self.checkpoint = checkpoint
        self.requeue = requeue

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


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


# -- signals ----------------------------------------------------------------------------------------
class StopSignals:
    """Once installed, SIGTERM and SIGINT -- and SIGUSR1, SLURM's requeue
    signal (``#SBATCH --signal=B:USR1@120``), when ``SLURM_JOB_ID`` is set -- only record the
    signal; the run checks it between training steps, writes a checkpoint and stops
    (``RunCheckpointCallback``). A second SIGINT interrupts at once (KeyboardInterrupt), for a
    training step that takes too long. Handlers are installed only in the main thread;
    ``restore`` puts the previous ones back."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def signals(self) -> list[int]:
        out = [signal.SIGTERM, signal.SIGINT]
        if os.environ.get("SLURM_JOB_ID"):
            out.append(signal.SIGUSR1)
        return [int(s) for s in out]

    @property
    def requeue(self) -> bool:
        """The signal asks for a SLURM requeue (SIGUSR1 under SLURM)."""
        return self.signum == signal.SIGUSR1 and bool(os.environ.get("SLURM_JOB_ID"))

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def reclaim(self) -> None:
        """Be the only handler again. Lightning's trainer adds its own SIGTERM handler when
        training starts (composed with this one); it would end the run with ``SIGTERMException``
        (exit status 0, no checkpoint) at the end of a training step whenever the signal comes
        after this run's check of that step. Lightning restores this handler at teardown."""
        for signum in self._previous:
            signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            log.warning(
                "%s received: stopping after the current training step with a checkpoint%s",
                signal.Signals(signum).name,
                " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "",
            )


def slurm_requeue() -> bool:
    """``scontrol requeue`` this job (array task aware); returns whether it succeeded."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (
        f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if array_job
        else os.environ["SLURM_JOB_ID"]
    )
    try:
        result = subprocess.run(["scontrol", "requeue", job], check=False, capture_output=True)
    except FileNotFoundError:
        log.error("cannot requeue SLURM job %s: scontrol not found", job)
        return False
    if result.returncode != 0:
        log.error("scontrol requeue %s failed: %s", job, result.stderr.decode().strip())
        return False
    log.warning("requeued SLURM job %s: it resumes from the checkpoint in the same run dir", job)
    return True


# -- writing ----------------------------------------------------------------------------------------
def save_atomically(trainer: pl.Trainer, path: Path) -> None:
    """``trainer.save_checkpoint`` to a temporary file beside ``path``, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(str(tmp))
    if not trainer.is_global_zero:
        return
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
        directory: where checkpoints go (``<run_dir>/checkpoints``).
        every_env_steps: period in env steps (0 or None: only on signals and at the end).
        keep_last: periodic checkpoints kept (older ones are deleted).
        stop: the run's signal flags.
        overrides: the run's command-line overrides (stored, for resume checks).
        started_at: ``time.perf_counter()`` when this session started.
        wall_s_before: wall time of the run's earlier sessions (resume).
    """

    def __init__(
        self,
        *,
        directory: Path,
        every_env_steps: int | None,
        keep_last: int,
        stop: StopSignals,
        overrides: Sequence[str],
        started_at: float,
        wall_s_before: float = 0.0,
    ) -> None:
        self.directory = Path(directory)
        self.every_env_steps = int(every_env_steps or 0)
        self.keep_last = int(keep_last)
        self.stop = stop
        self.overrides = list(overrides)
        self.wall_s_before = float(wall_s_before)
        self._started = started_at
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
        collector = trainer.datamodule.collector  # type: ignore[attr-defined]
        wandb_id = next((lg.version for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        checkpoint[RESUME_KEY] = {
            "format": 1,
            "env_steps": int(collector.env_steps),
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
        env_steps = int(dataset.collector.env_steps)
        # the stream's last step is saved as last.ckpt once training ends
        due = self.every_env_steps > 0 and self._next_save <= env_steps < dataset.total_env_steps
        signum = self.stop.signum
        if trainer.world_size > 1:  # ranks count env steps apart: all save and stop together
            strategy = trainer.strategy
            due = strategy.reduce_boolean_decision(due, all=False)
            if strategy.reduce_boolean_decision(signum is not None, all=False):
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


# -- reading and resuming ---------------------------------------------------------------------------
def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` (tensors memory-mapped), or ``CheckpointError`` naming the file
    and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupt): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    missing = [k for k in ("state_dict", "loops", "rl_lightning", RESUME_KEY) if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} cannot resume a run: it has no {', '.join(missing)} "
            "(not written by rl-train's checkpointing)"
        )
    return ckpt


def checkpoints_newest_first(run_dir: Path) -> list[Path]:
    """``last.ckpt`` (written when training ended) first, then periodic ones by env step."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    periodic = sorted(directory.glob("step-*.ckpt"), reverse=True)
    last = directory / LAST_NAME
    return ([last] if last.is_file() else []) + periodic


@dataclass
class ResumePoint:
    """A readable checkpoint to continue from, and the run it belongs to."""

    checkpoint: Path
    run_dir: Path
    config: dict[str, Any]  # the run's resolved config, as stored
    state: dict[str, Any]  # the ``RESUME_KEY`` section


def find_resume_point(resume: str | None, run_dir: Path) -> ResumePoint | None:
    """Where to continue from.

    ``resume`` is a checkpoint file (used as is, or ``CheckpointError``), a run dir (its newest
    readable checkpoint; unreadable newer ones are skipped with a warning naming them), or
    ``"auto"``: ``run_dir``'s newest checkpoint if it has one, else a fresh start. ``None`` is
    a fresh start, except under SLURM (``SLURM_JOB_ID`` set) where it means ``"auto"``: a
    requeued job in the same run dir continues where it stopped.
    """
    if resume is None:
        if not os.environ.get("SLURM_JOB_ID"):
            return None
        resume = "auto"
    if resume == "auto":
        if not checkpoints_newest_first(run_dir):
            return None
        path = Path(run_dir)
    else:
        path = Path(resume).expanduser()
    if path.is_dir():
        candidates = checkpoints_newest_first(path)
        if not candidates:
            raise CheckpointError(f"resume={resume}: no checkpoint in {path / CHECKPOINT_DIR}")
        problems = []
        for candidate in candidates:
            try:
                ckpt = read_checkpoint(candidate)
            except CheckpointError as exc:
                problems.append(str(exc))
                log.warning("%s; falling back to the next newest checkpoint", exc)
                continue
            if problems:
                log.warning("resuming from %s (newer checkpoints were unreadable)", candidate)
            return _resume_point(candidate, ckpt, run_dir=path)
        raise CheckpointError(
            f"resume={resume}: no readable checkpoint in {path / CHECKPOINT_DIR}:\n  "
            + "\n  ".join(problems)
        )
    if not path.exists():
        raise CheckpointError(f"resume={resume}: no such checkpoint file or run dir")
    ckpt = read_checkpoint(path)
    run = path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    return _resume_point(path, ckpt, run_dir=run)


def _resume_point(path: Path, ckpt: dict[str, Any], *, run_dir: Path) -> ResumePoint:
    return ResumePoint(
        checkpoint=path,
        run_dir=run_dir,
        config=ckpt["rl_lightning"]["config"],
        state=ckpt[RESUME_KEY],
    )


def _plain(node: Any) -> Any:
    return (
        OmegaConf.to_container(node, resolve=True)
        if isinstance(node, (DictConfig, ListConfig))
        else node
    )


def resumed_config(cfg: DictConfig, overrides: Sequence[str], point: ResumePoint) -> DictConfig:
    """The run's stored config, with the keys a resume may change (``MAY_CHANGE_ON_RESUME``)
    set as given on the command line. Any other command-line override must agree with the
    stored run (the same job script re-run after a requeue does); one that would change the run
    is a ``ConfigError``: a resumed run computes exactly what the uninterrupted one would."""
    stored = OmegaConf.create(point.config)
    original = set(point.state.get("overrides", []))
    changed = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra."):
            continue
        now = _plain(OmegaConf.select(cfg, key))
        if key.split(".")[0] in MAY_CHANGE_ON_RESUME:
            OmegaConf.update(stored, key, now, force_add=True)
        elif override not in original and now != _plain(OmegaConf.select(stored, key)):
            before = _plain(OmegaConf.select(stored, key))
            changed.append(f"{key}: {before!r} in the run, {now!r} given")
    if changed:
        raise ConfigError(
            f"resume={cfg.resume} continues the run with its own config (from "
            f"{point.checkpoint}); these overrides would change it:\n  " + "\n  ".join(changed)
        )
    stored.resume = cfg.resume
    return stored


def continue_csv_log(loggers: Sequence[Logger], rows: int) -> None:
    """Keep the first ``rows`` data rows of an existing ``metrics.csv`` (those written up to the
    checkpoint) and append to it. Lightning's CSV writer deletes an existing file when created
    (warning that it will), and would rewrite the header; the kept rows are staged in a
    temporary file, put back after the writer exists, and the writer is told the header."""
    path = csv_metrics_file(loggers)
    if path is None:
        return
    header, kept = None, []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            kept = [row for _, row in zip(range(rows), reader, strict=False)]
    staged = path.with_name(f".{path.name}.resume")
    if header is not None:
        with open(staged, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\r\n")
            writer.writerow(header)
            writer.writerows(kept)
    logger = next(lg for lg in loggers if isinstance(lg, CSVLogger))
    with warnings.catch_warnings():  # the deletion is what a resume wants
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists")
        experiment = logger.experiment  # deletes metrics.csv
    if header is not None:
        os.replace(staged, path)
        experiment.metrics_keys = list(header)
