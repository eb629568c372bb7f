"""rl-train: compose the config, build the components, train, evaluate, write the summary.

rl-train                                  # the default DQN on CartPole-v1
rl-train env=acrobot target=polyak seed=3 # change components on the command line
rl-train -m seed=0,1,2,3,4                # a sweep over seeds (Hydra multirun)
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import signal
import sys
import time
import traceback
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from rl_lightning.callbacks import (
    EmbeddingCallback,
    EnvStepProgressBar,
    FaultInjectionCallback,
    GreedyEvaluationCallback,
    RolloutMetricsCallback,
)
from rl_lightning.checkpointing import (
    CHECKPOINT_DIR,
    LAST_NAME,
    CheckpointError,
    RunCheckpointCallback,
    StopSignals,
    TrainingInterrupted,
    buffer_checkpoint_choice,
    checkpoints_newest_first,
    continue_csv_log,
    find_resume_point,
    resumed_config,
    slurm_requeue,
)
from rl_lightning.config import register_schemas
from rl_lightning.data import ReplayDataModule
from rl_lightning.envs import make_env_from_config
from rl_lightning.estimators import Estimator
from rl_lightning.evaluation import evaluate_greedy
from rl_lightning.exploration import Actor
from rl_lightning.loggers import build_loggers, finish_wandb
from rl_lightning.module import QLearningModule, TrainingDiverged
from rl_lightning.summary import write_summary
from rl_lightning.validation import ConfigError, check_output_dir, validate_config

log = logging.getLogger("rl_lightning")

CONFIG_DIR = str(resources.files("rl_lightning.conf"))
CHECKPOINT_NAME = f"{CHECKPOINT_DIR}/{LAST_NAME}"

register_schemas()


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


def build_q_network(cfg: DictConfig, env: gym.vector.VectorEnv) -> torch.nn.Module:
    """The ``arch`` node with the runtime facts (never written in YAML) filled in: observation
    shape, number of actions, observation bounds (for archs that bin or featurise), and what
    the exploration needs of the network (noisy layers, dropout)."""
    obs_shape, num_actions = env_spaces(env)
    kwargs: dict[str, Any] = {"obs_shape": list(obs_shape), "num_actions": num_actions}
    arch_cls = get_class(cfg.arch._target_)
    if "obs_low" in inspect.signature(arch_cls).parameters:
        kwargs["obs_low"], kwargs["obs_high"] = observation_bounds(cfg, env)
    overrides = dict(instantiate(cfg.exploration).network_overrides)
    unsupported = [k for k in overrides if k not in inspect.signature(arch_cls).parameters]
    if unsupported:
        raise ValueError(
            f"exploration={cfg.exploration._target_.rsplit('.', 1)[-1]} needs {unsupported} in the "
            f"network, which {arch_cls.__name__} does not have; use arch=mlp or arch=mlp_action_in"
        )
    return instantiate(cfg.arch, **kwargs, **overrides)


def env_spaces(env: gym.vector.VectorEnv) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of a discrete-action vector env."""
    obs_shape = env.single_observation_space.shape
    assert obs_shape is not None
    return tuple(obs_shape), int(env.single_action_space.n)  # type: ignore[attr-defined]


def make_env(cfg: DictConfig, num_envs: int | None = None) -> gym.vector.VectorEnv:
    env_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.env, resolve=True))
    return make_env_from_config(env_cfg, num_envs)


