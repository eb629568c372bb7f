"""Q-networks: the tabular moving average, binning, action-in = action-out, the dueling head."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators import ESTIMATORS, Estimator
from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
from rl_lightning.module import QLearningModule
from rl_lightning.networks import ActionInQNetwork, MLPQNetwork, TabularQNetwork
from rl_lightning.target_updates import HardTargetUpdate

# -- TabularQNetwork -------------------------------------------------------------------------


def grid() -> TabularQNetwork:
    # dimension 0: 4 bins of width 0.25 on [0, 1]; dimension 1: 2 bins of width 1 on [-1, 1];
    # cell = 2 * bin_0 + bin_1 (row-major strides [2, 1]), 8 cells
    return TabularQNetwork(
        obs_shape=[2], num_actions=3, obs_low=[0.0, -1.0], obs_high=[1.0, 1.0], bins=[4, 2]
    )


@pytest.mark.parametrize(
    ("obs", "coords", "cell"),
    [
        ((0.3, 0.5), (1, 1), 3),  # floor(0.3 / 0.25) = 1; floor((0.5 + 1) / 1) = 1 -> 2 + 1
        ((0.0, -1.0), (0, 0), 0),  # the low corner
        ((0.5, -0.25), (2, 0), 4),  # 0.5 / 0.25 = 2; (-0.25 + 1) / 1 = 0.75 -> 0
        ((0.99, 0.0), (3, 1), 7),  # 3.96 -> 3; exactly the middle of dim 1 -> upper bin 1
        ((1.0, 1.0), (3, 1), 7),  # the high edge belongs to the last bin (4 -> 3, 2 -> 1)
        ((-5.0, -3.0), (0, 0), 0),  # below the range: the lowest edge bins
        ((7.0, -1.5), (3, 0), 6),  # above in dim 0, below in dim 1: 2 * 3 + 0
        ((0.1, 9.0), (0, 1), 1),  # above in dim 1 only
    ],
)
def test_tabular_binning_by_hand(obs, coords, cell) -> None:
    net = grid()
    x = torch.tensor([obs])
    assert net.bin_coordinates(x).tolist() == [list(coords)]
    assert net.cell(x).tolist() == [cell]
    # features: coordinates / (bins - 1) -> (c0 / 3, c1 / 1)
    torch.testing.assert_close(net.features(x), torch.tensor([[coords[0] / 3, coords[1] / 1.0]]))


def test_tabular_lookup_reads_the_cell_row() -> None:
    net = grid()
    with torch.no_grad():
        net.table.copy_(torch.arange(24.0).view(8, 3))  # row c = [3c, 3c + 1, 3c + 2]
    obs = torch.tensor([[0.3, 0.5], [7.0, -1.5]])  # cells 3 and 6
    torch.testing.assert_close(net(obs), torch.tensor([[9.0, 10.0, 11.0], [18.0, 19.0, 20.0]]))
    torch.testing.assert_close(net.q_values(obs, torch.tensor([2, 0])), torch.tensor([11.0, 18.0]))


@pytest.mark.parametrize(
    ("lr", "q0", "y", "expected"),
    [
        (0.1, 0.5, 2.0, 0.8),  # a' = 0.2: 0.8 * 0.5 + 0.2 * 2 = 0.8
        (0.25, -1.0, 3.0, 1.0),  # a' = 0.5: 0.5 * -1 + 0.5 * 3 = 1.0
        (0.05, 0.0, 1.0, 0.1),  # a' = 0.1: 0.9 * 0 + 0.1 * 1 = 0.1
        (0.5, 4.0, 1.0, 1.0),  # a' = 1: jumps onto the target
        (0.01, 2.0, -3.0, 1.9),  # a' = 0.02: 0.98 * 2 + 0.02 * -3 = 1.96 - 0.06 = 1.9
    ],
)
def test_one_sgd_step_is_the_moving_average_with_twice_the_rate(lr, q0, y, expected) -> None:
    net = grid()
    with torch.no_grad():
        net.table.copy_(torch.linspace(-2.0, 2.0, 24).view(8, 3))
        net.table[3, 2] = q0
    before = net.table.detach().clone()
    obs, action = torch.tensor([[0.3, 0.5]]), torch.tensor([2])  # cell 3
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = (net.q_values(obs, action) - y).pow(2).sum()  # one transition: (Q(s, a) - y)^2
    loss.backward()
    optimizer.step()
    # Q := Q - lr * 2 (Q - y) = (1 - a') Q + a' y with a' = 2 lr
    a2 = 2 * lr
    assert net.table[3, 2].item() == pytest.approx((1 - a2) * q0 + a2 * y, abs=1e-6)
    assert net.table[3, 2].item() == pytest.approx(expected, abs=1e-6)
    changed = (net.table.detach() != before).nonzero().tolist()
    assert changed == [[3, 2]]  # no other entry moves


def test_a_batch_mean_loss_splits_the_rate_over_the_batch() -> None:
    # MSELoss over B = 4 transitions in distinct cells: each entry moves with a' = 2 lr / B
    net = grid()
    obs = torch.tensor([[0.3, 0.5], [0.0, -1.0], [0.5, -0.25], [7.0, -1.5]])  # cells 3, 0, 4, 6
    actions = torch.tensor([2, 0, 1, 1])
    y = torch.tensor([1.0, -2.0, 4.0, 8.0])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.4)  # a' = 2 * 0.4 / 4 = 0.2; Q0 = 0
    nn.MSELoss()(net.q_values(obs, actions), y).backward()
    optimizer.step()
    # Q := 0.8 * 0 + 0.2 y = [0.2, -0.4, 0.8, 1.6]
    torch.testing.assert_close(net.q_values(obs, actions), torch.tensor([0.2, -0.4, 0.8, 1.6]))


# -- action-in vs action-out -----------------------------------------------------------------

OBS_DIM, NUM_ACTIONS, HIDDEN = 3, 3, 4
M = 1024.0  # a switch: pre-activations of the blocks of the other actions are pushed below 0


def dyadic(*shape: int, generator: torch.Generator) -> torch.Tensor:
    """Multiples of 1/8 in [-2, 2]: every sum below is exact in float32."""
    return torch.randint(-16, 17, shape, generator=generator).float() / 8


def equivalent_networks(seed: int = 5) -> tuple[MLPQNetwork, ActionInQNetwork]:
    """An action-out MLP and an action-in MLP that compute the same Q(s, a) exactly.

    Action-out (one hidden layer of H units):  Q(s, k) = W2[k] . relu(W1 s + b1) + b2[k].

    Action-in over x = [s, onehot(a)] with A * H + A hidden units:
      * unit (k, j), k < A, j < H: weights (W1[j], M * e_k), bias b1[j] - M, so its
        pre-activation is W1[j] s + b1[j] - M (1 - [a == k]): for a == k the action-out
        unit j, otherwise below -M + 14 < 0 (|W1 s + b1| <= 3 * 2 * 2 + 2 = 14), so relu = 0;
      * bias unit k: weights (0, M * e_k), bias 1 - M: relu = 1 if a == k else 0;
      * output: weight W2[k, j] on unit (k, j), b2[k] on bias unit k, output bias 0.
    Then Q_in(s, a) = sum_j W2[a, j] relu(W1 s + b1)_j + b2[a] = Q_out(s, a). Weights and
    inputs are multiples of 1/8 with |values| < 2^11, so every product and partial sum is a
    multiple of 2^-9 below 2^12: exact in float32 whatever the summation order.
    """
    g = torch.Generator().manual_seed(seed)
    w1, b1 = dyadic(HIDDEN, OBS_DIM, generator=g), dyadic(HIDDEN, generator=g)
    w2, b2 = dyadic(NUM_ACTIONS, HIDDEN, generator=g), dyadic(NUM_ACTIONS, generator=g)

    out = MLPQNetwork(obs_shape=[OBS_DIM], num_actions=NUM_ACTIONS, hidden_sizes=[HIDDEN])
    width = NUM_ACTIONS * HIDDEN + NUM_ACTIONS
    inn = ActionInQNetwork(
        obs_shape=[OBS_DIM],
        num_actions=NUM_ACTIONS,
        hidden_sizes=[width],
        action_encoding="one_hot",
    )
    hidden_out, head_out = out.encoder[1], out.head
    hidden_in, head_in = inn.encoder[1], inn.head
    assert isinstance(hidden_in, nn.Linear) and hidden_in.weight.shape == (width, OBS_DIM + 3)
    with torch.no_grad():
        hidden_out.weight.copy_(w1)
        hidden_out.bias.copy_(b1)
        head_out.weight.copy_(w2)
        head_out.bias.copy_(b2)
        hidden_in.weight.zero_()
        hidden_in.bias.zero_()
        head_in.weight.zero_()
        head_in.bias.zero_()
        for k in range(NUM_ACTIONS):
            block = slice(k * HIDDEN, (k + 1) * HIDDEN)
            hidden_in.weight[block, :OBS_DIM] = w1
            hidden_in.weight[block, OBS_DIM + k] = M
            hidden_in.bias[block] = b1 - M
            head_in.weight[0, block] = w2[k]
            unit = NUM_ACTIONS * HIDDEN + k
            hidden_in.weight[unit, OBS_DIM + k] = M
            hidden_in.bias[unit] = 1.0 - M
            head_in.weight[0, unit] = b2[k]
    return out, inn


def exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_action_in_and_action_out_compute_the_same_q_values() -> None:
    out, inn = equivalent_networks()
    obs = dyadic(32, OBS_DIM, generator=torch.Generator().manual_seed(1))
    q_out, q_in = out(obs), inn(obs)
    assert q_out.shape == q_in.shape == (32, NUM_ACTIONS)
    exact(q_in, q_out)
    assert q_out.std() > 0.5  # not a degenerate (constant) function
    greedy = q_out.argmax(dim=1)
    exact(q_in.argmax(dim=1), greedy)
    assert set(greedy.tolist()) == {0, 1, 2}  # the greedy action depends on the state
    actions = torch.arange(32) % NUM_ACTIONS
    exact(inn.q_values(obs, actions), out.q_values(obs, actions))


def test_the_construction_by_hand_for_one_state() -> None:
    out, inn = equivalent_networks()
    s = torch.tensor([[0.5, -1.0, 2.0]])
    w1, b1 = out.encoder[1].weight, out.encoder[1].bias
    w2, b2 = out.head.weight, out.head.bias
    h = torch.relu(w1 @ s[0] + b1)
    for a in range(NUM_ACTIONS):
        expected = (w2[a] @ h + b2[a]).item()
        assert out(s)[0, a].item() == expected
        assert inn.q_values(s, torch.tensor([a])).item() == expected


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("n", [1, 3])
def test_action_in_and_action_out_give_the_same_td_targets(name: str, n: int) -> None:
    out, inn = equivalent_networks()
    g = torch.Generator().manual_seed(3)
    b = 24
    batch = TransitionBatch(
        obs=dyadic(b, OBS_DIM, generator=g),
        actions=torch.randint(NUM_ACTIONS, (b,), generator=g),
        rewards=dyadic(b, n, generator=g),
        n_steps=torch.randint(1, n + 1, (b,), generator=g),
        terminated=torch.randint(2, (b,), generator=g).float(),
        next_obs=dyadic(b, OBS_DIM, generator=g),
        next_actions=torch.randint(NUM_ACTIONS, (b,), generator=g),
        env_steps=0,
    )

    def module(net: nn.Module) -> QLearningModule:
        return QLearningModule(
            q_network=net,
            estimator=Estimator(name=name, n_step=n),
            target_update=HardTargetUpdate(every_updates=100),
            loss=nn.MSELoss(),
            optimizer=functools.partial(torch.optim.SGD, lr=0.1),
            exploration=EpsilonGreedy(
                schedule=LinearSchedule(start=0.25, end=0.25, duration_env_steps=1)
            ),
            gamma=0.875,  # 7/8: dyadic, so the action-out reference is exact too
        )

    y_out, y_in = module(out).td_target(batch), module(inn).td_target(batch)
    exact(y_in, y_out)
    # and both equal the estimator on the action-out Q-values (the reference)
    q_next = out(batch.next_obs).detach()
    assert len(set(q_next.argmax(1).tolist())) >= 2  # the greedy action varies
    probs = (
        0.75 * nn.functional.one_hot(q_next.argmax(1), NUM_ACTIONS) + 0.25 / NUM_ACTIONS
    ).float()
    reference = Estimator(name=name, n_step=n).target(
        rewards=batch.rewards,
        n_steps=batch.n_steps,
        terminated=batch.terminated,
        gamma=0.875,
        q_t=q_next,
        q_t_online=q_next,
        a_t=batch.next_actions,
        probs_t=probs,
    )
    torch.testing.assert_close(y_out, reference, rtol=0, atol=1e-6)
    # the losses agree too: Q(s, a) of the taken actions are the same for both
    exact(module(inn).compute_loss(batch)[0], module(out).compute_loss(batch)[0])


@pytest.mark.parametrize("encoding", ["one_hot", "embedding"])
@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_action_in_forward_is_q_values_of_every_pair(encoding: str, norm: str) -> None:
    torch.manual_seed(0)
    net = ActionInQNetwork(
        obs_shape=[2, 3],  # flattened to 6 inputs
        num_actions=4,
        hidden_sizes=[16, 8],
        action_encoding=encoding,
        embedding_dim=5,
        norm=norm,
    )
    obs = torch.randn(7, 2, 3)
    q = net(obs)
    assert q.shape == (7, 4)
    for a in range(4):
        torch.testing.assert_close(
            q[:, a], net.q_values(obs, torch.full((7,), a)), rtol=0, atol=1e-6
        )
    # pairs in any order: (s_b, a_b) with a mix of actions
    actions = torch.tensor([3, 0, 2, 1, 1, 0, 3])
    torch.testing.assert_close(
        net.q_values(obs, actions), q[torch.arange(7), actions], atol=1e-6, rtol=0
    )
    # features are those of the greedy pair
    greedy = q.argmax(dim=1)
    torch.testing.assert_close(net.features(obs), net.pair_features(obs, greedy))


# -- the dueling head ------------------------------------------------------------------------


def test_dueling_head_by_hand() -> None:
    net = MLPQNetwork(obs_shape=[2], num_actions=3, hidden_sizes=[], head="dueling")
    with torch.no_grad():
        net.head.value.weight.copy_(torch.tensor([[1.0, 2.0]]))
        net.head.value.bias.fill_(0.5)
        net.head.advantage.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        net.head.advantage.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    s = torch.tensor([[1.0, 3.0]])  # hidden_sizes=[]: the features are the observation
    # V = 1 + 6 + 0.5 = 7.5;  A = [1, 3 + 1, 1 + 3 - 1] = [1, 4, 3], mean A = 8/3
    # Q = V + A - mean A = [7.5 + 1 - 8/3, 7.5 + 4 - 8/3, 7.5 + 3 - 8/3]
    q = net(s)
    torch.testing.assert_close(q, torch.tensor([[35 / 6, 53 / 6, 47 / 6]]))  # 5.83, 8.83, 7.83
    assert q.mean().item() == pytest.approx(7.5)  # mean_a Q = V
    assert net.q_values(s, torch.tensor([1])).item() == pytest.approx(53 / 6)


def test_dueling_head_identity_on_a_random_network() -> None:
    torch.manual_seed(0)
    net = MLPQNetwork(obs_shape=[4], num_actions=5, hidden_sizes=[16], head="dueling")
    obs = torch.randn(9, 4)
    features = net.features(obs)
    v = net.head.value(features)
    adv = net.head.advantage(features)
    torch.testing.assert_close(net(obs), v + adv - adv.mean(dim=1, keepdim=True))
    torch.testing.assert_close(net(obs).mean(dim=1, keepdim=True), v)
