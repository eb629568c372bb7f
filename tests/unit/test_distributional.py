"""C51: the categorical projection, the head, the bootstrap policies and the cross-entropy loss,
with numbers worked out by hand (support -2, -1, 0, 1, 2 unless said otherwise)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.distributional import (
    CategoricalTDLoss,
    QuantileTDLoss,
    categorical_projection,
    quantile_huber_loss,
)
from rl_lightning.estimators.core import TDInputs, window_return
from rl_lightning.estimators.double_q import DoubleQLearning
from rl_lightning.estimators.expected_sarsa import ExpectedSarsa
from rl_lightning.estimators.munchausen import MunchausenQLearning
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.estimators.sarsa import Sarsa
from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
from rl_lightning.networks import CategoricalHead, MLPQNetwork, QNetwork, QuantileHead

SUPPORT = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])


def project(r: float, discount: float, probs: list[float]) -> torch.Tensor:
    return categorical_projection(
        SUPPORT, torch.tensor([r]), torch.tensor([discount]), torch.tensor([probs])
    )[0]


def test_projection_of_a_terminal_transition_puts_all_mass_at_the_reward() -> None:
    # discount 0: every atom moves to r = 0.3, between 0 and 1: 0.7 on 0, 0.3 on 1
    got = project(0.3, 0.0, [0.1, 0.2, 0.3, 0.2, 0.2])
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, 0.7, 0.3, 0.0]))


def test_projection_mid_episode_shifts_and_shrinks_the_atoms() -> None:
    # r = 0.5, discount 0.5: atoms -2, -1, 0, 1, 2 go to -0.5, 0, 0.5, 1, 1.5
    # mass 0.1 at -0.5 -> 0.05 on -1, 0.05 on 0; 0.2 at 0 -> 0; 0.3 at 0.5 -> 0.15 on 0, 0.15 on 1;
    # 0.2 at 1 -> 1; 0.2 at 1.5 -> 0.1 on 1, 0.1 on 2
    got = project(0.5, 0.5, [0.1, 0.2, 0.3, 0.2, 0.2])
    torch.testing.assert_close(got, torch.tensor([0.0, 0.05, 0.4, 0.45, 0.1]))


def test_projection_clips_mass_outside_the_support_to_its_ends() -> None:
    # r = 1.5, discount 1: atoms go to -0.5, 0.5, 1.5, 2.5, 3.5; the last two clip to 2.
    # -0.5 -> 0.1 on -1, 0.1 on 0; 0.5 -> 0.1 on 0, 0.1 on 1; 1.5 -> 0.1 on 1, 0.1 on 2; 0.4 on 2
    got = project(1.5, 1.0, [0.2, 0.2, 0.2, 0.2, 0.2])
    torch.testing.assert_close(got, torch.tensor([0.0, 0.1, 0.2, 0.2, 0.5]))
    # and below: r = -3 (terminal) lands on -2
    torch.testing.assert_close(
        project(-3.0, 0.0, [0, 0, 1.0, 0, 0]), torch.tensor([1.0, 0, 0, 0, 0])
    )


def test_projection_keeps_the_mean_inside_the_support() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(64, 5, generator=gen), dim=-1)
    r = torch.rand(64, generator=gen) * 0.5 - 0.25
    discount = torch.rand(64, generator=gen) * 0.8  # |r + d z| <= 0.25 + 1.6 < 2: no clipping
    got = categorical_projection(SUPPORT, r, discount, probs)
    torch.testing.assert_close(got.sum(-1), torch.ones(64))
    torch.testing.assert_close(got @ SUPPORT, r + discount * (probs @ SUPPORT))


def test_a_truncated_window_bootstraps_a_terminated_one_does_not() -> None:
    # two 2-step windows cut after one step (n_steps = 1), rewards 1: one ended by truncation
    # (discount gamma^1 = 0.5), one by termination (discount 0)
    rewards = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    r_t, discount_t = window_return(rewards, torch.tensor([1, 1]), torch.tensor([0.0, 1.0]), 0.5)
    probs = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]] * 2)  # Z(s_t) = 2
    got = categorical_projection(SUPPORT, r_t, discount_t, probs)
    torch.testing.assert_close(got[0], torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))  # 1 + 0.5 * 2
    torch.testing.assert_close(got[1], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))  # 1


def test_the_head_outputs_the_mean_of_its_distribution() -> None:
    torch.manual_seed(0)
    head = CategoricalHead(in_features=3, num_actions=2, atoms=5, v_min=-2.0, v_max=2.0)
    features = torch.randn(4, 3)
    log_p = head.distribution(features)
    assert log_p.shape == (4, 2, 5)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(4, 2))
    torch.testing.assert_close(head(features), log_p.exp() @ SUPPORT)
    zero = CategoricalHead(
        in_features=3, num_actions=2, atoms=5, v_min=0.0, v_max=4.0, init_zero=True
    )
    torch.testing.assert_close(zero(features), torch.full((4, 2), 2.0))  # uniform: the midpoint


def test_the_dueling_head_subtracts_the_mean_advantage_per_atom() -> None:
    torch.manual_seed(0)
    head = CategoricalHead(in_features=3, num_actions=3, atoms=5, dueling=True)
    features = torch.randn(2, 3)
    value = head.value(features).unsqueeze(1)
    advantage = head.advantage(features).view(2, 3, 5)
    expected = value + advantage - advantage.mean(dim=1, keepdim=True)
    torch.testing.assert_close(head.logits(features), expected)


def test_head_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="atoms"):
        CategoricalHead(in_features=3, num_actions=2, atoms=1)
    with pytest.raises(ValueError, match="v_min"):
        CategoricalHead(in_features=3, num_actions=2, v_min=1.0, v_max=1.0)


def test_each_bootstrap_policy_reproduces_its_estimators_target() -> None:
    gen = torch.Generator().manual_seed(1)
    b, a = 8, 3
    q_t, q_t_online = torch.randn(b, a, generator=gen), torch.randn(b, a, generator=gen)
    probs_t = torch.softmax(torch.randn(b, a, generator=gen), dim=-1)
    a_t = torch.randint(a, (b,), generator=gen)
    r_t, discount_t = torch.randn(b, generator=gen), torch.rand(b, generator=gen)
    x = TDInputs(r_t, discount_t, q_t, torch.zeros(b), a_t, probs_t, q_t_online)
    for estimator in (QLearning(), DoubleQLearning(), Sarsa(), ExpectedSarsa()):
        assert estimator.supports_distributional
        w = estimator.bootstrap_policy(x)
        torch.testing.assert_close(w.sum(-1), torch.ones(b))
        torch.testing.assert_close(r_t + discount_t * (w * q_t).sum(-1), estimator.target(x))
    # Double Q's weights follow the online network: one-hot at its argmax
    assert (
        DoubleQLearning().bootstrap_policy(x).argmax(-1).tolist() == q_t_online.argmax(-1).tolist()
    )
    assert not MunchausenQLearning().supports_distributional


class OneHotEncoder(nn.Module):
    """Identity over one-hot states: a table of logits under the categorical head."""

    out_features = 2

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs


def table_network(logits: torch.Tensor) -> QNetwork:
    """A categorical head whose logits for state i (one-hot) are ``logits[i]`` (2 actions, 5 atoms,
    support -2 .. 2)."""
    head = CategoricalHead(in_features=2, num_actions=2, atoms=5, v_min=-2.0, v_max=2.0)
    with torch.no_grad():
        head.advantage.weight.copy_(logits.reshape(2, 10).T)
        head.advantage.bias.zero_()
    return QNetwork(OneHotEncoder(), head)


def batch(**fields) -> TransitionBatch:
    base = dict(
        obs=torch.tensor([[1.0, 0.0]]),
        actions=torch.tensor([0]),
        rewards=torch.tensor([[0.5]]),
        n_steps=torch.tensor([1]),
        terminated=torch.tensor([0.0]),
        next_obs=torch.tensor([[0.0, 1.0]]),
        next_actions=torch.tensor([1]),
    )
    return TransitionBatch(**{**base, **fields})


def test_the_loss_is_the_cross_entropy_to_the_projected_target_by_hand() -> None:
    # state 0: uniform over the atoms for both actions; state 1: action 0 sure of -2, action 1
    # sure of +2 (logits 0 / -inf approximated by -30). Q-learning bootstraps action 1: Z = 2.
    # target = proj(0.5 + 0.5 * 2 = 1.5) = 0.5 on 1, 0.5 on 2; CE against uniform = log 5
    logits = torch.zeros(2, 2, 5)
    logits[1, 0] = torch.tensor([0.0, -30, -30, -30, -30])
    logits[1, 1] = torch.tensor([-30.0, -30, -30, -30, 0])
    loss_fn = CategoricalTDLoss(
        q_network=table_network(logits), estimator=QLearning(), gamma=0.5, use_target_network=False
    )
    loss, q_sa, target = loss_fn(batch())
    assert loss.item() == pytest.approx(math.log(5.0), abs=1e-6)
    assert q_sa.item() == pytest.approx(0.0, abs=1e-6)  # uniform over -2 .. 2
    assert target.item() == pytest.approx(1.5, abs=1e-5)
    # KL(target || uniform) = sum 0.5 log(0.5 / 0.2) twice = log 2.5
    assert loss_fn.td_errors(q_sa, target).item() == pytest.approx(math.log(2.5), abs=1e-5)
    # SARSA bootstraps the stored next action; with action 0 (Z = -2): 0.5 - 1 = -0.5
    sarsa = CategoricalTDLoss(
        q_network=table_network(logits), estimator=Sarsa(), gamma=0.5, use_target_network=False
    )
    _, _, target = sarsa(batch(next_actions=torch.tensor([0])))
    assert target.item() == pytest.approx(-0.5, abs=1e-5)
    # importance weights scale each sample's cross-entropy
    weighted, _, _ = loss_fn(batch(weights=torch.tensor([0.25])))
    assert weighted.item() == pytest.approx(0.25 * math.log(5.0), abs=1e-6)


def test_expected_sarsa_mixes_the_distributions_with_the_behaviour_probabilities() -> None:
    logits = torch.zeros(2, 2, 5)
    logits[1, 0] = torch.tensor([0.0, -30, -30, -30, -30])  # Z(s1, 0) = -2
    logits[1, 1] = torch.tensor([-30.0, -30, -30, -30, 0])  # Z(s1, 1) = +2
    exploration = EpsilonGreedy(schedule=LinearSchedule(start=0.5, end=0.5, duration_env_steps=1))
    loss_fn = CategoricalTDLoss(
        q_network=table_network(logits),
        estimator=ExpectedSarsa(),
        gamma=1.0,
        use_target_network=False,
        exploration=exploration,
    )
    # pi(.|s1) = (0.25, 0.75) (greedy action 1, epsilon 0.5): terminal=0, r = 0 -> mixture itself
    target_probs = loss_fn.target_distribution(batch(rewards=torch.tensor([[0.0]])))
    torch.testing.assert_close(
        target_probs[0], torch.tensor([0.25, 0.0, 0.0, 0.0, 0.75]), atol=1e-6, rtol=0
    )


def test_the_loss_refuses_what_it_cannot_learn() -> None:
    with pytest.raises(ValueError, match="distributional head"):
        CategoricalTDLoss(
            q_network=MLPQNetwork(obs_shape=(2,), num_actions=2), estimator=QLearning(), gamma=0.9
        )
    with pytest.raises(ValueError, match="no distributional form"):
        CategoricalTDLoss(
            q_network=table_network(torch.zeros(2, 2, 5)),
            estimator=MunchausenQLearning(),
            gamma=0.9,
        )


@pytest.mark.parametrize(
    ("overrides", "low", "high"),
    [
        (["gamma=0.98"], 0.0, 50.0),  # CartPole: reward in [0, 1], / (1 - 0.98)
        (["gamma=1.0"], 0.0, 500.0),  # gamma = 1: times the time limit
        (["env=acrobot", "gamma=0.99"], -100.0, 0.0),
        (["arch.head.v_min=-3", "arch.head.v_max=7"], -3.0, 7.0),  # given: kept
    ],
)
def test_a_null_support_is_the_envs_discounted_return_range(
    compose_config, overrides, low, high
) -> None:
    from rl_lightning.builders import build_q_network, make_env_from_config

    cfg = compose_config(["arch/head=distributional", *overrides])
    env = make_env_from_config(dict(cfg.env), 1)
    try:
        head = build_q_network(cfg, env).head
    finally:
        env.close()
    assert (head.v_min, head.v_max) == pytest.approx((low, high))
    assert head.support.shape == (51,)


# -- QR-DQN ----------------------------------------------------------------------------------


def test_the_quantile_huber_loss_by_hand() -> None:
    half = torch.tensor([0.5])
    one = torch.ones(1, 1)
    # tau = 1/2, u = T - theta = 0.4 (inside kappa = 1): 1/2 * u^2 / 2 = 0.04
    got = quantile_huber_loss(torch.tensor([[1.0]]), half, torch.tensor([[1.4]]), one, 1.0)
    assert got.item() == pytest.approx(0.04)
    # u = -3 (outside): |1/2 - 1| * (|u| - 1/2) = 1.25
    got = quantile_huber_loss(torch.tensor([[1.0]]), half, torch.tensor([[-2.0]]), one, 1.0)
    assert got.item() == pytest.approx(1.25)
    # kappa = 0, tau = 1/4, u = -2: |1/4 - 1| * 2 = 1.5; u = +2: 1/4 * 2 = 0.5; weights 0.3/0.7
    got = quantile_huber_loss(
        torch.tensor([[0.0]]),
        torch.tensor([0.25]),
        torch.tensor([[-2.0, 2.0]]),
        torch.tensor([[0.3, 0.7]]),
        0.0,
    )
    assert got.item() == pytest.approx(0.3 * 1.5 + 0.7 * 0.5)


def test_quantiles_descend_to_the_targets_quantiles() -> None:
    # target: 0 w.p. 0.3, 1 w.p. 0.7; N = 2 at tau = 1/4, 3/4: the 1/4-quantile is 0, the
    # 3/4-quantile is 1 (the plain quantile loss, kappa = 0, has exactly these minimisers)
    theta = torch.tensor([[0.5, 0.5]], requires_grad=True)
    taus = torch.tensor([0.25, 0.75])
    targets, weights = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.3, 0.7]])
    # gradients: theta_1 in (0, 1) moves down at 0.3 * 3/4 - 0.7 * 1/4 = 0.05, theta_2 up at 0.45
    optimizer = torch.optim.SGD([theta], lr=0.02)
    for _ in range(1000):
        optimizer.zero_grad()
        quantile_huber_loss(theta, taus, targets, weights, 0.0).sum().backward()
        optimizer.step()
    torch.testing.assert_close(theta.detach(), torch.tensor([[0.0, 1.0]]), atol=0.02, rtol=0)


def quantile_table(values: torch.Tensor) -> QNetwork:
    """A quantile head whose quantiles for state i (one-hot) are ``values[i]`` (2 actions, N)."""
    n = values.shape[-1]
    head = QuantileHead(in_features=2, num_actions=2, quantiles=n, kappa=1.0)
    with torch.no_grad():
        head.advantage.weight.copy_(values.reshape(2, 2 * n).T)
        head.advantage.bias.zero_()
    return QNetwork(OneHotEncoder(), head)


def test_the_quantile_loss_bootstraps_the_estimators_choice_by_hand() -> None:
    # state 0: quantiles (0, 0) for both actions; state 1: action 0 (-1, 1), action 1 (2, 4)
    values = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[-1.0, 1.0], [2.0, 4.0]]])
    loss_fn = QuantileTDLoss(
        q_network=quantile_table(values), estimator=QLearning(), gamma=0.5, use_target_network=False
    )
    # Q(s1) = (0, 3): greedy action 1; targets 0.5 + 0.5 * (2, 4) = (1.5, 2.5), each w.p. 1/2
    loss, q_sa, target = loss_fn(batch())
    assert q_sa.item() == 0.0 and target.item() == pytest.approx(2.0)
    # every u = T - theta > 1: rho = tau (|u| - 1/2); taus 1/4, 3/4, u in {1.5, 2.5}
    by_hand = sum(tau * 0.5 * ((1.5 - 0.5) + (2.5 - 0.5)) for tau in (0.25, 0.75))
    assert loss.item() == pytest.approx(by_hand)
    assert loss_fn.td_errors(q_sa, target).item() == pytest.approx(by_hand)  # the priority
    # a terminal transition: every target atom is r
    _, _, target = loss_fn(batch(terminated=torch.tensor([1.0])))
    assert target.item() == pytest.approx(0.5)


def test_quantile_head_outputs_the_mean_quantile() -> None:
    torch.manual_seed(0)
    head = QuantileHead(in_features=3, num_actions=2, quantiles=4, dueling=True)
    features = torch.randn(5, 3)
    torch.testing.assert_close(head(features), head.distribution(features).mean(-1))
    torch.testing.assert_close(head.taus, torch.tensor([0.125, 0.375, 0.625, 0.875]))
    with pytest.raises(ValueError, match="quantiles"):
        QuantileHead(in_features=3, num_actions=2, quantiles=0)
