"""N runs of one configuration with different seeds in one process (``train_ensemble``).

Each member is a whole run -- its own env lanes, actor and exploration stream, replay buffer,
callbacks (evaluation, rollout metrics, checkpoints), loggers, run dir and ``summary.json``
(``run.RunRecord``) -- built by the same builders, in the same order, as the single run with its
seed; only the learning is shared: one ``EnsembleLearner`` update for all members (vmapped over
the stacked networks). The members' streams are driven in lockstep by a plain loop, not by a
Lightning Trainer: each member's callbacks get a ``MemberTrainer``, which offers them what they
read of a Trainer (its datamodule, loggers, callbacks, ``save_checkpoint``). A member that fails
or diverges (a callback raises: the fault injection, a non-finite check before a checkpoint)
gets its own summary status, is frozen and leaves the loop; the others go on.

A stopped ensemble resumes from its members' checkpoints (``resume=auto``, or each member's
``resume=<run dir>``; all members or none). ``logger=wandb`` gives each member its own W&B run
(``MemberWandbLogger``).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rl_lightning.builders import (
    build_callbacks,
    build_datamodule,
    build_module,
    build_q_network,
    check_accelerator,
    make_env,
)
from rl_lightning.callbacks import EnvStepProgressBar
from rl_lightning.context import RunContext
from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.data.dataset import InterleavedUpdates
from rl_lightning.data.samplers import sampler_class
from rl_lightning.ensemble import member_logs
from rl_lightning.ensemble.learner import EnsembleLearner, check_members, join
from rl_lightning.ensemble.trainer import MemberTrainer
from rl_lightning.ensemble.wandb_logger import MemberWandbLogger
from rl_lightning.loggers import build_loggers
from rl_lightning.module import QLearningModule
from rl_lightning.resume import ResumePoint, continue_csv_log
from rl_lightning.run import Run, RunRecord, build_watchdog, plan_checkpoints
from rl_lightning.signals import StopSignals
from rl_lightning.validation import ConfigError, validate_config

#: config keys the members of one ensemble may set apart (resume: each its own run dir; the
#: fault injection: tests of a member that fails while the others go on)
PER_MEMBER_KEYS = ("seed", "fault_injection", "resume")

log = logging.getLogger("rl_lightning")


class Unsupported(ValueError):
    """These configs cannot train as an ensemble (the launcher runs them as single runs)."""


def check_ensemble_config(cfg: DictConfig) -> None:
    """``Unsupported`` naming the reason if runs of ``cfg`` cannot be ensemble members: before
    anything of a run exists, from the config and the network it builds (then dropped). A
    ``ConfigError`` first if the config is not valid at all."""
    validate_config(cfg)
    if sampler_class(str(cfg.buffer.sampler._target_)).needs_td_errors:
        raise Unsupported("an ensemble learns from uniform replay (no prioritized replay yet)")
    if "ddp" in str(cfg.trainer.get("strategy")) or int(cfg.trainer.get("num_nodes", 1)) > 1:
        raise Unsupported("an ensemble is one process: DDP runs as single runs")
    if str(cfg.trainer.get("accelerator", "cpu")) in ("gpu", "cuda"):
        raise Unsupported("ensembles train on the CPU for now: GPU runs run as single runs")
    env = make_env(cfg)
    try:
        exploration = instantiate(cfg.exploration)
        module = build_module(cfg, build_q_network(cfg, env, exploration), exploration)
        check_members([module])
    except ValueError as exc:
        raise Unsupported(str(exc)) from exc
    finally:
        env.close()


class _Member:
    """One member: its record (summary.json), its run's components, its stream."""

    def __init__(self, record: RunRecord, run: Run, trainer: MemberTrainer) -> None:
        self.record, self.run, self.trainer = record, run, trainer
        self.stream: Iterator[Any] | None = None
        self.last: Any = None  # its latest item (a frozen member's stand-in minibatches)
        self.ended = False  # its stream ended: the budget is spent
        self.failed = False  # an exception ended it (its record has written its summary)

    @property
    def module(self) -> QLearningModule:
        return self.run.module

    @property
    def live(self) -> bool:
        return not (self.ended or self.failed)


