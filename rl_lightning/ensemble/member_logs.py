"""Each ensemble member's log messages in its own run dir's ``train.log``, as a single run's.

A single run's messages (checkpoint plan, the value watchdog's warning, resume) go to its job's
``train.log`` through Hydra's job logging. An ensemble's members share one process and one
``rl_lightning`` logger, so the ensemble marks whose work is running (``member``, a context
variable set around each member's building, acting, callbacks and log) and ``routed`` sends each
message to that member's file, and to the console with ``[seed K]`` in front.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

#: the member whose work is running: (its run dir, its seed)
_current: ContextVar[tuple[Path, int] | None] = ContextVar("ensemble_member", default=None)
FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


@contextlib.contextmanager
def member(run_dir: Path, seed: int) -> Iterator[None]:
    """Messages logged inside belong to the member with ``run_dir`` and ``seed``."""
    token = _current.set((Path(run_dir), int(seed)))
    try:
        yield
    finally:
        _current.reset(token)


class _ToMemberFile(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        current = _current.get()
        if current is None:
            return
        current[0].mkdir(parents=True, exist_ok=True)
        with open(current[0] / "train.log", "a") as sink:
            sink.write(self.format(record) + "\n")


class _SeedPrefix(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = _current.get()
        if current is not None and not getattr(record, "member_marked", False):
            record.msg, record.args = f"[seed {current[1]}] {record.getMessage()}", None
            record.member_marked = True
        return True


@contextlib.contextmanager
def routed(logger: logging.Logger) -> Iterator[None]:
    """While inside, ``logger``'s messages of a member go to its ``train.log`` as well."""
    handler, prefix = _ToMemberFile(), _SeedPrefix()
    logger.addHandler(handler)
    logger.addFilter(prefix)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(prefix)
