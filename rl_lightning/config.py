"""Structured-config schemas: the composed config is checked against these at start.

Groups with one shape (env, buffer, trainer, logger, eval) are typed dataclasses, so an
unknown key or a wrong type fails before anything is built. Groups that choose between
component classes (arch, estimator, exploration, target, loss, optim) are ``_target_`` nodes:
their keys are checked by the constructor they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    num_envs: int = 4
    vectorization_mode: Optional[str] = None  # None: the env's own vector env if any, else sync
    max_episode_steps: Optional[int] = None  # None: the registered time limit
    kwargs: dict[str, Any] = field(default_factory=dict)
    # range covered by tabular bins and linear feature maps (None: the observation space's)
    obs_low: Optional[list[float]] = None
    obs_high: Optional[list[float]] = None


@dataclass
class BufferConfig:
    kind: str = "replay"  # replay | online (no replay: the latest rollout, used once)
    capacity: Optional[int] = 100_000  # time steps, all lanes together (online: derived)
    learning_starts_env_steps: int = 1_000


@dataclass
class EvalConfig:
    every_env_steps: int = 10_000  # 0 disables periodic evaluation
    episodes: int = 10
    final_episodes: int = 10
    seed_offset: int = 1_000_000  # evaluation envs use seed + seed_offset


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: Any = "32-true"


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | tensorboard | none
    project: str = "rl-lightning"
    entity: Optional[str] = None
    mode: str = "offline"  # wandb only: offline | online | disabled
    group: Optional[str] = None  # None: the run's overrides without the seed
    job_type: str = "train"
    tags: list[str] = field(default_factory=list)


@dataclass
class EmbeddingConfig:
    enabled: bool = False  # t-SNE of the penultimate layer at the end of training
    episodes: int = 5  # greedy episodes whose states are embedded
    max_points: int = 2_000  # states kept for t-SNE (a uniform subsample)
    perplexity: float = 30.0  # t-SNE perplexity: the effective number of neighbours


@dataclass
class FaultInjectionConfig:
    fail_at_env_steps: Optional[int] = None  # raise after the burst reaching this env step (tests)


@dataclass
class CheckpointConfig:
    every_env_steps: Optional[int] = 10_000  # period in env steps (0 or None: end and signals only)
    keep_last: int = 2  # periodic checkpoints kept (last.ckpt, written at the end, apart)
    save_buffer: Optional[bool] = None  # None: when the buffer is < 1 GiB (needed for exact resume)


@dataclass
class RunConfig:
    seed: int = 0
    total_env_steps: int = 100_000
    gamma: float = 0.99
    batch_size: int = 128
    env_steps_per_update: float = 1.0  # environment steps collected per gradient update
    updates_per_batch: int = 4  # gradient updates per training_step (amortises overhead)
    interleaved: bool = False  # act env_steps_per_update env steps before each update
    max_grad_norm: Optional[float] = 10.0
    lr_end_factor: float = 1.0  # lr decays linearly to lr * this at total_env_steps
    log_every_updates: int = 200
    log_every_env_steps: int = 1_000
    torch_threads: int = 1
    progress_bar: bool = True
    env: EnvConfig = field(default_factory=EnvConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    fault_injection: FaultInjectionConfig = field(default_factory=FaultInjectionConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    resume: Optional[str] = None  # a run dir, a checkpoint file, or "auto" (None: SLURM auto)
    arch: Any = None
    estimator: Any = None
    exploration: Any = None
    target: Any = None
    loss: Any = None
    optim: Any = None


def register_schemas() -> None:
    """Make ``schema`` available to the defaults list of ``conf/config.yaml``."""
    ConfigStore.instance().store(name="schema", node=RunConfig)
