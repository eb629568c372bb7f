"""Fixed points of the TD estimators on the 6-state chain, through the real ``train(...)``.

tests/integration/test_chain_learning.py learns from a *uniform* behaviour policy with a
linear-over-one-hot table and replay. Here the behaviour is epsilon-greedy with a fixed
epsilon = 0.5 w.r.t. the learned Q, so the data depends on what is learned:

* Q-learning and Double Q (off-policy) converge to Q* -- here with ``arch=tabular`` and a
  Polyak target;
* Expected SARSA (replay) and SARSA (``buffer=online`` or a replay buffer of a few bursts,
  n = 1 and n = 3) converge to Q^pi of the epsilon-greedy behaviour policy pi, computed by
  iterative policy evaluation with pi epsilon-greedy w.r.t. the learned table's greedy actions;
* n-step Q-learning from that on-policy data converges to the fixed point of the n-step
  operator (intermediate actions from pi, max at the end): neither Q* nor Q^pi -- the bias the
  on-policy replay warning is about.

SARSA's bootstrap a_{t+1} is random, so its table fluctuates around Q^pi; a learning rate that
decays linearly to 5 % of its start (``lr_end_factor=0.05``) averages the noise out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rl_lightning.builders import load_q_network
from rl_lightning.envs import chain_optimal_q
from rl_lightning.train import train

GAMMA = 0.9
NUM_STATES = 6
EPS = 0.5
RIGHT = np.ones(NUM_STATES - 1, dtype=np.int64)  # Q*'s greedy action in every state

COMMON = [
    "env=chain",
    f"gamma={GAMMA}",
    f"exploration.schedule.start={EPS}",
    f"exploration.schedule.end={EPS}",
    "loss=mse",
    "optim=sgd",
    "max_grad_norm=null",
    "logger=none",
    "progress_bar=false",
    "eval.every_env_steps=0",
    "eval.episodes=4",
    "eval.final_episodes=4",
]
# a linear layer without bias over one-hot states: a table
LINEAR_TABLE = [
    "arch.encoder.hidden_sizes=[]",
    "arch.head.bias=false",
    "arch.head.init_zero=true",
]
# replay as in test_chain_learning.py: deterministic targets, a step of ~0.1 per update
REPLAY = [
    "optim.lr=0.5",
    "lr_end_factor=1.0",
    "env_steps_per_update=1",
    "updates_per_batch=8",
    "batch_size=64",
    "total_env_steps=2000",
    "buffer.learning_starts_env_steps=200",
]
# no replay: 16 parallel agents, each update on the 16 transitions of the latest vector step
ONLINE = [
    "buffer=online",
    "env.num_envs=16",
    "env_steps_per_update=16",
    "optim.lr=0.5",
    "lr_end_factor=0.05",
    "target=none",
    "total_env_steps=30000",
]


# -- references ------------------------------------------------------------------------------


def chain_step(s: int, a: int, num_states: int) -> tuple[int, float]:
    s2 = min(max(s + (1 if a == 1 else -1), 0), num_states - 1)
    return s2, float(s2 == num_states - 1)


def epsilon_greedy(greedy: np.ndarray, eps: float) -> np.ndarray:
    """pi(a|s) = eps / 2 + (1 - eps) [a == greedy(s)] for the non-terminal states: (S, 2)."""
    pi = np.full((len(greedy), 2), eps / 2)
    pi[np.arange(len(greedy)), greedy] += 1.0 - eps
    return pi


def policy_q(pi: np.ndarray, gamma: float = GAMMA, iterations: int = 3000) -> np.ndarray:
    """Q^pi by iterative policy evaluation; pi: (num_states - 1, 2) -> (num_states - 1, 2)."""
    num_states = len(pi) + 1
    q = np.zeros((num_states, 2))
    pi = np.vstack([pi, [[0.5, 0.5]]])  # the terminal state's row is never used (V = 0)
    for _ in range(iterations):
        v = (pi * q).sum(axis=1)
        v[num_states - 1] = 0.0
        new = np.zeros_like(q)
        for s in range(num_states - 1):
            for a in (0, 1):
                s2, r = chain_step(s, a, num_states)
                new[s, a] = r + gamma * v[s2]
        q = new
    return q[: num_states - 1]


def n_step_q_fixed_point(
    pi: np.ndarray, n: int, gamma: float = GAMMA, iterations: int = 3000
) -> np.ndarray:
    """Fixed point of the n-step Q-learning operator with intermediate actions from pi:
    Q(s, a) = r + gamma W_{n-1}(s'),  W_0 = max_a Q,  W_m(s) = sum_b pi(b|s) (r + gamma W_{m-1}(s'))
    (W = 0 at the terminal state). No truncation: the runs use a long time limit."""
    num_states = len(pi) + 1
    q = np.zeros((num_states, 2))
    for _ in range(iterations):
        w = q.max(axis=1)
        w[num_states - 1] = 0.0
        for _m in range(n - 1):
            new_w = np.zeros(num_states)
            for s in range(num_states - 1):
                for b in (0, 1):
                    s2, r = chain_step(s, b, num_states)
                    new_w[s] += pi[s, b] * (r + gamma * w[s2])
            w = new_w
        new = np.zeros_like(q)
        for s in range(num_states - 1):
            for a in (0, 1):
                s2, r = chain_step(s, a, num_states)
                new[s, a] = r + gamma * w[s2]
        q = new
    return q[: num_states - 1]


Q_STAR = chain_optimal_q(NUM_STATES, GAMMA)
Q_PI = policy_q(epsilon_greedy(RIGHT, EPS))


def test_policy_evaluation_by_hand() -> None:
    # 2-state chain, eps = 0.5, greedy right: Q(0, right) = 1 (terminates);
    # Q(0, left) = 0.9 V(0), V(0) = 0.25 Q(0, left) + 0.75 * 1
    #   -> L = 0.225 L + 0.675 -> L = 0.675 / 0.775 = 0.870968
    q = policy_q(epsilon_greedy(np.array([1]), 0.5))
    np.testing.assert_allclose(q, [[0.675 / 0.775, 1.0]], atol=1e-12)
    # the greedy policy's value is Q*
    np.testing.assert_allclose(policy_q(epsilon_greedy(RIGHT, 0.0)), Q_STAR, atol=1e-12)
    # Q^pi(4, right) = 1; Q^pi(s, right) = 0.9 V(s + 1): the Bellman equation holds
    assert Q_PI[4, 1] == pytest.approx(1.0)
    v = (epsilon_greedy(RIGHT, EPS) * Q_PI).sum(axis=1)
    np.testing.assert_allclose(Q_PI[:4, 1], GAMMA * v[1:], atol=1e-12)
    # the two fixed points are far apart compared with the 0.05 tolerance of the runs
    assert np.abs(Q_PI - Q_STAR).max() > 0.15


def test_n_step_fixed_point_by_hand() -> None:
    # 2-state chain, pi = (0.25, 0.75), n = 2: Q(0, right) = 1; Q(0, left) = 0.9 W_1(0) with
    # W_1(0) = 0.75 * (1 + 0) + 0.25 * (0 + 0.9 * max Q(0, .) = 0.9) = 0.975 -> 0.8775
    q = n_step_q_fixed_point(epsilon_greedy(np.array([1]), 0.5), 2)
    np.testing.assert_allclose(q, [[0.8775, 1.0]], atol=1e-12)
    # between Q*(0, left) = 0.9 and Q^pi(0, left) = 0.870968; n = 1 is Q* itself
    np.testing.assert_allclose(n_step_q_fixed_point(epsilon_greedy(RIGHT, EPS), 1), Q_STAR)


# -- training runs ---------------------------------------------------------------------------


def learned_q(run_dir: Path) -> np.ndarray:
    """The trained network's Q-values of the non-terminal one-hot states: (5, 2)."""
    net, _ = load_q_network(run_dir)  # checkpoints/last.ckpt, rebuilt by the run's builders
    net.eval()
    with torch.no_grad():
        return net(torch.eye(NUM_STATES)[: NUM_STATES - 1]).double().numpy()