def train_ensemble(
    cfgs: Sequence[DictConfig], *, run_dirs: Sequence[Path], overrides: Sequence[list[str]]
) -> list[dict[str, Any]]:
    """Train ``len(cfgs)`` members (configs that differ only in ``seed``) in one process; each
    writes ``run_dir/summary.json`` like a single run. Returns the members' summaries."""
    shapes = []
    for cfg in cfgs:
        shape = cast(dict, OmegaConf.to_container(cfg, resolve=False))
        shapes.append({k: v for k, v in shape.items() if k not in PER_MEMBER_KEYS})
    if any(shape != shapes[0] for shape in shapes):
        raise ConfigError(
            f"ensemble members must share their configuration except {', '.join(PER_MEMBER_KEYS)}"
        )
    check_ensemble_config(cfgs[0])
    stop = StopSignals()
    records = []
    for cfg, run_dir, member_overrides in zip(cfgs, run_dirs, overrides, strict=True):
        record = RunRecord(cfg, run_dir=run_dir, overrides=list(member_overrides))
        record.stop = stop  # one set of signal flags for all members
        records.append(record)
    with member_logs.routed(log):  # each member's messages into its own train.log
        members: list[_Member] = []
        try:
            members = _build(records, list(cfgs), [list(o) for o in overrides])
            _fit(members)
            for member in members:
                if not member.failed:
                    with _member_failures(member):
                        member.record.finish()
        except BaseException:
            exc = sys.exc_info()
            for k, record in enumerate(records):
                if k >= len(members) or not members[k].failed:
                    record.__exit__(*exc)
            raise
        for member in members:
            if not member.failed:
                member.record.__exit__(None, None, None)
                _finalize_loggers(member, "success")
        return [record.summary for record in records]


def _build(
    records: list[RunRecord], cfgs: list[DictConfig], overrides: list[list[str]]
) -> list[_Member]:
    """Each member's components in the single run's order (the random streams depend on it):
    modules first, then the learner (it rebinds the networks' parameters to the stacks), then
    the data sides (their numpy acting plans read the parameters), callbacks, loggers."""
    started = []
    for record, member_cfg, member_overrides in zip(records, cfgs, overrides, strict=True):
        with member_logs.member(record.run_dir, int(member_cfg.seed)):
            cfg, context, point = record.start(member_cfg, member_overrides)
            check_accelerator(cfg)
            torch.set_num_threads(int(cfg.torch_threads))
            pl.seed_everything(int(cfg.seed), workers=False, verbose=False)
            env = make_env(cfg)
            exploration = instantiate(cfg.exploration)
            q_network = build_q_network(cfg, env, exploration)
            module = build_module(cfg, q_network, exploration)
        started.append((record, cfg, context, env, q_network, module, exploration, point))
    if len({s[7] is None for s in started}) != 1:
        raise ConfigError("resume all members of an ensemble or none (resume=auto for all)")
    learner = EnsembleLearner([s[5] for s in started])
    design = "hand-batched layers" if learner.design == "batched" else "vmap"
    log.info(f"ensemble of {learner.size} members, one update for all through {design}")
    members = []
    for k, (record, cfg, context, env, q_network, module, exploration, point) in enumerate(started):
        with member_logs.member(context.run_dir, context.seed):
            datamodule = build_datamodule(
                cfg, env, q_network, exploration, n_step=module.estimator.n_step
            )
            module.watchdog = build_watchdog(cfg, env, datamodule)
            plan_checkpoints(cfg, context, datamodule)
            callbacks = [
                c for c in build_callbacks(cfg, context) if not isinstance(c, EnvStepProgressBar)
            ]
            loggers = _member_loggers(cfg, context, point)
        trainer = MemberTrainer(k, learner, module, datamodule, loggers, callbacks)
        module._trainer = trainer  # type: ignore[assignment]  # module.loggers reads it
        run = Run(cfg, context, env, q_network, module, datamodule, cast(Any, trainer), point)
        record.watch(run)
        members.append(_Member(record, run, trainer))
    if started[0][7] is not None:
        _restore(learner, members)
    return members


def _member_loggers(cfg: DictConfig, context: RunContext, point: ResumePoint | None) -> list[Any]:
    """A member's loggers, as a single run's (``logger=wandb``: its own W&B run)."""
    config = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    overrides = list(context.overrides)
    if cfg.logger.kind == "wandb":
        return [
            MemberWandbLogger(
                cfg.logger, run_dir=context.run_dir, config=config, overrides=overrides
            )
        ]
    loggers = build_loggers(
        cfg.logger,
        run_dir=context.run_dir,
        config=config,
        overrides=overrides,
        purge_step=point.state["env_steps"] if point is not None else None,
    )
    if point is not None:
        continue_csv_log(loggers, rows=point.state["csv_rows"])
    return loggers


