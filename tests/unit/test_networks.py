"""Q-networks: the tabular moving average, binning, action-in = action-out, the dueling head,
and networks composed from config (``arch.encoder`` + ``arch.head``, ``build_q_network``)."""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators import TDInputs, window_return
from rl_lightning.estimators.double_q import DoubleQLearning
from rl_lightning.estimators.expected_sarsa import ExpectedSarsa
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.estimators.sarsa import Sarsa
from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
from rl_lightning.losses import TDLoss
from rl_lightning.networks import (
    ActionInQNetwork,
    ActionOutQNetwork,
    DuelingHead,
    LinearQNetwork,
    MLPEncoder,
    MLPQNetwork,
    NoisyLinear,
    QHead,
    TabularQNetwork,
    build_q_network,
)
from rl_lightning.networks.numpy_forward import NumpyMLP
from rl_lightning.validation import ConfigError, validate_config

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
        encoder=functools.partial(MLPEncoder, hidden_sizes=[width]),
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


ESTIMATOR_CLASSES = [QLearning, Sarsa, ExpectedSarsa, DoubleQLearning]


@pytest.mark.parametrize("estimator_cls", ESTIMATOR_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("n", [1, 3])
def test_action_in_and_action_out_give_the_same_td_targets(estimator_cls, n: int) -> None:
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
    exploration = EpsilonGreedy(schedule=LinearSchedule(start=0.25, end=0.25, duration_env_steps=1))

    def td_loss(net: nn.Module) -> TDLoss:
        return TDLoss(
            q_network=net,
            estimator=estimator_cls(n_step=n),
            loss=nn.MSELoss(),
            gamma=0.875,  # 7/8: dyadic, so the action-out reference is exact too
            exploration=exploration,
        )

    y_out, y_in = td_loss(out).td_target(batch), td_loss(inn).td_target(batch)
    exact(y_in, y_out)
    # and both equal the estimator on the action-out Q-values (the reference)
    q_next = out(batch.next_obs).detach()
    assert len(set(q_next.argmax(1).tolist())) >= 2  # the greedy action varies
    probs = (
        0.75 * nn.functional.one_hot(q_next.argmax(1), NUM_ACTIONS) + 0.25 / NUM_ACTIONS
    ).float()
    r_t, discount_t = window_return(batch.rewards, batch.n_steps, batch.terminated, 0.875)
    inputs = TDInputs(r_t, discount_t, q_next, batch.actions, batch.next_actions, probs, q_next)
    reference = estimator_cls(n_step=n).target(inputs)
    torch.testing.assert_close(y_out, reference, rtol=0, atol=1e-6)
    # the losses agree too: Q(s, a) of the taken actions are the same for both
    exact(td_loss(inn)(batch)[0], td_loss(out)(batch)[0])


@pytest.mark.parametrize("encoding", ["one_hot", "embedding"])
@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_action_in_forward_is_q_values_of_every_pair(encoding: str, norm: str) -> None:
    torch.manual_seed(0)
    net = ActionInQNetwork(
        obs_shape=[2, 3],  # flattened to 6 inputs
        num_actions=4,
        encoder=functools.partial(MLPEncoder, hidden_sizes=[16, 8], norm=norm),
        action_encoding=encoding,
        embedding_dim=5,
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


# -- networks composed from config: arch.encoder + arch.head ---------------------------------

ARCH_CONF = Path(str(resources.files("rl_lightning.conf"))) / "arch"
ENCODERS = sorted(p.stem for p in (ARCH_CONF / "encoder").glob("*.yaml"))
HEADS = sorted(p.stem for p in (ARCH_CONF / "head").glob("*.yaml"))
BOUNDS = ([-1.0, -2.0, -3.0, -4.0], [1.0, 2.0, 3.0, 4.0])  # CartPole-like: 4 dimensions
#: the observation shape each encoder is tested on, where (2, 3) (flattened by MLPs) does not fit
ENCODER_OBS_SHAPES: dict[str, tuple[int, ...]] = {
    "nature_cnn": (4, 84, 84),  # a stack of 4 grey frames
    "minatar_cnn": (10, 10, 4),  # channels last
}


def build(
    cfg,
    *,
    overrides: dict | None = None,
    obs_shape: tuple[int, ...] = (4,),
    num_actions: int = 2,
    obs_bounds=lambda: BOUNDS,
) -> nn.Module:
    torch.manual_seed(0)
    return build_q_network(
        cfg.arch,
        obs_shape=obs_shape,
        num_actions=num_actions,
        obs_bounds=obs_bounds,
        overrides=overrides or {},
    )


def test_there_are_encoders_and_heads_to_compose() -> None:
    assert "mlp" in ENCODERS
    assert {"linear", "dueling"} <= set(HEADS)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_head_composes_with_every_encoder(compose_config, encoder: str, head: str) -> None:
    obs_shape = ENCODER_OBS_SHAPES.get(encoder, (2, 3))
    support = ["arch.head.v_min=-1", "arch.head.v_max=1"] if head == "distributional" else []
    net = build(
        compose_config([f"arch/encoder={encoder}", f"arch/head={head}", *support]),
        obs_shape=obs_shape,
        num_actions=5,
    )
    assert isinstance(net, ActionOutQNetwork) and isinstance(net.head, QHead)
    obs = torch.randn(7, *obs_shape)
    features = net.features(obs)
    assert features.shape == (7, net.encoder.out_features)
    assert net(obs).shape == (7, 5)
    torch.testing.assert_close(net(obs), net.head(features))
    if net.head.distributional:  # the mean of its return distribution
        dist = net.head.distribution(features)
        if net.head.kind == "categorical":  # log-probabilities over fixed atoms
            torch.testing.assert_close(net(obs), dist.exp() @ net.head.support)
        else:  # quantile values, each with probability 1/N
            torch.testing.assert_close(net(obs), dist.mean(-1))
        return
    with pytest.raises(NotImplementedError):  # expected values only, no return distribution
        net.head.distribution(features)


def test_the_dueling_head_from_config_by_hand(compose_config) -> None:
    net = build(
        compose_config(["arch/head=dueling", "arch.encoder.hidden_sizes=[2]"]),
        obs_shape=(2,),
        num_actions=3,
    )
    hidden, head = net.encoder[1], net.head
    assert isinstance(head, DuelingHead)
    with torch.no_grad():
        hidden.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]]))
        hidden.bias.copy_(torch.tensor([0.0, 0.5]))
        head.value.weight.copy_(torch.tensor([[1.0, 2.0]]))
        head.value.bias.fill_(0.5)
        head.advantage.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.advantage.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    s = torch.tensor([[1.0, 3.0]])
    # h = relu([1 + 0, 1 - 3 + 0.5]) = relu([1, -1.5]) = [1, 0]
    # V = 1 * 1 + 2 * 0 + 0.5 = 1.5;  A = [2, 0 + 1, 1 - 1] = [2, 1, 0], mean A = 1
    # Q = V + A - mean A = [2.5, 1.5, 0.5]
    torch.testing.assert_close(net.features(s), torch.tensor([[1.0, 0.0]]))
    exact(net(s), torch.tensor([[2.5, 1.5, 0.5]]))
    assert net.q_values(s, torch.tensor([0])).item() == 2.5


