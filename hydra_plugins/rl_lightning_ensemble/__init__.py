"""``hydra/launcher=ensemble``: a seed sweep packed into ensembles (many seeds in one process).

    rl-train -m 'seed=range(10)' hydra/launcher=ensemble             # one process, 10 members
    rl-train -m 'seed=range(10)' env=cartpole,acrobot hydra/launcher=ensemble   # 2 ensembles
    rl-train -m 'seed=range(20)' hydra/launcher=ensemble hydra.launcher.max_members=10
    rl-train -m 'seed=range(10)' hydra/launcher=ensemble hydra.launcher.n_jobs=2  # 2 x 5, in parallel

Jobs that differ only in ``seed`` (and ``fault_injection``, ``resume``) form one group; each group (in
chunks of ``max_members``) trains as one ``rl_lightning.ensemble.train_ensemble`` call. With
``n_jobs`` > 1 the ensembles train in that many worker processes at once (one per CPU core, or
per GPU), and the largest are halved until there are at least ``n_jobs`` of them. Jobs an
ensemble cannot train (``rl_lightning.ensemble.run.check_ensemble_config``: prioritized replay,
noisy or dropout networks, batchnorm, DDP, GPUs) run as single runs after the ensembles, with a
warning. Every job
still gets its own output dir under the sweep dir, with ``.hydra/`` and the files a single run
writes (``summary.json``, metrics, checkpoints), so ``rl-report`` reads the sweep unchanged. Hydra
requires launchers to live in the ``hydra_plugins`` package; the logic is in ``rl_lightning``.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class EnsembleLauncherConf:
    _target_: str = "hydra_plugins.rl_lightning_ensemble.EnsembleLauncher"
    #: members per ensemble at most (None: every seed of a group in one ensemble)
    max_members: int | None = None
    #: ensembles trained at once, each in its own worker process (1: in this process)
    n_jobs: int = 1


ConfigStore.instance().store(group="hydra/launcher", name="ensemble", node=EnsembleLauncherConf)


def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides that decide a job's group: all but the per-member ones
    (``ensemble.run.PER_MEMBER_KEYS``; imported here, not at the top: Hydra imports every
    plugin module when it scans for plugins)."""
    from rl_lightning.ensemble.run import PER_MEMBER_KEYS

    return tuple(
        o for o in overrides if o.split("=", 1)[0].lstrip("+~").split(".")[0] not in PER_MEMBER_KEYS
    )


def split(groups: Sequence[list[int]], max_members: int | None, n_jobs: int) -> list[list[int]]:
    """Each group in chunks of at most ``max_members``; then the largest chunk halved until
    there are ``n_jobs`` chunks (or every chunk has one member)."""
    chunks = []
    for indices in groups:
        size = max_members or len(indices)
        chunks += [indices[i : i + size] for i in range(0, len(indices), size)]
    while len(chunks) < n_jobs:
        largest = max(range(len(chunks)), key=lambda c: len(chunks[c]))
        whole = chunks[largest]
        if len(whole) < 2:
            break
        half = (len(whole) + 1) // 2
        chunks[largest : largest + 1] = [whole[:half], whole[half:]]
    return chunks


def _train(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ensemble (in a worker process when ``n_jobs`` > 1)."""
    from rl_lightning.ensemble.run import train_ensemble

    if multiprocessing.parent_process() is not None:  # a spawned worker: log to the console
        logging.basicConfig(
            level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
        )

    return train_ensemble(
        [m["cfg"] for m in members],
        run_dirs=[m["run_dir"] for m in members],
        overrides=[m["overrides"] for m in members],
    )


class EnsembleLauncher(Launcher):
    def __init__(self, max_members: int | None = None, n_jobs: int = 1) -> None:
        if n_jobs < 1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs} must be >= 1")
        self.max_members = max_members
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from rl_lightning.ensemble.run import Unsupported

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        groups: dict[tuple[str, ...], list[int]] = {}
        for idx, overrides in enumerate(job_overrides):
            groups.setdefault(group_key(overrides), []).append(idx)
        chunks = split(list(groups.values()), self.max_members, self.n_jobs)
        log.info(
            f"Launching {len(job_overrides)} jobs as {len(chunks)} ensemble(s)"
            + (f", {self.n_jobs} at a time" if self.n_jobs > 1 else "")
        )
        prepared = []
        for chunk in chunks:
            members: list[dict[str, Any]] = []
            for idx in chunk:
                overrides = list(job_overrides[idx])
                log.info(f"\t#{initial_job_idx + idx} : {' '.join(filter_overrides(overrides))}")
                members.append(self._prepare(overrides, initial_job_idx + idx))
                # the job's file handler off again: each member's messages go to its own
                # train.log (ensemble/member_logs.py), not to the last prepared job's
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            prepared.append(members)
        returns: list[JobReturn | None] = [None] * len(job_overrides)

        def collect(chunk: list[int], members: list[dict[str, Any]], summaries: list) -> None:
            for idx, member, summary in zip(chunk, members, summaries, strict=True):
                ret: JobReturn = member["return"]
                ret.status = JobStatus.COMPLETED
                ret.return_value = summary.get("eval_return_mean")
                returns[idx] = ret

        def results() -> Iterator[tuple[list[int], list[dict[str, Any]], Callable[[], list]]]:
            """Each ensemble's jobs, members and a call that returns its summaries."""
            if self.n_jobs == 1:
                for chunk, members in zip(chunks, prepared, strict=True):
                    yield chunk, members, functools.partial(_train, members)
                return
            # spawned workers: no state of this process (torch threads, signal handlers)
            payloads = [
                [{k: m[k] for k in ("cfg", "run_dir", "overrides")} for m in ms] for ms in prepared
            ]
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=context) as pool:
                futures = [pool.submit(_train, payload) for payload in payloads]
                yield from zip(chunks, prepared, [f.result for f in futures], strict=True)

        singles: list[tuple[int, dict[str, Any]]] = []  # the jobs of unsupported ensembles
        for chunk, members, summaries in results():
            try:
                collect(chunk, members, summaries())
            except Unsupported as exc:
                self._warn(chunk, exc, initial_job_idx)
                singles += zip(chunk, members, strict=True)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for idx, member in singles:  # one after another in this process, as the basic launcher
            assert self.task_function is not None
            returns[idx] = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=member["sweep_config"],
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [r for r in returns if r is not None]

    @staticmethod
    def _warn(chunk: list[int], exc: Exception, initial_job_idx: int) -> None:
        jobs = ", ".join(f"#{initial_job_idx + idx}" for idx in chunk)
        log.warning(f"jobs {jobs} cannot train as an ensemble ({exc}): they run as single runs")

    def _prepare(self, overrides: list[str], idx: int) -> dict[str, Any]:
        """The job's dir, ``.hydra/`` and config, made by Hydra's ``run_job`` around a task that
        only records them (the ensemble trains the members afterwards, together)."""
        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        seen: dict[str, Any] = {}

        def record(cfg: DictConfig) -> None:
            from hydra.core.hydra_config import HydraConfig

            hydra_cfg = HydraConfig.get()
            seen["cfg"] = cfg
            seen["run_dir"] = Path(hydra_cfg.runtime.output_dir)
            seen["overrides"] = list(hydra_cfg.overrides.task)

        seen["sweep_config"] = sweep_config
        seen["return"] = run_job(
            hydra_context=self.hydra_context,
            task_function=record,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        return seen
