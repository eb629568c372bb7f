"""Checks of the composed config before anything is built: one clear message per problem.

The structured-config schema (``rl_lightning/config.py``) already rejects unknown keys and wrong
types of the typed groups; this module checks values, ranges and combinations, and names the
key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from omegaconf import DictConfig

from rl_lightning.envs import register_envs
from rl_lightning.estimators import ESTIMATORS
from rl_lightning.loggers import KINDS as LOGGER_KINDS


class ConfigError(ValueError):
    """A config value is out of range or a combination is not allowed."""


def _get(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if node is None or part not in node:
            return None
        node = node[part]
    return node


def _check(
    problems: list[str], cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str
) -> None:
    value = _get(cfg, key)
    if value is None and "null" in allowed:
        return
    try:
        good = value is not None and ok(value)
    except TypeError:
        good = False
    if not good:
        problems.append(f"{key}={value!r}: {allowed}")


def env_id_problem(env_id: str) -> str | None:
    """A message naming close matches when ``env_id`` is not registered with gymnasium."""
    register_envs()
    if env_id in gym.registry:
        return None
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"env.id={env_id!r} is not a registered gymnasium environment{hint}"


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every problem found in ``cfg``."""
    problems: list[str] = []
    positive = (lambda v: v > 0), "must be > 0"
    _check(problems, cfg, "total_env_steps", *positive)
    _check(problems, cfg, "gamma", lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
    _check(problems, cfg, "batch_size", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "env_steps_per_update", *positive)
    _check(problems, cfg, "updates_per_batch", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "max_grad_norm", lambda v: v > 0, "must be > 0, or null for no clipping")
    _check(problems, cfg, "lr_end_factor", lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
    _check(problems, cfg, "log_every_updates", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "log_every_env_steps", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "torch_threads", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "env.num_envs", lambda v: v >= 1, "must be >= 1")
    _check(
        problems,
        cfg,
        "eval.every_env_steps",
        lambda v: v >= 0,
        "must be >= 0 (0: only the final evaluation)",
    )
    _check(problems, cfg, "eval.episodes", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "eval.final_episodes", lambda v: v >= 1, "must be >= 1")
    _check(
        problems,
        cfg,
        "buffer.kind",
        lambda v: v in ("replay", "online"),
        "must be one of replay, online",
    )
    _check(problems, cfg, "buffer.learning_starts_env_steps", lambda v: v >= 0, "must be >= 0")
    _check(
        problems,
        cfg,
        "estimator.name",
        lambda v: v in ESTIMATORS,
        f"must be one of {', '.join(ESTIMATORS)}",
    )
    _check(problems, cfg, "estimator.n_step", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "optim.lr", *positive)
    _check(
        problems,
        cfg,
        "logger.kind",
        lambda v: v in LOGGER_KINDS,
        f"must be one of {', '.join(LOGGER_KINDS)}",
    )
    if _get(cfg, "logger.kind") == "wandb":
        _check(
            problems,
            cfg,
            "logger.mode",
            lambda v: v in ("offline", "online", "disabled"),
            "must be one of offline, online, disabled",
        )
    if _get(cfg, "buffer.kind") == "replay":
        capacity, batch = _get(cfg, "buffer.capacity"), _get(cfg, "batch_size")
        n_step, num_envs = _get(cfg, "estimator.n_step") or 1, _get(cfg, "env.num_envs") or 1
        if capacity is None or (batch is not None and capacity < batch):
            problems.append(
                f"buffer.capacity={capacity!r}: must be >= batch_size={batch} (one batch must fit)"
            )
        elif capacity < num_envs * (n_step + 2):
            problems.append(
                f"buffer.capacity={capacity}: must be >= env.num_envs * (estimator.n_step + 2) = "
                f"{num_envs * (n_step + 2)} (each lane must hold one n-step window)"
            )
    _check(
        problems,
        cfg,
        "fault_injection.fail_at_env_steps",
        lambda v: v >= 0,
        "must be >= 0, or null (no injected fault)",
    )
    _check(problems, cfg, "embedding.episodes", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "embedding.max_points", lambda v: v >= 10, "must be >= 10")
    _check(problems, cfg, "embedding.perplexity", *positive)
    env_id = _get(cfg, "env.id")
    if isinstance(env_id, str):
        problem = env_id_problem(env_id)
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
