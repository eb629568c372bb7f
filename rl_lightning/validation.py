"""Checks of the composed config before anything is built: one clear message per problem.

The structured-config schema (``rl_lightning/config.py``) already rejects unknown keys and wrong
types of the typed groups on the command line; this module checks keys added with ``+`` (against
the schema and the component classes' parameters), values, ranges and combinations, and names
the key, the value and what is allowed. ``OutputDirCheck`` makes sure the output directory can
be written before Hydra or the run creates anything in it.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import get_object
from omegaconf import DictConfig

from rl_lightning.config import RunConfig
from rl_lightning.envs import env_option_problems, register_envs
from rl_lightning.loggers import KINDS as LOGGER_KINDS
from rl_lightning.networks.build import part_problems


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


# the groups that choose a component class: their keys are that class's parameters
TARGET_GROUPS = ("arch", "estimator", "exploration", "target", "loss", "optim", "trainer")
#: keys of a ``callbacks.<name>`` node read by ``builders.build_callbacks``, not passed on
BUILDER_KEYS = ("enabled",)


def component_paths(cfg: DictConfig) -> list[str]:
    """The config paths of ``_target_`` component nodes: the groups, and each callback."""
    callbacks = _get(cfg, "callbacks")
    names = list(callbacks) if isinstance(callbacks, DictConfig) else []
    return [*TARGET_GROUPS, "buffer.sampler", *(f"callbacks.{name}" for name in names)]


def _allowed(what: str, key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{what}: allowed keys are {', '.join(allowed)}{hint}"


def unknown_key_problems(cfg: DictConfig) -> list[str]:
    """Keys the run would not use: outside the structured schema (``rl_lightning/config.py``),
    or not a parameter of the class a component group names, or of the callable a nested
    ``_target_`` node names (``arch.encoder``, ``arch.head``, ``exploration.schedule``). Hydra
    rejects such keys from the command line already, except when they are added with ``+``."""
    problems: list[str] = []

    def walk(node: Any, schema: type, prefix: str) -> None:
        hints = typing.get_type_hints(schema)
        for key in node:
            full = f"{prefix}{key}"
            if key not in hints:
                problems.append(
                    _allowed(f"{full}={node[key]!r} is an unknown key", key, sorted(hints))
                )
            elif dataclasses.is_dataclass(hints[key]) and isinstance(node[key], DictConfig):
                walk(node[key], hints[key], f"{full}.")

    def parameters(node: Any) -> dict[str, inspect.Parameter] | None:
        """The parameters of the callable a ``_target_`` node names; None if there is none, it
        cannot be imported (instantiate reports that) or it takes ``**kwargs``."""
        if not isinstance(node, DictConfig) or "_target_" not in node:
            return None
        try:
            params = dict(inspect.signature(get_object(node._target_)).parameters)
        except Exception:
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return params

    def check(node: DictConfig, path: str) -> None:
        """The keys of the ``_target_`` node at ``path``, then of its nested ``_target_`` nodes
        (``arch.encoder``, ``arch.head``), each against the callable it names."""
        params = parameters(node)
        keys = [str(k) for k in node if not str(k).startswith("_")]
        parts = {k: parameters(node[k]) for k in keys if isinstance(node._get_node(k), DictConfig)}
        if params is not None:
            names = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
            for key in keys:
                if key in params or key in BUILDER_KEYS:
                    continue
                what = f"{path}.{key}={node[key]!r} is not a parameter of {node._target_}"
                inner = [f"{path}.{k}.{key}" for k, ps in parts.items() if ps and key in ps]
                if inner:  # a key of a part written one level up (arch.norm for arch.encoder.norm)
                    problems.append(
                        f"{what}: allowed keys are {', '.join(names)} (did you mean {inner[0]}?)"
                    )
                else:
                    problems.append(_allowed(what, key, names))
        if path == "arch":
            problems.extend(part_problems(node))
        for key, part_params in parts.items():
            if part_params is not None:
                check(node[key], f"{path}.{key}")

    walk(cfg, RunConfig, "")
    for group in component_paths(cfg):
        node = _get(cfg, group)
        if isinstance(node, DictConfig) and "_target_" in node:
            check(node, group)
    return problems


def env_id_problem(env_id: str) -> str | None:
    """A message naming close matches when ``env_id`` is not registered with gymnasium.

    ``module:EnvId`` (gymnasium's own syntax) imports ``module`` first, which registers the env:
    a package of your own needs no edit of this one (docs/extending.md)."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return f"env.id={module}:{env_id}: cannot import {module!r} ({exc})"
    register_envs(env_id)
    if env_id in gym.registry:
        return None
    if env_id.startswith("MinAtar/") and importlib.util.find_spec("minatar") is None:
        return f"env.id={env_id!r} needs MinAtar: pip install 'rl-lightning[minatar]'"
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"env.id={env_id!r} is not a registered gymnasium environment{hint}"


def action_space_problem(env_id: str, kwargs: Any = None) -> str | None:
    """A message when ``env_id`` has no discrete action space: every method here picks
    ``argmax_a Q(s, a)`` over a finite set of actions. The env is made once to read its space;
    a missing extra package (Box2D, MuJoCo ...) is named in one line, any other failure to make
    it is left to the env factory, which reports it in full."""
    try:
        env = gym.make(env_id, **dict(kwargs or {}))
    except (gym.error.DependencyNotInstalled, ImportError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"env.id={env_id!r} needs a package that is not installed: {first_line}"
    except Exception:
        return None
    space = env.action_space
    env.close()
    if isinstance(space, gym.spaces.Discrete):
        return None
    return (
        f"env.id={env_id!r} has the action space {space}, and DQN-family methods need a "
        "discrete one (gymnasium.spaces.Discrete): Q-learning takes a max over a finite set of "
        "actions. Use a discrete-action env (e.g. CartPole-v1, Acrobot-v1, MountainCar-v0) or "
        "discretise the actions with a wrapper"
    )


def validate_config(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` listing every problem found in ``cfg``."""
    problems = unknown_key_problems(cfg)
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
    problems.extend(env_option_problems(_get(cfg, "env") or {}))  # stack, flicker, mask
    _check(
        problems,
        cfg,
        "eval.every_env_steps",
        lambda v: v >= 0,
        "must be >= 0 (0: only the final evaluation)",
    )
    _check(problems, cfg, "eval.episodes", lambda v: v >= 1, "must be >= 1")
    _check(problems, cfg, "eval.final_episodes", lambda v: v >= 1, "must be >= 1")
    from rl_lightning.data.samplers import sampler_class  # imports Lightning: only when run

    sampler = _get(cfg, "buffer.sampler._target_")
    try:
        online = sampler_class(str(sampler)).online
    except ValueError:
        online = None
        problems.append(
            f"buffer.sampler._target_={sampler!r}: must name a rl_lightning.data.Sampler "
            "subclass, e.g. rl_lightning.data.UniformSampler or rl_lightning.data.OnlineSampler"
        )
    _check(problems, cfg, "buffer.learning_starts_env_steps", lambda v: v >= 0, "must be >= 0")
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
    if online is False:  # replay: the configured capacity must hold a batch and the windows
        capacity, batch = _get(cfg, "buffer.capacity"), _get(cfg, "batch_size")
        n_step, num_envs = _get(cfg, "estimator.n_step"), _get(cfg, "env.num_envs") or 1
        if not isinstance(n_step, int) or n_step < 1:  # reported above; no window to check
            n_step = 1
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
    _check(
        problems,
        cfg,
        "checkpoint.every_env_steps",
        lambda v: v >= 0,
        "must be >= 0 (0 or null: checkpoints only at the end and on signals)",
    )
    _check(problems, cfg, "checkpoint.keep_last", lambda v: v >= 1, "must be >= 1")
    _check(
        problems,
        cfg,
        "resume",
        lambda v: isinstance(v, str) and v != "",
        "must be a run dir, a checkpoint file, auto, or null",
    )
    _check(problems, cfg, "embedding.episodes", lambda v: v >= 1, "must be >= 1")
    if _get(cfg, "watchdog") is not None:  # (absent from checkpoints of older runs: off)
        _check(problems, cfg, "watchdog.margin", lambda v: v >= 1.0, "must be >= 1 (a factor)")
        _check(
            problems,
            cfg,
            "watchdog.on_value_blowup",
            lambda v: v in ("warn", "stop"),
            "must be one of warn, stop",
        )
    _check(problems, cfg, "embedding.max_points", lambda v: v >= 10, "must be >= 10")
    _check(problems, cfg, "embedding.perplexity", *positive)
    from rl_lightning.recurrent_loss import recurrent_config_problems  # imports Lightning too

    problems.extend(
        [p for p in [distributional_problem(cfg)] if p] + recurrent_config_problems(cfg)
    )
    env_id = _get(cfg, "env.id")
    if isinstance(env_id, str):
        problem = env_id_problem(env_id) or action_space_problem(env_id, _get(cfg, "env.kwargs"))
        if problem:
            problems.append(problem)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def distributional_problem(cfg: DictConfig) -> str | None:
    """A distributional head (``arch/head=distributional``) under an estimator without a
    distributional form (``Estimator.supports_distributional``), e.g. Munchausen."""
    from hydra.utils import get_object

    from rl_lightning.estimators.core import Estimator

    head, estimator = _get(cfg, "arch.head._target_"), _get(cfg, "estimator._target_")
    if head is None or estimator is None:  # no head part (tabular, linear, action-in)
        return None
    try:
        distributional = getattr(get_object(str(head)), "distributional", False)
        cls = get_object(str(estimator))
    except Exception:  # not importable: instantiate reports it
        return None
    supported = not isinstance(cls, type) or not issubclass(cls, Estimator)
    node = _get(cfg, "arch.head")
    unset = [k for k in ("v_min", "v_max") if node is not None and k in node and node[k] is None]
    if distributional and unset and _get(cfg, "env.reward_range") is None:
        return (
            f"arch.head.{unset[0]}=null takes the support from env.reward_range, which is null "
            f"for {_get(cfg, 'env.id')}: set arch.head.v_min and arch.head.v_max, or "
            "env.reward_range=[low,high] (one step's reward)"
        )
    if distributional and not (supported or cls.bootstrap_policy is not Estimator.bootstrap_policy):
        return (
            f"estimator._target_={estimator}: has no distributional form for "
            f"arch/head={str(head).rsplit('.', 1)[-1]} (a distributional head); use "
            "estimator=q_learning|double_q|sarsa|expected_sarsa"
        )
    return None


def check_output_dir(path: Path) -> None:
    """Create ``path`` and write (then remove) a probe file in it; ``ConfigError`` naming the
    path if either fails, so that an unwritable output location stops the run at start and not
    when its first checkpoint or its summary is written."""
    path = Path(path)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"the output directory {path} cannot be written ({exc.strerror or exc}); choose "
            "another with hydra.run.dir=PATH (hydra.sweep.dir=PATH with -m)"
        ) from None


class OutputDirCheck(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``): ``check_output_dir`` on the
    run or sweep directory before Hydra creates it -- Hydra itself would fail there with a
    traceback. Exits with status 2 and one message, like any config error."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "run")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "sweep")

    @staticmethod
    def _check(config: DictConfig, mode: str) -> None:
        """``mode``: ``run`` or ``sweep``, whose ``hydra.<mode>.dir`` is checked."""
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the directory name
        try:
            path = Path(str(config.hydra[mode].dir))
        except Exception:  # an unresolvable name: Hydra reports it itself
            return
        try:
            check_output_dir(path)
        except ConfigError as exc:
            print(f"[rl-train] {exc}", file=sys.stderr)
            sys.exit(2)


def on_policy_replay_warning(cfg: DictConfig, estimator: Any) -> str | None:
    """The lecture's warning: on-policy targets from a large replay buffer are biased."""
    from rl_lightning.data.samplers import sampler_class  # imports Lightning: only when run

    if sampler_class(cfg.buffer.sampler._target_).online or not estimator.is_on_policy:
        return None
    burst = float(cfg.updates_per_batch) * float(cfg.env_steps_per_update)
    if cfg.buffer.capacity <= 4 * burst:
        return None
    what = estimator.describe()  # "SARSA", "a 3-step return"
    return (
        f"{what} is an on-policy estimate, but buffer.capacity={cfg.buffer.capacity} keeps "
        f"transitions from many older policies (one burst collects {burst:.0f} env steps): the "
        "targets then estimate an old policy's returns and learning is slow or wrong. Learn from "
        "fresh data with parallel agents instead, e.g. "
        f"`buffer=online env.num_envs=16 env_steps_per_update=16`, or use "
        "estimator=q_learning / expected_sarsa with n_step=1. Continuing as configured."
    )
