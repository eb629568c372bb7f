"""Every config option composes; every component option (and preset) trains a few hundred steps.

The option lists are read from ``conf/<group>/*.yaml`` at collection time, so a new option is
tested as soon as its file exists.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from rl_lightning.builders import build_q_network
from rl_lightning.data import sampler_class
from rl_lightning.estimators import Estimator
from rl_lightning.run import Run
from rl_lightning.summary import REQUIRED_KEYS, SUMMARY_FILE, read_summary
from rl_lightning.train import CHECKPOINT_NAME, CONFIG_DIR, train

CONF = Path(CONFIG_DIR)
GROUPS = (
    "env",
    "arch",
    "estimator",
    "exploration",
    "buffer",
    "target",
    "loss",
    "optim",
    "trainer",
    "logger",
    "debug",
    "experiment",
)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


#: the arch presets for image observations (experiment=atari_dqn, minatar_dqn train them)
IMAGE_ARCHS = ("minatar_cnn", "nature_cnn")
ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def interpolated(value: object) -> bool:
    """Whether a raw YAML value is an interpolation (``${...}``: compared resolved elsewhere)."""
    return isinstance(value, str) and "${" in value


def package_of(path: Path) -> str:
    """The ``# @package`` directive of a config file (default: its group)."""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# @package"):
            return stripped.split()[-1]
        if stripped and not stripped.startswith("#"):
            break
    return "_group_"


def leaves(node, prefix: str = ""):
    """(dotted key, value) of every leaf of a raw YAML node; lists and empty dicts are leaves."""
    if isinstance(node, DictConfig) and len(node) > 0:
        for key in node:
            yield from leaves(node._get_node(key), f"{prefix}{key}.")
    else:
        value = (
            OmegaConf.to_container(node)
            if isinstance(node, (DictConfig, ListConfig))
            else node._value()
        )
        yield prefix[:-1], value


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert (CONF / group).is_dir(), group
        if group != "experiment":  # presets are optional
            assert options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes(compose_config, group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    path = CONF / group / f"{option}.yaml"
    package = package_of(path)
    if package == "_global_":
        root = cfg
    elif package == "_group_":
        root = cfg[group]
    else:
        root = OmegaConf.select(cfg, package)
    raw = OmegaConf.load(path)
    checked = 0
    for key, value in leaves(raw):
        # compose() drops the `hydra` node (sweep settings of the ablation presets)
        if key.split(".")[0] in ("defaults", "hydra") or interpolated(value):
            continue
        assert OmegaConf.select(root, key) == value, f"{group}={option}: {key}"
        checked += 1
    assert checked > 0 or group == "loss"  # mse.yaml only names its class
    # a preset's `override /G: O` entries select those options (where it sets no value itself);
    # a `/G: O` entry of a `_global_` option (conf/ablation/) sets that option's keys at the root
    own_keys = {k for k, _ in leaves(raw)}
    for entry in raw.get("defaults", []):
        if isinstance(entry, str):  # another option of the same group (trainer/cpu: `default`)
            if entry != "_self_":
                for sub, value in leaves(OmegaConf.load(CONF / group / f"{entry}.yaml")):
                    if sub not in own_keys and not interpolated(value):
                        assert OmegaConf.select(root, sub) == value, f"{entry}: {sub}"
                        checked += 1
            continue
        for key, chosen in entry.items():
            other = key.split()[-1].strip("/")
            if not key.startswith(("override", "/")) and (CONF / group / other).is_dir():
                # a nested group of this group (arch/mlp.yaml: `encoder: mlp` is
                # conf/arch/encoder/mlp.yaml, composed at arch.encoder)
                for sub, value in leaves(OmegaConf.load(CONF / group / other / f"{chosen}.yaml")):
                    assert OmegaConf.select(root[other], sub) == value, f"{key}: {sub}"
                    checked += 1
                continue
            option_path = CONF / other / f"{chosen}.yaml"
            if package_of(option_path) == "_global_":
                for sub, value in leaves(OmegaConf.load(option_path)):
                    if sub.split(".")[0] != "defaults" and sub not in own_keys:
                        assert OmegaConf.select(cfg, sub) == value, f"{key}: {sub}"
                        checked += 1
                continue
            own = {k for k, _ in leaves(raw[other])} if other in raw else set()
            for sub, value in leaves(OmegaConf.load(option_path)):
                if sub not in own and sub.split(".")[0] != "defaults" and not interpolated(value):
                    assert OmegaConf.select(cfg[other], sub) == value, f"{key}: {sub}"
                    checked += 1
    # every interpolation resolves and the schema accepts the composed config
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 0


def test_components_instantiate(compose_config) -> None:
    """Every option of the ``_target_`` groups builds the object it names."""
    env = gym.make_vec("CartPole-v1", 1)
    for option in options("arch"):
        if option in IMAGE_ARCHS:  # built on their envs by the experiment presets' runs below
            continue
        net = build_q_network(
            compose_config([f"arch={option}"]), env
        )  # CartPole: 4 dims, 2 actions
        assert net(torch.zeros(5, 4)).shape == (5, 2)
    for option in options("estimator"):
        assert isinstance(instantiate(compose_config([f"estimator={option}"]).estimator), Estimator)
    for option in options("exploration"):
        exploration = instantiate(compose_config([f"exploration={option}"]).exploration)
        probs = exploration.probs(torch.tensor([[0.0, 1.0, 0.5]]), 0)
        torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    for option in options("target"):
        cfg = compose_config([f"target={option}"])
        update = instantiate(cfg.target)
        assert type(update).__name__ == cfg.target._target_.rsplit(".", 1)[-1]
    for option in options("optim"):
        cfg = compose_config([f"optim={option}"])
        optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(2))])
        assert type(optimizer).__name__ == cfg.optim._target_.rsplit(".", 1)[-1]
        assert optimizer.param_groups[0]["lr"] == cfg.optim.lr
    # the losses by hand at TD error 2: mse = 2^2 = 4; huber(delta=1) = 1 * (2 - 0.5) = 1.5
    expected_loss = {"mse": 4.0, "huber": 1.5}
    for option in options("loss"):
        loss = instantiate(compose_config([f"loss={option}"]).loss)
        value = loss(torch.tensor([1.0]), torch.tensor([3.0])).item()
        if option in expected_loss:
            assert value == pytest.approx(expected_loss[option])


