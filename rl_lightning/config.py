"""Structured-config schemas: the composed config is checked against these at start.

The schema holds the *types* of the config; the *values* live in YAML only (``conf/config.yaml``
and the group options), so there is one source of truth for every default. A field is
``MISSING`` here when YAML always sets it; a field only some options set (``env.obs_low``,
``logger.project``, ...) has a neutral default (``None``, empty) that no option contradicts.

Groups with one shape (env, buffer, logger, eval, ...) are typed dataclasses, so an unknown key
or a wrong type fails before anything is built. Groups that choose between component classes
(arch, estimator, exploration, target, loss, optim, trainer, callbacks) are ``_target_`` nodes:
their keys are checked against the constructor they name (``validation.unknown_key_problems``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


def minatar_id(game: str) -> str:
    """``${minatar_id:space_invaders}`` -> ``SpaceInvaders``: MinAtar's game names as its
    gymnasium ids spell them (``conf/env/minatar.yaml``)."""
    return "".join(part.capitalize() for part in str(game).split("_"))


# registered on import: every config is resolved after this module is loaded (train, rl-eval,
# rl-embed and the checkpoint loaders all import it through validation or train)
if not OmegaConf.has_resolver("minatar_id"):
    OmegaConf.register_new_resolver("minatar_id", minatar_id)


@dataclass
class EnvConfig:
    id: str = MISSING
    num_envs: int = MISSING
    vectorization_mode: Optional[str] = None  # None: the env's own vector env if any, else sync
    max_episode_steps: Optional[int] = None  # None: the registered time limit
    kwargs: dict[str, Any] = field(default_factory=dict)
    # range covered by tabular bins and linear feature maps (None: the observation space's)
    obs_low: Optional[list[float]] = None
    obs_high: Optional[list[float]] = None
    # [low, high] of one step's reward (None: unknown): a distributional support's default
    reward_range: Optional[list[float]] = None
    # partial observability (rl_lightning/envs/wrappers.py), applied in this order:
    mask_indices: list[int] = field(default_factory=list)  # observation entries set to 0
    flicker_p: float = 0.0  # probability per lane and step that the whole observation is 0
    frame_stack: int = 1  # N: the agent sees its lane's last N observations, (N, *obs_shape)
    frame_stack_padding: str = "zeros"  # zeros | first: the slots before the episode's start
    stack_actions: bool = False  # also the one-hot action before each (1-D obs: flat vector)
    # how the base env is built: gymnasium (gym.make_vec(id)) | atari (rl_lightning/envs/atari.py)
    suite: str = "gymnasium"
    game: Optional[str] = None  # atari: Pong, Breakout, BeamRider ...
    protocol: Optional[str] = None  # atari: nature | v5
    # what the learner sees (rl_lightning/envs/signals.py); None: the Atari protocol's, else off
    clip_rewards: Optional[bool] = None  # learn from sign(r); reported returns stay unclipped
    life_loss_terminal: Optional[bool] = None  # a lost life ends the learner's episode


@dataclass
class BufferConfig:
    # a `_target_` node naming a rl_lightning.data.Sampler: UniformSampler (replay) or
    # OnlineSampler (no replay: the latest rollout, used once); whether a run is online follows
    sampler: Any = MISSING
    capacity: Optional[int] = None  # time steps, all lanes together (online: derived)
    learning_starts_env_steps: int = MISSING


@dataclass
class EvalConfig:
    every_env_steps: int = MISSING
    episodes: int = MISSING
    final_episodes: int = MISSING
    seed_offset: int = MISSING
    epsilon: float = 0.0  # random-action probability when evaluating (0: greedy)


@dataclass
class LoggerConfig:
    kind: str = MISSING  # wandb | csv | tensorboard | none
    # W&B only (conf/logger/wandb.yaml sets them)
    project: Optional[str] = None
    entity: Optional[str] = None
    mode: Optional[str] = None  # offline | online | disabled
    group: Optional[str] = None  # None: the run's overrides without the seed
    job_type: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class EmbeddingConfig:
    enabled: bool = MISSING
    episodes: int = MISSING
    max_points: int = MISSING
    perplexity: float = MISSING


@dataclass
class FaultInjectionConfig:
    fail_at_env_steps: Optional[int] = None


@dataclass
class CheckpointConfig:
    every_env_steps: Optional[int] = MISSING
    keep_last: int = MISSING
    save_buffer: Optional[bool] = None


@dataclass
class WatchdogConfig:
    margin: float = MISSING
    on_value_blowup: str = MISSING  # warn | stop


@dataclass
class RunConfig:
    """The top level; every value is in conf/config.yaml (with its unit and meaning)."""

    seed: int = MISSING
    total_env_steps: int = MISSING
    gamma: float = MISSING
    batch_size: int = MISSING
    env_steps_per_update: float = MISSING
    updates_per_batch: int = MISSING
    interleaved: bool = MISSING
    max_grad_norm: Optional[float] = MISSING
    lr_end_factor: float = MISSING
    log_every_updates: int = MISSING
    log_every_env_steps: int = MISSING
    torch_threads: int = MISSING
    progress_bar: bool = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    fault_injection: FaultInjectionConfig = field(default_factory=FaultInjectionConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    resume: Optional[str] = None  # a run dir, a checkpoint file, or "auto" (None: SLURM auto)
    # component groups: `_target_` nodes, checked against the class they name
    arch: Any = None
    estimator: Any = None
    exploration: Any = None
    target: Any = None
    loss: Any = None
    optim: Any = None
    trainer: Any = None
    callbacks: Any = None


def register_schemas() -> None:
    """Make ``schema`` available to the defaults list of ``conf/config.yaml``."""
    ConfigStore.instance().store(name="schema", node=RunConfig)
