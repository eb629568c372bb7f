"""Builders: each component of a run from the composed config, with the runtime facts filled in.

The config never holds what only the running program knows (observation shape, number of
actions, observation bounds, the run dir, signal flags): the builders pass those in. ``rl-train``
(through ``run.build_run``), ``rl-eval``, ``rl-embed``, ``scripts/benchmark.py`` and the tests
all build through these functions; nothing needs to be monkeypatched to reach a component.

    env = make_env(cfg)                                   # the training vector env
    q_network = build_q_network(cfg, env)                 # arch + runtime facts
    exploration = instantiate(cfg.exploration)
    module = build_module(cfg, q_network, exploration)    # loss, estimator, target, optimizer
    datamodule = build_datamodule(cfg, env, q_network, exploration, n_step=...)
    callbacks = build_callbacks(cfg, context)             # the ``callbacks`` group
    trainer = build_trainer(cfg, callbacks=callbacks, loggers=loggers, run_dir=run_dir)
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from rl_lightning import networks
from rl_lightning.context import RunContext
from rl_lightning.data import (
    ReplayDataModule,
    Sampler,
    SequenceSampler,
    UniformSampler,
    sampler_class,
)
from rl_lightning.distributed import process_rank
from rl_lightning.distributional import CategoricalTDLoss, QuantileTDLoss
from rl_lightning.envs import make_env_from_config
from rl_lightning.exploration import Actor, Exploration
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule, TDErrorsHook
from rl_lightning.recurrent_loss import RecurrentTDLoss
from rl_lightning.validation import ConfigError

CHECKPOINT_FILE = "checkpoints/last.ckpt"


# -- environments ---------------------------------------------------------------------------------
def make_env(cfg: DictConfig, num_envs: int | None = None) -> gym.vector.VectorEnv:
    """The ``env`` node's vector env (``num_envs`` lanes; default ``env.num_envs``)."""
    env_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.env, resolve=True))
    return make_env_from_config(env_cfg, num_envs)


def env_spaces(env: gym.vector.VectorEnv) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of a discrete-action vector env."""
    obs_shape = env.single_observation_space.shape
    assert obs_shape is not None
    return tuple(obs_shape), int(env.single_action_space.n)  # type: ignore[attr-defined]


def observation_bounds(
    cfg: DictConfig, env: gym.vector.VectorEnv
) -> tuple[list[float], list[float]]:
    """Per-dimension bounds for binning and feature maps: ``env.obs_low/obs_high`` if set,
    else the observation space's own bounds (which must then be finite)."""
    space: Any = env.single_observation_space
    low = cfg.env.obs_low
    high = cfg.env.obs_high
    if low is None:
        low = np.asarray(space.low).ravel().tolist()
    if high is None:
        high = np.asarray(space.high).ravel().tolist()
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError(
            f"{cfg.env.id} has unbounded observations ({low} .. {high}); set env.obs_low and "
            "env.obs_high to the range the table or feature map should cover"
        )
    return list(map(float, low)), list(map(float, high))


def episode_horizon(cfg: DictConfig, env: gym.vector.VectorEnv) -> int | None:
    """The env's time limit: ``env.max_episode_steps``, else the registered one (None: none)."""
    horizon = cfg.env.max_episode_steps
    if horizon is None:
        horizon = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        if horizon is None:
            try:
                horizon = gym.spec(str(cfg.env.id)).max_episode_steps
            except gym.error.Error:
                horizon = None
    return None if horizon is None else int(horizon)


def return_bounds(cfg: DictConfig, env: gym.vector.VectorEnv) -> tuple[float, float]:
    """(low, high) of the discounted return: ``env.reward_range`` times ``1 / (1 - gamma)``,
    or the time limit when gamma = 1 (a distributional head's default support)."""
    reward_range = cfg.env.get("reward_range")
    if reward_range is None:
        raise ValueError(
            f"{cfg.env.id}: env.reward_range is unknown, so a distributional head needs "
            "arch.head.v_min and arch.head.v_max (or env.reward_range=[low,high])"
        )
    horizon = 1.0 / (1.0 - cfg.gamma) if cfg.gamma < 1.0 else episode_horizon(cfg, env)
    if horizon is None:
        raise ValueError("gamma = 1 without a time limit: set arch.head.v_min and v_max")
    low, high = (float(r) * horizon for r in reward_range)
    return low, high


