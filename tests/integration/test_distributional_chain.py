"""C51 on the 6-state chain: the mean of the learned return distributions is Q*.

The chain is deterministic, so every return distribution is a point mass at Q*(s, a), which
lies between two atoms. The projection keeps the mean (inside the support), so the fixed point
of the projected distributional Bellman operator has mean Q* exactly, even though each
distribution is spread over two atoms.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_lightning.builders import load_q_network
from rl_lightning.envs import chain_optimal_q
from rl_lightning.train import CHECKPOINT_NAME, train

GAMMA = 0.9
NUM_STATES = 6

C51_TABLE = [
    "env=chain",
    "arch.encoder.hidden_sizes=[]",  # logits linear in the one-hot state: a table of logits
    "arch/head=distributional",
    "arch.head.atoms=11",
    "arch.head.v_min=0.0",
    "arch.head.v_max=1.0",
    "arch.head.init_zero=true",
    "exploration.schedule.start=1.0",  # uniform behaviour
    "exploration.schedule.end=1.0",
    f"gamma={GAMMA}",
    "optim=adam",
    "optim.lr=0.05",
    "target=hard",
    "target.every_updates=20",
    "max_grad_norm=null",
    "lr_end_factor=0.0",
    "env_steps_per_update=1",
    "updates_per_batch=8",
    "total_env_steps=3000",
    "batch_size=64",
    "buffer.learning_starts_env_steps=200",
    "logger=none",
    "progress_bar=false",
    "eval.every_env_steps=0",
    "eval.final_episodes=8",
    "eval.episodes=8",
]


def learned(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """Q (states, actions) and the head's distribution (states, actions, N) of the non-terminal
    states, from the run's final checkpoint."""
    network, _ = load_q_network(run_dir / CHECKPOINT_NAME)
    with torch.no_grad():
        states = torch.eye(NUM_STATES)[: NUM_STATES - 1]
        return network(states).numpy(), network.head.distribution(network.features(states)).numpy()


@pytest.mark.parametrize("estimator", ["q_learning", "double_q"])
def test_c51_from_uniform_behaviour_has_mean_q_star(compose_config, tmp_path, estimator) -> None:
    overrides = [*C51_TABLE, f"estimator={estimator}"]
    summary = train(compose_config(overrides), run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed"
    q, log_p = learned(tmp_path)
    probs = np.exp(log_p)
    np.testing.assert_allclose(
        q, chain_optimal_q(NUM_STATES, GAMMA), atol=0.005
    )  # measured: 2.5e-4
    # Q*(4, right) = 1 is an atom: its distribution is (almost) a point mass there
    assert probs[4, 1, -1] > 0.95
    assert summary["eval_return_mean"] == 1.0


def test_qr_dqn_from_uniform_behaviour_has_mean_q_star(compose_config, tmp_path) -> None:
    # QR-DQN: the quantiles of a point mass are all Q*(s, a), so their mean is Q* too
    overrides = [
        *[o for o in C51_TABLE if not o.startswith(("arch.head.", "arch/head="))],
        "arch/head=quantile",
        "arch.head.quantiles=5",
        "arch.head.init_zero=true",
        "estimator=q_learning",
    ]
    summary = train(compose_config(overrides), run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed"
    q, theta = learned(tmp_path)
    # measured: mean within 1e-7 of Q*, the 5 quantiles within 1e-6 of each other
    np.testing.assert_allclose(q, chain_optimal_q(NUM_STATES, GAMMA), atol=1e-3)
    assert np.ptp(theta, axis=-1).max() < 1e-3
    assert summary["eval_return_mean"] == 1.0
