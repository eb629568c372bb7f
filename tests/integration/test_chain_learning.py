"""Learning on the 6-state chain MDP: the linear head over one-hot states is a Q table.

The behaviour policy is uniform (constant epsilon = 1). Q-learning (and Double Q) are
off-policy, so from uniform data they still converge to Q*; Expected SARSA averages the
bootstrap over the behaviour policy, so it converges to Q of the uniform policy instead.
The chain is deterministic, so every TD target is exact and the tables converge tightly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rl_lightning.envs import chain_optimal_q
from rl_lightning.train import CHECKPOINT_NAME, train

GAMMA = 0.9
NUM_STATES = 6

TABLE_OVERRIDES = [
    "env=chain",
    "arch.encoder.hidden_sizes=[]",
    "arch.head.bias=false",
    "arch.head.init_zero=true",
    # uniform behaviour: epsilon = 1 from the first step to the last
    "exploration.schedule.start=1.0",
    "exploration.schedule.end=1.0",
    f"gamma={GAMMA}",
    "loss=mse",
    "optim=sgd",
    # per update, a table entry seen in a fraction p of the batch moves 2 * lr * p of the way
    # to its target (p ~ 1/10 here): a step of ~0.1 per update
    "optim.lr=0.5",
    "target=hard",
    "target.every_updates=20",
    "max_grad_norm=null",
    "lr_end_factor=1.0",  # a constant learning rate
    "env_steps_per_update=1",
    "updates_per_batch=8",
    "total_env_steps=2000",
    "batch_size=64",
    "buffer.learning_starts_env_steps=200",
    "logger=none",
    "progress_bar=false",
    "eval.every_env_steps=0",
    "eval.final_episodes=8",
    "eval.episodes=8",
]


def learned_table(run_dir) -> np.ndarray:
    """The head's weight (actions, states) as a (non-terminal states, actions) table."""
    checkpoint = torch.load(run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    weight = checkpoint["state_dict"]["q_network.head.weight"].numpy()
    assert weight.shape == (2, NUM_STATES)
    return weight[:, : NUM_STATES - 1].T


def uniform_policy_q(num_states: int, gamma: float, iterations: int = 2000) -> np.ndarray:
    """Reference: Q of the uniform random policy by iterative policy evaluation."""
    q = np.zeros((num_states, 2))
    for _ in range(iterations):
        v = q.mean(axis=1)
        v[num_states - 1] = 0.0
        new = np.zeros_like(q)
        for s in range(num_states - 1):
            for a, move in ((0, -1), (1, 1)):
                s2 = min(max(s + move, 0), num_states - 1)
                new[s, a] = float(s2 == num_states - 1) + gamma * v[s2]
        q = new
    return q[: num_states - 1]


def test_optimal_q_by_hand() -> None:
    # Q*(s, right) = 0.9^(4 - s); Q*(s, left) = 0.9 * V*(max(s - 1, 0)) = 0.9^(6 - s), s >= 1
    expected = np.array(
        [
            [0.9**5, 0.9**4],  # s=0: left stays in 0
            [0.9**5, 0.9**3],
            [0.9**4, 0.9**2],
            [0.9**3, 0.9],
            [0.9**2, 1.0],
        ]
    )
    np.testing.assert_allclose(chain_optimal_q(NUM_STATES, GAMMA), expected, atol=1e-12)


@pytest.mark.parametrize("estimator", ["q_learning", "double_q"])
def test_q_learning_from_uniform_behaviour_finds_q_star(
    compose_config, tmp_path, estimator
) -> None:
    overrides = [*TABLE_OVERRIDES, f"estimator={estimator}"]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed"
    assert summary["env_steps"] >= 2000
    table = learned_table(tmp_path)
    q_star = chain_optimal_q(NUM_STATES, GAMMA)
    np.testing.assert_allclose(table, q_star, atol=0.05)
    # the greedy policy goes right from every state: the return is 1 in every episode
    assert summary["eval_return_mean"] == 1.0


def test_expected_sarsa_from_uniform_behaviour_finds_q_uniform(compose_config, tmp_path) -> None:
    overrides = [*TABLE_OVERRIDES, "estimator=expected_sarsa"]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed"
    q_uniform = uniform_policy_q(NUM_STATES, GAMMA)
    assert np.abs(q_uniform - chain_optimal_q(NUM_STATES, GAMMA)).max() > 0.2  # a different answer
    np.testing.assert_allclose(learned_table(tmp_path), q_uniform, atol=0.05)


@pytest.mark.slow
def test_sarsa_from_uniform_behaviour_finds_q_uniform(compose_config, tmp_path) -> None:
    # SARSA's bootstrap a_{t+1} is random here, so its targets are noisy: a smaller step, more data
    overrides = [
        *TABLE_OVERRIDES,
        "estimator=sarsa",
        "optim.lr=0.05",
        "batch_size=128",
        "total_env_steps=20000",
    ]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed"
    np.testing.assert_allclose(
        learned_table(tmp_path), uniform_policy_q(NUM_STATES, GAMMA), atol=0.05
    )
