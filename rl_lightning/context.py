"""The runtime facts of one run that callbacks need and YAML cannot hold.

Callbacks are instantiated from the ``callbacks`` config group; a callback whose constructor
has a ``context`` parameter receives this object (``builders.build_callbacks``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym


@dataclass
class RunContext:
    """What a run's callbacks may need beyond their config.

    Attributes:
        run_dir: the run's output directory (checkpoints, summary.json, pictures).
        seed: the run's seed.
        eval_seed: the seed of every evaluation env (``seed + eval.seed_offset``): each
            evaluation sees the same start states.
        env_id: the environment's id (for titles).
        make_env: ``make_env(num_envs)`` builds a fresh vector env of the run's environment.
        overrides: the run's command-line overrides (stored in checkpoints).
        started_at: ``time.perf_counter()`` when this session started.
        wall_s_before: wall time of the run's earlier sessions (a resumed run).
        stop: the run's signal flags (``signals.StopSignals``).
    """

    run_dir: Path
    seed: int
    eval_seed: int
    env_id: str
    make_env: Callable[[int], gym.vector.VectorEnv]
    overrides: Sequence[str] = field(default_factory=list)
    started_at: float = 0.0
    wall_s_before: float = 0.0
    stop: Any = None