def test_gpu_trainer_composes(compose_config) -> None:
    cfg = compose_config(["trainer=gpu"])  # composed only: there is no GPU here
    assert cfg.trainer.accelerator == "gpu"
    assert cfg.trainer.devices == 1


# -- short training runs ---------------------------------------------------------------------

TRAIN_CASES = (
    [
        f"{group}={option}"
        for group in ("target", "loss", "optim", "env")
        for option in options(group)
    ]
    + [f"experiment={option}" for option in options("experiment")]
    # every estimator (every TD-target path of the loss)
    + [f"estimator={option}" for option in options("estimator")]
    + ["estimator.n_step=3"]
)


def check_summary(run_dir: Path, summary: dict, cfg: DictConfig, overrides: list[str]) -> None:
    assert summary["status"] == "completed", summary.get("error")
    assert set(REQUIRED_KEYS) <= set(summary)
    assert read_summary(run_dir) == summary  # what was returned is what was written
    total, lanes = cfg.total_env_steps, cfg.env.num_envs
    # the stream stops at the first vector step that reaches the budget
    assert total <= summary["env_steps"] < total + lanes
    # warm-up to learning_starts, then bursts of K * E env steps, each followed by K updates
    # (online: K = 1, each update learns from the last E env steps)
    k, e = cfg.updates_per_batch, cfg.env_steps_per_update
    if sampler_class(cfg.buffer.sampler._target_).online:
        k = 1
    bursts = math.ceil((total - cfg.buffer.learning_starts_env_steps) / (k * e))
    if cfg.interleaved:  # one update after every E env steps
        assert summary["updates"] == math.ceil((total - cfg.buffer.learning_starts_env_steps) / e)
    else:
        assert summary["updates"] == k * bursts
    assert summary["eval_episodes"] == cfg.eval.final_episodes
    assert len(summary["eval_returns"]) == cfg.eval.final_episodes
    assert summary["seed"] == cfg.seed
    assert summary["overrides"] == overrides
    # the run's wall time holds its training's (one clock, read later); speed is their quotient
    assert summary["wall_s"] >= summary["train_wall_s"]
    assert summary["env_steps_per_s"] == pytest.approx(summary["env_steps"] / summary["wall_s"])
    assert (run_dir / CHECKPOINT_NAME).is_file()


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_option_trains(compose_config, tmp_path: Path, case: str) -> None:
    overrides = ["debug=fast", "logger=csv", case]
    cfg = compose_config(overrides)
    assert cfg.total_env_steps == 300  # debug=fast wins over presets
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    check_summary(tmp_path, summary, cfg, overrides)
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "eval/return_mean", "train/loss"} <= set(header)


