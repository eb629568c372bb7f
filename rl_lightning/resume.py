"""Finding, reading and continuing from checkpoints (``resume=<run dir | file | auto>``).

A resumed run continues in its own run dir with the config stored in the checkpoint; overrides
on the resume command line may change only ``MAY_CHANGE_ON_RESUME``. CSV logs continue where the
checkpoint was taken (``continue_csv_log``).
"""

from __future__ import annotations

import csv
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger

from rl_lightning.checkpointing import (
    CHECKPOINT_DIR,
    LAST_NAME,
    RESUME_KEY,
    CheckpointError,
    csv_metrics_file,
)
from rl_lightning.validation import ConfigError

log = logging.getLogger("rl_lightning")

#: config keys a resume may change: they do not change what the run computes
MAY_CHANGE_ON_RESUME = ("resume", "progress_bar", "checkpoint", "fault_injection", "embedding")


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