MLP = functools.partial(MLPQNetwork, obs_shape=[4], num_actions=2)
ACTION_IN = functools.partial(ActionInQNetwork, obs_shape=[4], num_actions=2)
MLP_128 = functools.partial(MLPEncoder, hidden_sizes=[128, 128])
# (overrides, exploration's network overrides, the same network built by its class)
PRESETS = [
    ([], {}, lambda: MLP()),
    (["arch/head=dueling"], {}, lambda: MLP(head="dueling")),
    (
        ["arch/head=dueling", "arch.head.init_zero=true"],
        {},
        lambda: MLP(head="dueling", init_zero=True),
    ),
    (
        ["arch.encoder.hidden_sizes=[]", "arch.head.bias=false", "arch.head.init_zero=true"],
        {},
        lambda: MLP(hidden_sizes=[], bias=False, init_zero=True),
    ),
    (
        ["arch.encoder.norm=layernorm", "arch.encoder.activation=tanh"],
        {},
        lambda: MLP(norm="layernorm", activation="tanh"),
    ),
    (["arch.encoder.norm=batchnorm"], {}, lambda: MLP(norm="batchnorm")),
    ([], {"noisy": True}, lambda: MLP(noisy=True)),
    (["arch/head=dueling"], {"noisy": True}, lambda: MLP(head="dueling", noisy=True)),
    ([], {"dropout": 0.25}, lambda: MLP(dropout=0.25)),
    (["arch=mlp_action_in"], {}, lambda: ACTION_IN(encoder=MLP_128)),
    (
        ["arch=mlp_action_in", "arch.action_encoding=embedding"],
        {},
        lambda: ACTION_IN(encoder=MLP_128, action_encoding="embedding"),
    ),
    (
        ["arch=mlp_action_in"],
        {"noisy": True},
        lambda: ACTION_IN(encoder=functools.partial(MLP_128, noisy=True), noisy=True),
    ),
    (
        ["arch=mlp_action_in"],
        {"dropout": 0.25},
        lambda: ACTION_IN(encoder=functools.partial(MLP_128, dropout=0.25)),
    ),
    (
        ["arch=tabular"],
        {"noisy": True},
        lambda: TabularQNetwork(
            obs_shape=[4], num_actions=2, obs_low=BOUNDS[0], obs_high=BOUNDS[1], bins=8, noisy=True
        ),
    ),
    (
        ["arch=linear"],
        {},
        lambda: LinearQNetwork(obs_shape=[4], num_actions=2, obs_low=BOUNDS[0], obs_high=BOUNDS[1]),
    ),
    (
        ["arch=linear", "arch.features=polynomial"],
        {"dropout": 0.25},
        lambda: LinearQNetwork(
            obs_shape=[4],
            num_actions=2,
            obs_low=BOUNDS[0],
            obs_high=BOUNDS[1],
            features="polynomial",
            dropout=0.25,
        ),
    ),
]