# -- the learner ----------------------------------------------------------------------------------
def build_q_network(
    cfg: DictConfig, env: gym.vector.VectorEnv, exploration: Exploration | None = None
) -> torch.nn.Module:
    """The ``arch`` node with the runtime facts (never written in YAML) filled in: observation
    shape, number of actions, observation bounds (for archs that bin or featurise), and what
    the exploration needs of the network (noisy layers, dropout): ``networks.build``. Without
    ``exploration`` the run's ``exploration`` node is instantiated for that."""
    if exploration is None:
        exploration = instantiate(cfg.exploration)
    obs_shape, num_actions = env_spaces(env)
    return networks.build_q_network(
        cfg.arch,
        obs_shape=obs_shape,
        num_actions=num_actions,
        obs_bounds=lambda: observation_bounds(cfg, env),
        return_bounds=lambda: return_bounds(cfg, env),
        overrides=exploration.network_overrides,
    )


def build_module(
    cfg: DictConfig,
    q_network: torch.nn.Module,
    exploration: Exploration,
    *,
    on_td_errors: TDErrorsHook | None = None,
) -> QLearningModule:
    """The LightningModule: a ``TDLoss`` (estimator, regression loss, target network) around
    ``q_network``, the target update and the optimizer. ``on_td_errors``: see
    ``QLearningModule`` (a prioritized sampler's ``update_priorities``)."""
    # stored in checkpoints unresolved: a resume that changes a key (say fault_injection.*)
    # changes what interpolates it (callbacks.fault_injection.*) as a fresh run would
    config = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(config, dict)
    target_update = instantiate(cfg.target)
    # a distributional head learns by its own loss (C51's cross-entropy, QR-DQN's quantile
    # Huber loss), the others by the regression in loss/
    kind = str(getattr(getattr(q_network, "head", None), "kind", ""))
    losses: dict[str, type[TDLoss]] = {"categorical": CategoricalTDLoss, "quantile": QuantileTDLoss}
    loss_class = losses.get(kind, TDLoss)
    if networks.is_recurrent(q_network):  # sequences with a burn-in (recurrent_loss.py)
        if loss_class is not TDLoss:
            raise ValueError(
                f"a recurrent network has no {kind} loss: use arch/head=linear|dueling"
            )
        loss_class = RecurrentTDLoss
    loss = loss_class(
        q_network=q_network,
        estimator=instantiate(cfg.estimator),
        loss=instantiate(cfg.loss),
        gamma=cfg.gamma,
        use_target_network=target_update.uses_target_network,
        exploration=exploration,
    )
    return QLearningModule(
        loss=loss,
        target_update=target_update,
        optimizer=instantiate(cfg.optim),
        max_grad_norm=cfg.max_grad_norm,
        log_every_updates=cfg.log_every_updates,
        total_env_steps=cfg.total_env_steps,
        lr_end_factor=cfg.lr_end_factor,
        config=config,
        on_td_errors=on_td_errors,
    )


# -- the data side --------------------------------------------------------------------------------
def buffer_capacity(cfg: DictConfig, n_step: int) -> int:
    """Replay capacity in time steps: ``buffer.capacity``; for an online sampler
    (``buffer=online``) one rollout (with room for its auto-reset rows) plus the n-step window
    and the older rows a frame stack of N reads (``env.frame_stack``: N - 1, N with actions)."""
    if not sampler_class(cfg.buffer.sampler._target_).online:
        return int(cfg.buffer.capacity)
    num_envs = int(cfg.env.num_envs)
    # a rollout of E real steps takes up to 2 * ceil(E / N) + 1 rows per lane: every episode
    # has at least one real step, and each episode end adds one auto-reset row
    rollout_rows = 2 * math.ceil(float(cfg.env_steps_per_update) / num_envs) + 1
    stack_rows = int(cfg.env.get("frame_stack", 1)) - 1 + int(bool(cfg.env.get("stack_actions")))
    return num_envs * (rollout_rows + n_step + 2 + stack_rows)


