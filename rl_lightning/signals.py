"""Clean stops: SIGTERM / SIGINT (and SLURM's requeue signal) end a run between training steps.

The handlers only record the signal; ``RunCheckpointCallback`` checks it after each training
step, writes a checkpoint and raises ``TrainingInterrupted``, which the entry point turns into
``status: interrupted`` and exit status 128 + the signal number.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("rl_lightning")


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
        """Install the handlers (once: the members of an ensemble share one ``StopSignals``)."""
        if self._previous:
            return
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
