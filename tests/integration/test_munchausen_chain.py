"""Munchausen DQN on the 6-state chain, through the real ``train(...)``: the learned table is the
fixed point of the exact Munchausen operator, iterated on the known model.

The operator (pi_q = softmax(q / tau); V = 0 at the terminal state, truncation bootstraps):

    (M q)(s, a) = r(s, a) + alpha * clip(tau log pi_q(a|s), l0, 0)
                  + gamma * sum_b pi_q(b|s') (q(s', b) - tau log pi_q(b|s'))

Without the clip its fixed point is tied to the entropy-regularised optimum of temperature
(1 - alpha) tau (Vieillard et al. 2020: M-DQN is implicitly entropy- and KL-regularised): pi_q
is that optimum's policy and q = q*_reg + alpha tau log pi*_reg, which checks the reference
itself below.
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
ALPHA, L0 = 0.9, -1.0  # the paper's alpha and l0


def chain_step(s: int, a: int) -> tuple[int, float]:
    s2 = min(max(s + (1 if a == 1 else -1), 0), NUM_STATES - 1)
    return s2, float(s2 == NUM_STATES - 1)


def log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def bellman(q: np.ndarray, value: np.ndarray, bonus: np.ndarray) -> np.ndarray:
    """r(s, a) + bonus(s, a) + gamma value(s') over the non-terminal states (terminal: V = 0)."""
    new = np.zeros_like(q)
    for s in range(NUM_STATES - 1):
        for a in (0, 1):
            s2, r = chain_step(s, a)
            new[s, a] = r + bonus[s, a] + (0.0 if s2 == NUM_STATES - 1 else GAMMA * value[s2])
    return new


def munchausen_fixed_point(tau: float, alpha: float, l0: float, iterations: int = 3000):
    """Iterate the exact Munchausen operator from q = 0: (num_states - 1, 2)."""
    q = np.zeros((NUM_STATES, 2))
    for _ in range(iterations):
        tau_log_pi = tau * log_softmax(q / tau)
        soft_value = (np.exp(tau_log_pi / tau) * (q - tau_log_pi)).sum(axis=1)
        q = bellman(q, soft_value, alpha * np.clip(tau_log_pi, l0, 0.0))
    return q[: NUM_STATES - 1]


def soft_optimal_q(temperature: float, iterations: int = 3000) -> np.ndarray:
    """q*_reg of entropy regularisation: q = r + gamma * temperature * logsumexp(q(s') / temp)."""
    q = np.zeros((NUM_STATES, 2))
    for _ in range(iterations):
        z = q / temperature
        top = z.max(axis=1, keepdims=True)
        value = temperature * (top[:, 0] + np.log(np.exp(z - top).sum(axis=1)))
        q = bellman(q, value, np.zeros_like(q))
    return q[: NUM_STATES - 1]


def test_the_reference_is_the_regularised_optimum_without_the_clip() -> None:
    tau = 0.3
    q = munchausen_fixed_point(tau, ALPHA, l0=-1e9)
    q_reg = soft_optimal_q((1 - ALPHA) * tau)
    log_pi_reg = log_softmax(q_reg / ((1 - ALPHA) * tau))
    np.testing.assert_allclose(log_softmax(q / tau), log_pi_reg, atol=1e-10)
    np.testing.assert_allclose(q, q_reg + ALPHA * tau * log_pi_reg, atol=1e-10)


def test_the_fixed_point_by_hand() -> None:
    # tau = 0.03: every action gap is >= 0.65 (22 tau), so the softmax is greedy to 1e-9:
    # tau log pi(a|s) = q(s, a) - max_b q(s, b) and the soft value is the max. Going right is
    # Q*; going left from s = 4: 0 + 0.9 * clip(q(4, left) - 1, -1, 0) + 0.9 * q(3, right) =
    # -0.9 + 0.81 = -0.09 (the gap, 1.09, is clipped to 1); from s = 0 (a self-loop, unclipped):
    # x = 0.9 * (x - 0.6561) + 0.9 * 0.6561 -> x = 0.
    q = munchausen_fixed_point(0.03, ALPHA, L0)
    np.testing.assert_allclose(q[:, 1], chain_optimal_q(NUM_STATES, GAMMA)[:, 1], atol=1e-9)
    np.testing.assert_allclose(q[[0, 4], 0], [0.0, -0.09], atol=1e-9)


COMMON = [
    "env=chain",
    f"gamma={GAMMA}",
    "exploration.schedule.start=0.5",  # epsilon-greedy 0.5 behaviour: every action is tried
    "exploration.schedule.end=0.5",
    "loss=mse",
    "optim=sgd",
    "optim.lr=0.5",
    "lr_end_factor=1.0",
    "max_grad_norm=null",
    "env_steps_per_update=1",
    "updates_per_batch=8",
    "batch_size=64",
    "total_env_steps=2000",
    "buffer.learning_starts_env_steps=200",
    "arch=tabular",
    "arch.bins=2",  # one-hot coordinates in {0, 1}: one cell per state
    "target=polyak",
    "target.coefficient=0.1",
    "logger=none",
    "progress_bar=false",
    "eval.every_env_steps=0",
    "eval.episodes=4",
    "eval.final_episodes=4",
    "estimator=munchausen",
]


def learned_q(run_dir: Path) -> np.ndarray:
    """The trained network's Q-values of the non-terminal one-hot states: (5, 2)."""
    net, _ = load_q_network(run_dir)  # checkpoints/last.ckpt, rebuilt by the run's builders
    net.eval()
    with torch.no_grad():
        return net(torch.eye(NUM_STATES)[: NUM_STATES - 1]).double().numpy()


@pytest.mark.parametrize("tau", [0.03, 0.3])  # the paper's; one where the softmax is soft
def test_learning_reaches_the_munchausen_fixed_point(compose_config, tmp_path, tau) -> None:
    overrides = [*COMMON, f"estimator.tau={tau}"]
    cfg = compose_config(overrides)
    summary = train(cfg, run_dir=tmp_path, overrides=overrides)
    assert summary["status"] == "completed", summary.get("error")
    assert summary["eval_return_mean"] == 1.0  # the greedy policy goes right everywhere
    assert "warnings" not in summary  # off-policy at n = 1: replay is fine
    q = learned_q(tmp_path)
    fixed_point = munchausen_fixed_point(tau, ALPHA, L0)
    np.testing.assert_allclose(q, fixed_point, atol=0.05)
    # ... which is not Q*: the bonus widens the action gap by about 0.7 or more
    assert np.abs(fixed_point - chain_optimal_q(NUM_STATES, GAMMA)).max() > 0.5
