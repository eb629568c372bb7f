"""Bad input on the ``rl-train`` command line fails at start: a message naming the key or the
path, a non-zero exit status, no training.

Config errors that Hydra catches while composing (unknown keys without ``+``, values of the
wrong type for a typed key) exit with Hydra's status 1 and its message; everything
``rl_lightning.validation`` catches exits with status 2 and one line without a traceback.
The output-directory cases use a path below a regular file: root (as in CI) may write into
any directory, whatever its mode, but never below a file.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_lightning.summary import read_summary
from rl_lightning.validation import ConfigError, check_output_dir


def rl_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rl_lightning.train", *args, "debug=fast", "logger=none"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("override", "messages"),
    [
        # an unknown key of a typed group
        (
            "env.num_env=8",
            [
                "Could not override 'env.num_env'",
                "Key 'num_env' not in 'EnvConfig'",
                "full_key: env.num_env",
            ],
        ),
        # a value of the wrong type for a typed key
        (
            "batch_size=abc",
            [
                "Error merging override batch_size=abc",
                "Value 'abc' of type 'str' could not be converted to Integer",
                "full_key: batch_size",
            ],
        ),
    ],
)
def test_hydra_rejects_unknown_keys_and_wrong_types(
    tmp_path: Path, override: str, messages: list[str]
) -> None:
    proc = rl_train(override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1
    for message in messages:
        assert message in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing was built


def test_a_continuous_action_env_fails_before_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = rl_train("env.id=Pendulum-v1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        "[rl-train] invalid config:\n  env.id='Pendulum-v1' has the action space "
        "Box(-2.0, 2.0, (1,), float32), and DQN-family methods need a discrete one"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and summary["env_steps"] == 0
    assert "Pendulum-v1" in summary["error"]


@pytest.mark.skipif(
    importlib.util.find_spec("Box2D") is not None, reason="needs a machine without Box2D"
)
def test_an_env_whose_extra_package_is_missing_names_it_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = rl_train("env.id=LunarLander-v3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        "[rl-train] invalid config:\n  env.id='LunarLander-v3' needs a package that is not "
        "installed: Box2D is not installed, you can install it by run `pip install swig` "
        'followed by `pip install "gymnasium[box2d]"`\n'
    ) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert read_summary(run_dir)["status"] == "failed"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
@pytest.mark.parametrize(("trainer", "instead"), [("gpu", "cpu"), ("ddp", "ddp_cpu")])
def test_trainer_gpu_without_a_gpu_is_one_clear_error(
    tmp_path: Path, trainer: str, instead: str
) -> None:
    run_dir = tmp_path / "run"
    proc = rl_train(f"trainer={trainer}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "[rl-train] trainer.accelerator=gpu, but torch.cuda.is_available() is False" in (
        proc.stderr
    )
    assert f"use trainer={instead}," in proc.stderr
    assert "Traceback" not in proc.stderr and "MisconfigurationException" not in proc.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and summary["env_steps"] == 0


def test_an_unwritable_run_dir_fails_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a directory\n")
    proc = rl_train(f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"[rl-train] the output directory {blocker / 'run'} cannot be written (Not a directory); "
        "choose another with hydra.run.dir=PATH (hydra.sweep.dir=PATH with -m)"
    )
    assert blocker.read_text() == "a file, not a directory\n"


def test_an_unwritable_sweep_dir_fails_before_any_job(tmp_path: Path) -> None:
    blocker = tmp_path / "results.txt"
    blocker.write_text("")
    proc = rl_train("-m", "seed=0,1", f"hydra.sweep.dir={blocker / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"the output directory {blocker / 'sweep'} cannot be written" in proc.stderr
    assert "Launching 2 jobs" not in proc.stdout + proc.stderr


def test_check_output_dir_creates_the_dir_and_leaves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "a" / "b"
    check_output_dir(run_dir)
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


@pytest.mark.parametrize("below", ["file", "proc"])
def test_check_output_dir_names_the_path(tmp_path: Path, below: str) -> None:
    if below == "file":
        (tmp_path / "f").write_text("")
        path = tmp_path / "f" / "run"
        reason = "Not a directory"
    else:  # /proc refuses new directories, also to root
        path = Path("/proc/rl-lightning-test/run")
        reason = "No such file or directory"
    with pytest.raises(ConfigError) as info:
        check_output_dir(path)
    assert str(info.value).startswith(f"the output directory {path} cannot be written ({reason})")