def build_sampler(cfg: DictConfig, q_network: torch.nn.Module, *, seed: int) -> Sampler:
    """``buffer.sampler``; for a recurrent network a ``SequenceSampler`` with its ``burn_in``
    and ``train_length`` instead of the uniform sampler (the only one it replaces: sequences
    have no prioritized or online version yet)."""
    if not networks.is_recurrent(q_network):
        return cast(Sampler, instantiate(cfg.buffer.sampler, seed=seed))
    if sampler_class(cfg.buffer.sampler._target_) is not UniformSampler:
        raise ValueError(
            f"a recurrent network (arch={cfg.arch._target_}) learns from uniformly sampled "
            f"sequences; buffer.sampler={cfg.buffer.sampler._target_} has no sequence version: "
            "use buffer=replay"
        )
    net: Any = q_network
    return SequenceSampler(seed=seed, burn_in=net.burn_in, train_length=net.train_length)


def build_datamodule(
    cfg: DictConfig,
    env: gym.vector.VectorEnv,
    q_network: torch.nn.Module,
    exploration: Exploration,
    *,
    n_step: int,
) -> ReplayDataModule:
    """Vector env -> collector (acting with ``q_network`` + ``exploration``) -> replay -> stream.

    Under DDP every rank runs its own actors on differently seeded envs (the lecture's parallel
    agents with shared weights); gradients are averaged across ranks.
    """
    actor_seed = int(cfg.seed) + 10_000 * process_rank()
    return ReplayDataModule(
        env=env,
        policy=Actor(q_network, exploration, seed=actor_seed),
        capacity=buffer_capacity(cfg, n_step),
        seed=actor_seed,
        sampler=build_sampler(cfg, q_network, seed=actor_seed + 1),
        batch_size=cfg.batch_size,
        n_step=n_step,
        total_env_steps=cfg.total_env_steps,
        learning_starts_env_steps=cfg.buffer.learning_starts_env_steps,
        env_steps_per_update=cfg.env_steps_per_update,
        updates_per_batch=cfg.updates_per_batch,
        interleaved=cfg.interleaved,
    )


# -- Lightning ------------------------------------------------------------------------------------
def build_callbacks(cfg: DictConfig, context: RunContext) -> list[pl.Callback]:
    """The ``callbacks`` group, in order (lightning-hydra-template's ``instantiate_callbacks``).

    A node set to ``null``, or with ``enabled: false``, is skipped (``enabled`` is read here,
    never passed on); a callback whose constructor takes ``context`` receives the run's
    ``RunContext`` (env factory, run dir, seeds, signal flags).
    """
    callbacks: list[pl.Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ValueError(f"callbacks.{name} has no _target_")
        params = {k: v for k, v in node.items() if k != "enabled"}
        if not node.get("enabled", True):
            continue
        extra: dict[str, Any] = {}
        if "context" in inspect.signature(get_class(node._target_)).parameters:
            extra["context"] = context
        callbacks.append(instantiate(OmegaConf.create(params), **extra))
    return callbacks


def check_accelerator(cfg: DictConfig) -> None:
    """A ``ConfigError`` (exit status 2, one message naming the fix) for ``trainer=gpu`` where
    no CUDA GPU is usable, before anything is built: Lightning would raise its
    ``MisconfigurationException`` with a traceback only once the trainer is made."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no usable GPU"
        instead = "trainer=ddp_cpu" if "ddp" in str(cfg.trainer.get("strategy")) else "trainer=cpu"
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}: {build}): use {instead}, or on a GPU machine install "
            "a CUDA build of torch and check nvidia-smi / CUDA_VISIBLE_DEVICES"
        )


def build_trainer(
    cfg: DictConfig,
    *,
    callbacks: list[pl.Callback],
    loggers: list[Any],
    run_dir: Path,
) -> pl.Trainer:
    """``instantiate(cfg.trainer, ...)``: the ``trainer`` group holds every Trainer argument."""
    return instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
    )


# -- checkpoints ----------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run dir holding ``checkpoints/last.ckpt``."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


def load_q_network(checkpoint: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the online Q-network of a checkpoint; returns (network, run config)."""
    state = torch.load(resolve_checkpoint(checkpoint), map_location="cpu", weights_only=False)
    cfg = OmegaConf.create(state["rl_lightning"]["config"])
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    probe = make_env_from_config(config["env"], 1)
    q_network = build_q_network(cfg, probe)
    probe.close()
    prefix = "q_network."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    q_network.load_state_dict(weights)
    return q_network, config