def _restore(learner: EnsembleLearner, members: list[_Member]) -> None:
    """Each member from its checkpoint (as ``trainer.fit(ckpt_path=...)`` restores a single
    run: module hooks and weights, data side, callbacks), then the shared optimizer from the
    members' slices of its state."""
    slices = []
    for member in members:
        assert member.run.point is not None
        ckpt = torch.load(member.run.point.checkpoint, map_location="cpu", weights_only=True)
        module, trainer = member.module, member.trainer
        module.on_load_checkpoint(ckpt)
        with torch.no_grad():  # into the views: the stacks take the values
            module.load_state_dict(ckpt["state_dict"])
        trainer.datamodule.load_state_dict(ckpt[type(trainer.datamodule).__qualname__])
        for callback in trainer.callbacks:
            state = ckpt["callbacks"].get(callback.state_key)
            if state is not None:
                callback.load_state_dict(state)
            callback.on_load_checkpoint(cast(Any, trainer), module, ckpt)
        slices.append(ckpt["optimizer_states"][0])
    learner.load_member_optimizer_states(slices)
    learner.updates = members[0].module.updates


@contextlib.contextmanager
def _member_failures(member: _Member) -> Iterator[None]:
    """An exception of one member ends that member only: its record writes the status (failed,
    diverged, interrupted) and the error into its summary; its weights are frozen."""
    try:
        with member_logs.member(member.run.context.run_dir, member.run.context.seed):
            yield
    except Exception:
        member.failed = True
        member.trainer.learner.frozen[member.trainer.member] = True
        member.record.__exit__(*sys.exc_info())
        _finalize_loggers(member, "failed")


def _finalize_loggers(member: _Member, status: str) -> None:
    for logger in member.trainer.loggers:
        logger.finalize(status)


def _fit(members: list[_Member]) -> None:
    learner = members[0].trainer.learner
    for member in members:
        with _member_failures(member):
            member.trainer.call("on_train_start")
            member.stream = iter(member.run.datamodule.dataset)
    batch_idx = 0
    while True:
        items: dict[int, Any] = {}
        for k, member in enumerate(members):
            if not member.live:
                continue
            with _member_failures(member):
                assert member.stream is not None
                item = next(member.stream, None)
                if item is None:  # the budget is spent
                    member.ended = True
                    learner.frozen[k] = True
                    member.trainer.call("on_train_end")
                else:
                    items[k] = member.last = item
        if not items:
            return
        _learn(learner, members, items)
        for k, item in items.items():
            member = members[k]
            if member.live:
                with _member_failures(member):
                    member.trainer.call("on_train_batch_end", None, item, batch_idx)
        batch_idx += 1


def _learn(learner: EnsembleLearner, members: list[_Member], items: dict[int, Any]) -> None:
    """The updates of one training step for every member, each on its item's minibatches (a
    member out of the loop -- frozen -- on stand-ins: its latest, or another member's)."""
    first = next(iter(items.values()))
    if isinstance(first, InterleavedUpdates):  # act, update, act, ... in lockstep
        iterators = {k: iter(item) for k, item in items.items()}
        while True:
            fresh = {k: next(it, None) for k, it in iterators.items()}
            if all(mb is None for mb in fresh.values()):
                break
            filler = next(mb for mb in fresh.values() if mb is not None)
            minibatches = [fresh.get(k) or filler for k in range(len(members))]
            updated = [k for k, mb in fresh.items() if mb]
            # interleaved: the learning rate before each update, from the env steps before it
            learner.anneal_lr([m.module.env_steps for m in members])
            _step(learner, members, join(minibatches), minibatches, updated)
    else:  # bursts: the learning rate set once, from the env steps before the burst
        learner.anneal_lr([m.module.env_steps for m in members])
        stand_in = [m.last if isinstance(m.last, TransitionBatch) else first for m in members]
        joined = join(stand_in, dim=1)  # once per burst: (K, N * B, ...)
        for j in range(first.actions.shape[0]):
            _step(learner, members, joined.map(operator.itemgetter(j)), stand_in, list(items))
    for k in items:
        module = members[k].module
        module.stats.steps_since_check.append((module.updates, module.env_steps))
        if module.stats.unlogged() >= module.log_every_updates:
            with _member_failures(members[k]):  # the value watchdog may stop the member
                module._log_train_metrics()


def _step(
    learner: EnsembleLearner,
    members: list[_Member],
    batch: TransitionBatch,
    minibatches: list[TransitionBatch],
    updated: list[int],
) -> None:
    """One update of every member on ``batch`` (their minibatches joined); the counters and
    statistics of the members in ``updated`` (each at its minibatch's env steps)."""
    start = time.perf_counter()
    losses, q_sa, target, norm = learner.update(batch)
    elapsed = time.perf_counter() - start
    for k in updated:
        module = members[k].module
        module.env_steps = minibatches[k].env_steps
        module.updates += 1
        module.stats.add(losses[k], q_sa[k], target[k], norm[k], module.updates)
        module.learn_time_s += elapsed / len(updated)