def run(compose_config, tmp_path: Path, overrides: list[str]) -> tuple[np.ndarray, dict]:
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed"
    assert summary["env_steps"] >= cfg.total_env_steps
    # the greedy policy goes right from every state: every evaluation episode returns 1
    assert summary["eval_return_mean"] == 1.0
    q = learned_q(tmp_path)
    np.testing.assert_array_equal(q.argmax(axis=1), RIGHT)
    return q, summary


def behaviour_q(q: np.ndarray) -> np.ndarray:
    """Q^pi with pi epsilon-greedy w.r.t. the learned table's greedy actions."""
    return policy_q(epsilon_greedy(q.argmax(axis=1), EPS))


@pytest.mark.parametrize("estimator", ["q_learning", "double_q"])
def test_off_policy_from_epsilon_greedy_data_finds_q_star(
    compose_config, tmp_path, estimator
) -> None:
    overrides = [
        *COMMON,
        *REPLAY,
        "arch=tabular",
        "arch.bins=2",  # one-hot coordinates in {0, 1}: 2^6 cells, one per state (and more)
        "target=polyak",
        "target.coefficient=0.1",
        f"estimator={estimator}",
    ]
    q, summary = run(compose_config, tmp_path, overrides)
    np.testing.assert_allclose(q, Q_STAR, atol=0.05)
    assert "warnings" not in summary


