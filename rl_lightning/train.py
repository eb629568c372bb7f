"""rl-train: compose the config, build the components, train, evaluate, write the summary.

rl-train                                  # the default DQN on CartPole-v1
rl-train env=acrobot target=polyak seed=3 # change components on the command line
rl-train -m seed=0,1,2,3,4                # a sweep over seeds (Hydra multirun)
"""

from __future__ import annotations

import functools
import logging
import os
import time
import traceback
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rl_lightning.callbacks import (
    EnvStepProgressBar,
    GreedyEvaluationCallback,
    RolloutMetricsCallback,
)
from rl_lightning.config import register_schemas
from rl_lightning.data import ReplayDataModule
from rl_lightning.envs import make_vector_env
from rl_lightning.evaluation import evaluate_greedy
from rl_lightning.exploration import Actor
from rl_lightning.loggers import build_loggers, finish_wandb
from rl_lightning.module import QLearningModule
from rl_lightning.summary import write_summary

CONFIG_DIR = str(resources.files("rl_lightning.conf"))
CHECKPOINT_NAME = "checkpoints/last.ckpt"

register_schemas()


def build_q_network(
    cfg: DictConfig, obs_shape: tuple[int, ...], num_actions: int
) -> torch.nn.Module:
    """The ``arch`` node with the runtime facts (never written in YAML) filled in."""
    return instantiate(cfg.arch, obs_shape=list(obs_shape), num_actions=num_actions)


def env_spaces(env: gym.vector.VectorEnv) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of a discrete-action vector env."""
    obs_shape = env.single_observation_space.shape
    assert obs_shape is not None
    return tuple(obs_shape), int(env.single_action_space.n)  # type: ignore[attr-defined]


def make_env(cfg: DictConfig, num_envs: int | None = None):
    env_cfg = cast(dict[str, Any], OmegaConf.to_container(cfg.env, resolve=True))
    if num_envs is not None:
        env_cfg["num_envs"] = num_envs
    return make_vector_env(**env_cfg)


def quiet_lightning() -> None:
    """Keep Lightning's warnings, drop its start-up chatter (accelerator and logger tips)."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


def train(cfg: DictConfig, *, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train one agent; always writes ``run_dir/summary.json``; returns the summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
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
    try:
        quiet_lightning()
        torch.set_num_threads(int(cfg.torch_threads))
        pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
        env = make_env(cfg)
        obs_shape, num_actions = env_spaces(env)
        q_network = build_q_network(cfg, obs_shape, num_actions)
        exploration = instantiate(cfg.exploration)
        estimator = instantiate(cfg.estimator)
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
        datamodule = ReplayDataModule(
            env=env,
            policy=Actor(q_network, exploration, seed=int(cfg.seed)),
            capacity=cfg.buffer.capacity,
            seed=int(cfg.seed),
            batch_size=cfg.batch_size,
            n_step=estimator.n_step,
            total_env_steps=cfg.total_env_steps,
            learning_starts_env_steps=cfg.buffer.learning_starts_env_steps,
            env_steps_per_update=cfg.env_steps_per_update,
            updates_per_batch=cfg.updates_per_batch,
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
        loggers = build_loggers(cfg.logger, run_dir=run_dir, config=config, overrides=overrides)
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
        trainer.fit(module, datamodule=datamodule)
        trainer.save_checkpoint(str(run_dir / CHECKPOINT_NAME))
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
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        summary["traceback"] = traceback.format_exc()
        raise
    finally:
        if datamodule is not None:
            summary["env_steps"] = int(datamodule.collector.env_steps)
            summary["episodes"] = int(datamodule.collector.episodes)
        if module is not None:
            summary["updates"] = int(module.updates)
        summary["wall_s"] = time.perf_counter() - start
        summary["env_steps_per_s"] = summary["env_steps"] / max(summary["wall_s"], 1e-9)
        write_summary(run_dir, summary)
        finish_wandb()
        if env is not None:
            env.close()
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The Hydra entry point ``rl-train``; returns the final greedy return (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    summary = train(
        cfg, run_dir=Path(hydra_cfg.runtime.output_dir), overrides=list(hydra_cfg.overrides.task)
    )
    print(
        f"[rl-train] {summary['status']}: eval_return_mean={summary['eval_return_mean']:.1f} "
        f"± {summary['eval_return_std']:.1f} over {summary['eval_episodes']} episodes, "
        f"{summary['env_steps']} env steps in {summary['wall_s']:.1f} s -> "
        f"{hydra_cfg.runtime.output_dir}/summary.json"
    )
    return summary["eval_return_mean"]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