def process_rank() -> int:
    """Global rank of this process under torch.distributed launchers (0 otherwise)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def buffer_capacity(cfg: DictConfig, n_step: int) -> int:
    """Replay capacity in time steps; for ``buffer=online`` one rollout (with room for its
    auto-reset rows) plus the n-step window."""
    if cfg.buffer.kind == "replay":
        return int(cfg.buffer.capacity)
    if cfg.buffer.kind != "online":
        raise ValueError(f"buffer.kind={cfg.buffer.kind!r} is not one of replay, online")
    num_envs = int(cfg.env.num_envs)
    # a rollout of E real steps takes up to 2 * ceil(E / N) + 1 rows per lane: every episode
    # has at least one real step, and each episode end adds one auto-reset row
    rollout_rows = 2 * math.ceil(float(cfg.env_steps_per_update) / num_envs) + 1
    return num_envs * (rollout_rows + n_step + 2)


def on_policy_replay_warning(cfg: DictConfig, estimator: Estimator) -> str | None:
    """The lecture's warning: on-policy targets from a large replay buffer are biased."""
    if cfg.buffer.kind != "replay" or not estimator.is_on_policy:
        return None
    burst = float(cfg.updates_per_batch) * float(cfg.env_steps_per_update)
    if cfg.buffer.capacity <= 4 * burst:
        return None
    what = "SARSA" if estimator.name == "sarsa" else f"a {estimator.n_step}-step return"
    return (
        f"{what} is an on-policy estimate, but buffer.capacity={cfg.buffer.capacity} keeps "
        f"transitions from many older policies (one burst collects {burst:.0f} env steps): the "
        "targets then estimate an old policy's returns and learning is slow or wrong. Learn from "
        "fresh data with parallel agents instead, e.g. "
        f"`buffer=online env.num_envs=16 env_steps_per_update=16`, or use "
        "estimator=q_learning / expected_sarsa with n_step=1. Continuing as configured."
    )