@pytest.mark.parametrize(
    ("overrides", "network_overrides", "reference"),
    PRESETS,
    ids=[" ".join(o) + (f" {n}" if n else "") or "default" for o, n, _ in PRESETS],
)
def test_each_preset_builds_the_network_of_its_class(
    compose_config, overrides, network_overrides, reference
) -> None:
    """Same class, same parameters in the same order, drawn from the same seed (encoder layers
    first, then the head), so a fixed seed gives the same run; the same Q-values."""
    net = build(compose_config(overrides), overrides=network_overrides)
    torch.manual_seed(0)
    expected = reference()
    assert isinstance(expected, type(net))  # MLPQNetwork: the shorthand ActionOutQNetwork
    state, expected_state = net.state_dict(), expected.state_dict()
    assert list(state) == list(expected_state)
    for key, value in expected_state.items():
        exact(state[key], value)
    assert [type(m) for m in net.modules()][1:] == [type(m) for m in expected.modules()][1:]
    obs = torch.randn(9, 4) * 2
    net.eval(), expected.eval()
    exact(net(obs), expected(obs))
    net.train(), expected.train()  # noise and dropout draw from the global generator
    torch.manual_seed(1)
    q = net(obs)
    torch.manual_seed(1)
    exact(q, expected(obs))


def test_exploration_overrides_reach_every_part_that_declares_them(compose_config) -> None:
    net = build(compose_config(["arch/head=dueling"]), overrides={"noisy": True, "dropout": 0.25})
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, NoisyLinear))]
    assert len(layers) == 4  # two hidden layers, the value and the advantage streams
    assert all(isinstance(m, NoisyLinear) for m in layers)
    # dropout only where declared: after each hidden layer of the encoder, none in the head
    assert [m.p for m in net.encoder.modules() if isinstance(m, nn.Dropout)] == [0.25, 0.25]
    assert not [m for m in net.head.modules() if isinstance(m, nn.Dropout)]


def test_an_override_no_part_declares_is_a_clear_error(compose_config) -> None:
    with pytest.raises(ValueError, match=r"the exploration needs \['temperature'\] in the network"):
        build(compose_config([]), overrides={"temperature": 1.0})


@pytest.mark.parametrize("arch", ["mlp", "mlp_action_in"])
def test_the_bounds_are_not_asked_for_where_unused(compose_config, arch: str) -> None:
    def no_bounds() -> tuple[list[float], list[float]]:
        raise AssertionError("asked for the observation bounds")

    build(compose_config([f"arch={arch}"]), obs_bounds=no_bounds)


@pytest.mark.parametrize("arch", ["tabular", "linear"])
def test_the_bounds_reach_the_archs_that_need_them(compose_config, arch: str) -> None:
    calls: list[int] = []

    def bounds() -> tuple[list[float], list[float]]:
        calls.append(1)
        return BOUNDS

    net = build(compose_config([f"arch={arch}"]), obs_bounds=bounds)
    assert calls == [1]
    low = net.low if arch == "tabular" else net.encoder.low
    exact(low, torch.tensor(BOUNDS[0]))


def test_numpy_acting_engages_for_the_default_network(compose_config) -> None:
    net = build(compose_config([]))
    mirror = NumpyMLP.build(net)
    assert mirror is not None
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    q = mirror(obs)
    assert q is not None
    np.testing.assert_allclose(q, net(torch.as_tensor(obs)).detach().numpy(), rtol=0, atol=1e-5)
    assert NumpyMLP.build(build(compose_config(["arch/head=dueling"]))) is None  # through torch


