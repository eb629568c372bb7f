"""rl-eval reloads a run's checkpoint and reproduces its final greedy evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from rl_lightning.evaluate import load_q_network, main, resolve_checkpoint
from rl_lightning.summary import read_summary
from rl_lightning.train import CHECKPOINT_NAME, train

OVERRIDES = ["debug=fast", "logger=none", "total_env_steps=600", "eval.final_episodes=4"]


@pytest.fixture
def trained_run(compose_config, tmp_path):
    cfg = compose_config(OVERRIDES)
    train(cfg, run_dir=tmp_path, overrides=OVERRIDES)
    return tmp_path


def test_rl_eval_reproduces_the_final_evaluation(trained_run, capsys) -> None:
    summary = read_summary(trained_run)
    # same checkpoint, same evaluation seed (the run's seed + eval.seed_offset), same episode
    # count: a greedy policy on deterministic CartPole dynamics gives the same returns
    result = main([str(trained_run), "--episodes", "4"])
    assert result["returns"] == summary["eval_returns"]
    assert result["return_mean"] == pytest.approx(summary["eval_return_mean"])
    written = json.loads((trained_run / "eval.json").read_text())
    assert written["return_mean"] == result["return_mean"]
    assert written["episodes"] == 4
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["return_std"] == pytest.approx(summary["eval_return_std"])


def test_loaded_network_equals_the_checkpoint(trained_run) -> None:
    net, config = load_q_network(trained_run / CHECKPOINT_NAME)
    state = torch.load(trained_run / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    for name, value in net.state_dict().items():
        assert torch.equal(value, state["state_dict"][f"q_network.{name}"])
    assert config["env"]["id"] == "CartPole-v1"


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resolve_checkpoint(tmp_path)


def test_other_seed_and_output_file(trained_run, tmp_path) -> None:
    out = tmp_path / "other.json"
    result = main(
        [str(trained_run / CHECKPOINT_NAME), "--episodes", "3", "--seed", "7", "--output", str(out)]
    )
    assert result["seed"] == 7 and len(result["returns"]) == 3
    assert json.loads(out.read_text())["returns"] == result["returns"]


def test_console_script_exits_0_and_prints_one_json_line(trained_run) -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = shutil.which("rl-eval") or str(Path(sys.executable).parent / "rl-eval")
    proc = subprocess.run(
        [script, str(trained_run), "--episodes", "2"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["episodes"] == 2