def test_expected_sarsa_with_replay_finds_q_pi(compose_config, tmp_path) -> None:
    overrides = [
        *COMMON,
        *REPLAY,
        *LINEAR_TABLE,
        "target=hard",
        "target.every_updates=20",
        "estimator=expected_sarsa",
    ]
    q, summary = run(compose_config, tmp_path, overrides)
    np.testing.assert_allclose(q, behaviour_q(q), atol=0.05)
    np.testing.assert_allclose(behaviour_q(q), Q_PI)  # pi w.r.t. the learned Q is pi w.r.t. Q*
    assert "warnings" not in summary  # Expected SARSA with n = 1 may replay


@pytest.mark.parametrize("n_step", [1, 3])
def test_online_sarsa_finds_q_pi(compose_config, tmp_path, n_step) -> None:
    overrides = [*COMMON, *LINEAR_TABLE, *ONLINE, "estimator=sarsa", f"estimator.n_step={n_step}"]
    q, summary = run(compose_config, tmp_path, overrides)
    np.testing.assert_allclose(q, behaviour_q(q), atol=0.05)
    assert np.abs(q - Q_STAR).max() > 0.1  # not Q*
    assert "warnings" not in summary  # buffer=online is the fix the warning suggests


def test_sarsa_with_a_replay_buffer_of_four_bursts_finds_q_pi(compose_config, tmp_path) -> None:
    # a burst = 4 updates * 4 env steps = 16; capacity 64 = 4 bursts: recent, on-policy data
    overrides = [
        *COMMON,
        *LINEAR_TABLE,
        "estimator=sarsa",
        "env.num_envs=4",
        "buffer.capacity=64",
        "buffer.learning_starts_env_steps=64",
        "env_steps_per_update=4",
        "updates_per_batch=4",
        "batch_size=32",
        "optim.lr=0.5",
        "lr_end_factor=0.05",
        "target=none",
        "total_env_steps=16000",
    ]
    q, summary = run(compose_config, tmp_path, overrides)
    np.testing.assert_allclose(q, behaviour_q(q), atol=0.05)
    assert "warnings" not in summary  # capacity <= 4 bursts


def test_three_step_q_learning_on_policy_data_finds_the_n_step_fixed_point(
    compose_config, tmp_path
) -> None:
    overrides = [
        *COMMON,
        *LINEAR_TABLE,
        *ONLINE,
        "estimator=q_learning",
        "estimator.n_step=3",
        "env.max_episode_steps=1000",  # practically no truncation: one operator, one fixed point
    ]
    q, _ = run(compose_config, tmp_path, overrides)
    fixed_point = n_step_q_fixed_point(epsilon_greedy(q.argmax(axis=1), EPS), 3)
    np.testing.assert_allclose(q, fixed_point, atol=0.05)
    # ... which is neither Q* nor Q^pi
    assert np.abs(fixed_point - Q_STAR).max() > 0.1
    assert np.abs(fixed_point - Q_PI).max() > 0.05


@pytest.mark.slow
def test_online_three_step_expected_sarsa_finds_q_pi(compose_config, tmp_path) -> None:
    overrides = [
        *COMMON,
        *LINEAR_TABLE,
        *ONLINE,
        "estimator=expected_sarsa",
        "estimator.n_step=3",
    ]
    q, _ = run(compose_config, tmp_path, overrides)
    np.testing.assert_allclose(q, behaviour_q(q), atol=0.05)