def quiet_lightning() -> None:
    """Keep Lightning's warnings, drop its start-up chatter (accelerator and logger tips)."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
    # training_step(dataloader_iter) is deliberate (see QLearningModule.training_step)
    warnings.filterwarnings("ignore", message=r"Found `dataloader_iter` argument")
    warnings.filterwarnings("ignore", message=r"You are using the `dataloader_iter` step flavor")


def train(cfg: DictConfig, *, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train one agent; always writes ``run_dir/summary.json``; returns the summary.

    With ``resume`` set (see ``checkpointing.find_resume_point``) the run continues from a
    checkpoint, in that checkpoint's run dir, with the config stored in it. SIGTERM / SIGINT
    stop it after the current training step with a checkpoint (``TrainingInterrupted``); a
    non-finite loss or Q-value stops it without one (``TrainingDiverged``).
    """
    run_dir = Path(run_dir)
    check_output_dir(run_dir)  # creates it; ConfigError (exit status 2) if it cannot be written
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "status": "failed",
        "env_steps": 0,
        "updates": 0,
        "wall_s": 0.0,
        "env_steps_per_s": 0.0,
        "eval_return_mean": None,
        "eval_return_std": None,
        "eval_episodes": 0,
        "seed": int(cfg.seed),
        "overrides": list(overrides),
    }
    env = None
    module = None
    datamodule = None
    checkpointer: RunCheckpointCallback | None = None
    stop = StopSignals()
    try:
        validate_config(cfg)
        point = find_resume_point(cfg.resume, run_dir)
        if point is not None:
            cfg = resumed_config(cfg, overrides, point)
            validate_config(cfg)
            run_dir, overrides = point.run_dir, list(point.state["overrides"])
            summary.update(
                overrides=overrides, resumed_from=str(point.checkpoint), run_dir=str(run_dir)
            )
            log.warning(
                "resuming from %s at env step %d in %s",
                point.checkpoint,
                point.state["env_steps"],
                run_dir,
            )
        stop.install()
        quiet_lightning()
        torch.set_num_threads(int(cfg.torch_threads))
        pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
        env = make_env(cfg)
        q_network = build_q_network(cfg, env)
        exploration = instantiate(cfg.exploration)
        estimator = instantiate(cfg.estimator)
        warning = on_policy_replay_warning(cfg, estimator)
        if warning is not None:
            log.warning(warning)
            summary["warnings"] = [warning]
        config = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(config, dict)
        module = QLearningModule(
            q_network=q_network,
            estimator=estimator,
            target_update=instantiate(cfg.target),
            loss=instantiate(cfg.loss),
            optimizer=instantiate(cfg.optim),
            exploration=exploration,
            gamma=cfg.gamma,
            max_grad_norm=cfg.max_grad_norm,
            log_every_updates=cfg.log_every_updates,
            total_env_steps=cfg.total_env_steps,
            lr_end_factor=cfg.lr_end_factor,
            config=config,
        )
        # under DDP every rank runs its own actors on differently seeded envs (the lecture's
        # parallel agents with shared weights); gradients are averaged across ranks
        actor_seed = int(cfg.seed) + 10_000 * process_rank()
        datamodule = ReplayDataModule(
            env=env,
            policy=Actor(q_network, exploration, seed=actor_seed),
            capacity=buffer_capacity(cfg, estimator.n_step),
            seed=actor_seed,
            batch_size=cfg.batch_size,
            n_step=estimator.n_step,
            total_env_steps=cfg.total_env_steps,
            learning_starts_env_steps=cfg.buffer.learning_starts_env_steps,
            env_steps_per_update=cfg.env_steps_per_update,
            updates_per_batch=cfg.updates_per_batch,
            interleaved=cfg.interleaved,
            online=cfg.buffer.kind == "online",
        )
        datamodule.save_buffer = buffer_checkpoint_choice(
            cfg.checkpoint.save_buffer,
            online=cfg.buffer.kind == "online",
            nbytes=datamodule.buffer.nbytes,
        )
        log.info(
            "checkpoints: every %s env steps, newest %d kept, in %s; replay buffer (%.1f MB) %s",
            cfg.checkpoint.every_env_steps or "(never: at the end and on signals only)",
            cfg.checkpoint.keep_last,
            run_dir / CHECKPOINT_DIR,
            datamodule.buffer.nbytes / 1e6,
            "included" if datamodule.save_buffer else "not included: a resume refills it",
        )
        eval_seed = int(cfg.seed) + int(cfg.eval.seed_offset)
        evaluator = GreedyEvaluationCallback(
            make_env=functools.partial(make_env, cfg, cfg.eval.episodes),
            every_env_steps=cfg.eval.every_env_steps,
            episodes=cfg.eval.episodes,
            seed=eval_seed,
        )
        callbacks: list[pl.Callback] = [
            evaluator,
            RolloutMetricsCallback(every_env_steps=cfg.log_every_env_steps),
        ]
        if cfg.progress_bar:
            callbacks.append(EnvStepProgressBar(total_env_steps=cfg.total_env_steps))
        if cfg.embedding.enabled:
            callbacks.append(
                EmbeddingCallback(
                    make_env=functools.partial(make_env, cfg, min(cfg.embedding.episodes, 16)),
                    path=run_dir / "embedding.png",
                    episodes=cfg.embedding.episodes,
                    seed=eval_seed,
                    max_points=cfg.embedding.max_points,
                    perplexity=cfg.embedding.perplexity,
                    title=f"{cfg.env.id}: penultimate layer at the end of training",
                )
            )
        checkpointer = RunCheckpointCallback(
            directory=run_dir / CHECKPOINT_DIR,
            every_env_steps=cfg.checkpoint.every_env_steps,
            keep_last=cfg.checkpoint.keep_last,
            stop=stop,
            overrides=overrides,
            started_at=start,
            wall_s_before=point.state["wall_s"] if point is not None else 0.0,
        )
        callbacks.append(checkpointer)
        if cfg.fault_injection.fail_at_env_steps is not None:
            callbacks.append(
                FaultInjectionCallback(fail_at_env_steps=cfg.fault_injection.fail_at_env_steps)
            )
        loggers = build_loggers(
            cfg.logger,
            run_dir=run_dir,
            config=config,
            overrides=overrides,
            wandb_id=point.state["wandb_id"] if point is not None else None,
            purge_step=point.state["env_steps"] if point is not None else None,
        )
        if point is not None:
            continue_csv_log(loggers, rows=point.state["csv_rows"])
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            strategy=cfg.trainer.strategy,
            precision=cfg.trainer.precision,
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=bool(cfg.progress_bar),
            logger=loggers or False,
            callbacks=callbacks,
            default_root_dir=str(run_dir),
        )
        trainer.fit(
            module,
            datamodule=datamodule,
            ckpt_path=str(point.checkpoint) if point is not None else None,
        )
        module.check_finite()  # the last updates since the last check
        checkpointer.save(trainer, run_dir / CHECKPOINT_NAME)
        if stop.signum is not None:  # arrived after the last training step
            raise TrainingInterrupted(stop.signum, run_dir / CHECKPOINT_NAME, stop.requeue)
        wall_train = time.perf_counter() - start
        final_env = make_env(cfg, cfg.eval.final_episodes)
        returns = evaluate_greedy(
            module.q_network, final_env, episodes=cfg.eval.final_episodes, seed=eval_seed
        )
        final_env.close()
        for logger in trainer.loggers:
            logger.log_metrics(
                {
                    "eval/return_mean": float(returns.mean()),
                    "eval/return_std": float(returns.std()),
                },
                step=datamodule.collector.env_steps,
            )
            logger.save()
        summary.update(
            status="completed",
            eval_return_mean=float(returns.mean()),
            eval_return_std=float(returns.std()),
            eval_episodes=int(returns.size),
            eval_returns=returns.tolist(),
            eval_history=evaluator.history,
            checkpoint=CHECKPOINT_NAME,
            train_wall_s=wall_train,
        )
    except TrainingInterrupted as exc:
        summary.update(
            status="interrupted",
            signal=signal.Signals(exc.signum).name,
            checkpoint=_relative(exc.checkpoint, run_dir),
            requeue=exc.requeue,
        )
        raise
    except TrainingDiverged as exc:
        newest = checkpoints_newest_first(run_dir)
        summary.update(
            status="diverged",
            error=str(exc),
            diverged_at_update=exc.update,
            diverged_at_env_steps=exc.env_steps,
            checkpoint=_relative(newest[0], run_dir) if newest else None,
        )
        raise
    except (KeyboardInterrupt, SystemExit) as exc:  # a second Ctrl-C: no checkpoint
        if stop.signum is None:
            raise
        summary.update(status="interrupted", signal=signal.Signals(stop.signum).name)
        summary["error"] = f"{type(exc).__name__}: stopped before the training step ended"
        raise
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["traceback"] = traceback.format_exc()
        raise
    finally:
        stop.restore()
        if datamodule is not None:
            summary["env_steps"] = int(datamodule.collector.env_steps)
            summary["episodes"] = int(datamodule.collector.episodes)
        if module is not None:
            summary["updates"] = int(module.updates)
        summary["wall_s"] = (
            checkpointer.wall_s if checkpointer is not None else time.perf_counter() - start
        )
        summary["env_steps_per_s"] = summary["env_steps"] / max(summary["wall_s"], 1e-9)
        if process_rank() == 0:
            write_summary(run_dir, summary)
        finish_wandb()
        if env is not None:
            env.close()
        if summary.get("requeue") and process_rank() == 0:
            slurm_requeue()  # after summary.json: SLURM ends this job right away
    return summary