@pytest.mark.parametrize("logger", ["none", "tensorboard"])
def test_other_loggers_train(compose_config, tmp_path: Path, logger: str) -> None:
    overrides = ["debug=fast", f"logger={logger}"]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    check_summary(tmp_path, summary, cfg, overrides)
    assert not (tmp_path / "csv").exists()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert bool(events) == (logger == "tensorboard")


def test_failed_run_still_writes_the_summary(compose_config, tmp_path: Path) -> None:
    overrides = ["debug=fast", "logger=none", "env.id=NoSuchEnv-v0"]
    cfg = compose_config(overrides)
    with pytest.raises(Exception, match="NoSuchEnv"):
        train(cfg, run_dir=tmp_path, overrides=overrides)
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed"
    assert set(REQUIRED_KEYS) <= set(summary)
    assert "NoSuchEnv" in summary["error"]
    assert (summary["env_steps"], summary["updates"], summary["overrides"]) == (0, 0, overrides)


def test_rl_train_console_script_with_offline_wandb(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "rl-train"
    if not script.exists():
        script = Path(shutil.which("rl-train") or "rl-train")
    run_dir = tmp_path / "run"
    env = dict(os.environ)
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        OMP_NUM_THREADS="1",
        HYDRA_FULL_ERROR="1",
        # keep W&B's own files out of the home directory
        WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb_data"),
    )
    proc = subprocess.run(
        [str(script), "debug=fast", "logger=wandb", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[rl-train] completed" in proc.stdout
    summary = read_summary(run_dir)
    assert (run_dir / SUMMARY_FILE).is_file()
    assert summary["status"] == "completed"
    assert set(REQUIRED_KEYS) <= set(summary)
    assert summary["overrides"] == ["debug=fast", "logger=wandb"]  # hydra.* is not a task override
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and offline_runs[0].is_dir()
    assert list(offline_runs[0].glob("run-*.wandb"))  # the run's data, ready for `wandb sync`
    assert not list((run_dir / "wandb").glob("run-*"))  # nothing went online


def train_and_compare_weights(compose_config, tmp_path: Path, overrides: list[str]):
    """Train; return the largest change of any online-network weight (initial -> checkpoint)."""
    cfg = compose_config(overrides)
    initial: dict[str, torch.Tensor] = {}

    def remember_initial_weights(run: Run) -> None:
        initial.update({k: v.detach().clone() for k, v in run.q_network.state_dict().items()})

    summary = train(cfg, run_dir=tmp_path, overrides=overrides, on_built=remember_initial_weights)
    assert summary["status"] == "completed"
    check_summary(tmp_path, summary, cfg, overrides)  # bursts of K updates, as computed there
    final = torch.load(tmp_path / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    return max(
        (final["state_dict"][f"q_network.{k}"] - v).abs().max().item() for k, v in initial.items()
    )


def test_constant_lr_debug_run_learns(compose_config, tmp_path: Path) -> None:
    overrides = ["debug=fast", "logger=none", "lr_end_factor=1.0"]
    assert train_and_compare_weights(compose_config, tmp_path, overrides) > 1e-3


def test_default_debug_run_learns(compose_config, tmp_path: Path) -> None:
    overrides = ["debug=fast", "logger=none"]
    assert train_and_compare_weights(compose_config, tmp_path, overrides) > 1e-3