def test_a_part_chosen_by_a_string_names_the_group_syntax(compose_config) -> None:
    cfg = compose_config(["arch.head=dueling"])  # Hydra accepts it: a string replaces the node
    message = "arch.head='dueling' is not a config node: choose the head with arch/head=NAME"
    with pytest.raises(ValueError, match=re.escape(message)):
        build(cfg)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+arch.encoder.hiden_sizes=[64]"],
            "arch.encoder.hiden_sizes=[64] is not a parameter of rl_lightning.networks.MLPEncoder: "
            "allowed keys are obs_shape, hidden_sizes, activation, dropout, norm, noisy "
            "(did you mean hidden_sizes?)",
        ),
        (
            ["+arch.head.bais=false"],
            "arch.head.bais=False is not a parameter of rl_lightning.networks.linear_head: "
            "allowed keys are in_features, num_actions, bias, init_zero, noisy, dueling (did you mean bias?)",
        ),
        (
            ["arch/head=dueling", "+arch.head.bias=false"],
            "arch.head.bias=False is not a parameter of rl_lightning.networks.DuelingHead",
        ),
        # a part's key one level up (the keys before arch.encoder / arch.head existed)
        (
            ["+arch.hidden_sizes=[64]"],
            "arch.hidden_sizes=[64] is not a parameter of rl_lightning.networks.ActionOutQNetwork: "
            "allowed keys are obs_shape, num_actions, encoder, head "
            "(did you mean arch.encoder.hidden_sizes?)",
        ),
        (["arch=mlp_action_in", "+arch.norm=batchnorm"], "(did you mean arch.encoder.norm?)"),
    ],
)
def test_a_wrong_arch_key_gets_a_hint(compose_config, overrides, message) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(compose_config(overrides))
    assert message in str(info.value)


def test_the_presets_pass_validation(compose_config) -> None:
    for overrides in (
        [],
        ["arch/head=dueling"],
        ["arch=mlp_action_in"],
        ["arch=tabular"],
        ["arch=linear"],
        ["experiment=cartpole_dqn", "arch=mlp_action_in"],
        ["experiment=ablation_batchnorm"],
    ):
        validate_config(compose_config(overrides))


# the arch node as configs stored in checkpoints before arch.encoder / arch.head (rl-eval reads it)
OLD_MLP = {
    "_target_": "rl_lightning.networks.MLPQNetwork",
    "hidden_sizes": [128, 128],
    "activation": "relu",
    "dropout": 0.0,
    "norm": "none",
    "head": "dueling",
    "noisy": False,
    "bias": True,
    "init_zero": False,
}
OLD_ACTION_IN = {
    "_target_": "rl_lightning.networks.ActionInQNetwork",
    "hidden_sizes": [128, 128],
    "activation": "relu",
    "action_encoding": "embedding",
    "embedding_dim": 8,
    "dropout": 0.0,
    "norm": "none",
    "noisy": False,
}


@pytest.mark.parametrize(
    ("old", "overrides"),
    [
        (OLD_MLP, ["arch/head=dueling"]),
        (OLD_ACTION_IN, ["arch=mlp_action_in", "arch.action_encoding=embedding"]),
    ],
    ids=["mlp_dueling", "action_in"],
)
@pytest.mark.parametrize("network_overrides", [{}, {"noisy": True}], ids=["plain", "noisy"])
def test_a_config_stored_before_encoder_and_head_builds_the_same_network(
    compose_config, old, overrides, network_overrides
) -> None:
    stored = OmegaConf.create({"arch": old})
    net = build(stored, overrides=network_overrides)
    expected = build(compose_config(overrides), overrides=network_overrides)
    assert list(net.state_dict()) == list(expected.state_dict())  # a checkpoint's weights load
    for key, value in expected.state_dict().items():
        exact(net.state_dict()[key], value)


def test_tables_and_rbf_grids_too_large_to_build_are_refused() -> None:
    # a frame stack of 4 over CartPole's 4 dimensions: 10^16 cells, 5^16 RBF centres
    from rl_lightning.networks.linear import FeatureMap
    from rl_lightning.networks.tabular import TabularQNetwork

    bounds = {"obs_low": [-1.0] * 16, "obs_high": [1.0] * 16}
    with pytest.raises(ValueError, match="1e\\+16 cells \\(16 dimensions\\)"):
        TabularQNetwork(obs_shape=(4, 4), num_actions=2, bins=10, **bounds)
    with pytest.raises(ValueError, match="5\\^16 = 1.53e\\+11 features"):
        FeatureMap(kind="rbf", dims=16, centers=5, **bounds)