def _relative(path: Path | None, run_dir: Path) -> str | None:
    """``path`` relative to the run dir (as summary.json names files), if it is inside it."""
    if path is None:
        return None
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return str(path)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point ``rl-train``; returns the final greedy return (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    try:
        summary = train(
            cfg,
            run_dir=Path(hydra_cfg.runtime.output_dir),
            overrides=list(hydra_cfg.overrides.task),
        )
    except (ConfigError, CheckpointError) as exc:  # a clear message, no traceback, exit status 2
        print(f"[rl-train] {exc}", file=sys.stderr)
        sys.exit(2)
    except TrainingInterrupted as exc:  # also ends a sweep: the user or the cluster asked
        print(f"[rl-train] interrupted: {exc} -> resume with resume=<run dir>", file=sys.stderr)
        sys.exit(exc.exit_code)
    except TrainingDiverged as exc:
        if hydra_cfg.mode == RunMode.MULTIRUN:  # one diverged job must not end a sweep
            log.error("[rl-train] job %s diverged: %s", hydra_cfg.job.num, exc)
            return None
        print(f"[rl-train] diverged: {exc}; see summary.json", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        # one failed job must not end a sweep: its summary.json says "failed" with the error,
        # the other jobs go on, and rl-report lists it
        log.error(
            "[rl-train] job %s failed: %s: %s -> %s/summary.json; the sweep goes on",
            hydra_cfg.job.num,
            type(exc).__name__,
            exc,
            hydra_cfg.runtime.output_dir,
        )
        return None
    print(
        f"[rl-train] {summary['status']}: eval_return_mean={summary['eval_return_mean']:.1f} "
        f"± {summary['eval_return_std']:.1f} over {summary['eval_episodes']} episodes, "
        f"{summary['env_steps']} env steps in {summary['wall_s']:.1f} s -> "
        f"{summary.get('run_dir', hydra_cfg.runtime.output_dir)}/summary.json"
    )
    return summary["eval_return_mean"]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
