"""Recurrent Q-networks: sequences sampled from the buffer, the burn-in, the hidden state per
lane while acting and evaluating, all with hand-built values.

``CountingEnv`` makes every stored value known: lane ``l``'s observation at vector step (=
buffer row) ``j`` is ``j * 10 + l``, its episodes last ``length[l]`` steps (terminated, or
truncated), every reward is 1. With ``length = 2`` a lane's rows go 0, 10 (real steps), 20 (the
final observation, an auto-reset row), then 30 starts the next episode, every 3 rows.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
from env_doubles import counting_env
from torch import nn

from rl_lightning.data import ReplayBuffer, SequenceSampler, VectorCollector
from rl_lightning.data.sequences import gather_sequences
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.exploration import Actor, EpsilonGreedy, LinearSchedule
from rl_lightning.greedy import play_greedy
from rl_lightning.networks import RecurrentEncoder, RecurrentQNetwork, linear_head
from rl_lightning.recurrent_loss import RecurrentTDLoss, window_flags


def filled_buffer(rows: int, steps: int, lengths=(2, 3)) -> ReplayBuffer:
    """A buffer of ``rows`` rows per lane after ``steps`` vector steps of ``counting_env``,
    actions ``row % 2``."""
    buffer = ReplayBuffer(capacity=rows * len(lengths), num_envs=len(lengths), obs_shape=(1,))
    truncate = tuple(i % 2 == 1 for i in range(len(lengths)))

    def policy(obs: np.ndarray, env_step: int) -> np.ndarray:
        return np.full(obs.shape[0], buffer.rows_written % 2)

    collector = VectorCollector(counting_env(lengths, truncate), policy, buffer, seed=0)
    collector.collect(steps)
    return buffer


# -- sequences ------------------------------------------------------------------------------------
def test_sequences_hold_consecutive_rows_and_mark_episode_starts() -> None:
    buffer = filled_buffer(rows=20, steps=12)
    # lane 0 (episodes of 2): rows 0, 1 real, 2 auto-reset, 3 starts the next episode, ...
    seq = gather_sequences(buffer, np.array([1 * 2 + 0, 4 * 2 + 1]), 5)
    np.testing.assert_array_equal(seq.obs[0, :, 0], [10, 20, 30, 40, 50])
    np.testing.assert_array_equal(seq.reset_step[0], [False, True, False, False, True])
    # zero state at the sequence start and at row 3 (after the auto-reset row 2)
    np.testing.assert_array_equal(seq.starts[0], [True, False, True, False, False])
    np.testing.assert_array_equal(seq.terminated[0], [True, False, False, True, False])
    np.testing.assert_array_equal(seq.rewards[0], [1, 0, 1, 1, 0])
    np.testing.assert_array_equal(seq.actions[0], [1, 0, 1, 0, 1])
    # lane 1 (episodes of 3, truncated): rows 0-2 real, 3 auto-reset, 4 starts: rows 4..8
    np.testing.assert_array_equal(seq.obs[1, :, 0], [41, 51, 61, 71, 81])
    np.testing.assert_array_equal(seq.reset_step[1], [False, False, False, True, False])
    np.testing.assert_array_equal(seq.starts[1], [True, False, False, False, True])
    np.testing.assert_array_equal(seq.truncated[1], [False, False, True, False, False])
    assert not seq.terminated[1].any()


def test_sequences_wrap_around_the_ring() -> None:
    # 6 rows per lane, 10 vector steps: rows 4..9 stored, row i in slot i % 6
    buffer = filled_buffer(rows=6, steps=10)
    sampler = SequenceSampler(seed=0, burn_in=1, train_length=2)
    assert sampler.length(n_step=1) == 4
    for _ in range(20):
        seq = sampler.sample(buffer, batch_size=8, n_step=1)
        assert seq is not None
        first = seq.obs[:, 0, 0]
        lanes = first.astype(int) % 10
        # consecutive rows of one lane, also across the ring's end (slot 5 -> slot 0)
        np.testing.assert_array_equal(seq.obs[:, :, 0], first[:, None] + 10 * np.arange(4))
        start_rows = (first.astype(int) - lanes) // 10
        assert start_rows.min() >= 4 and start_rows.max() <= 6  # rows 4..9 hold 4-row runs
        # every row after an auto-reset row is an episode start, and only those (and row 0)
        np.testing.assert_array_equal(seq.starts[:, 1:], seq.reset_step[:, :-1])
        assert seq.starts[:, 0].all()


def test_no_sequence_until_a_lane_holds_one() -> None:
    buffer = filled_buffer(rows=20, steps=3)
    sampler = SequenceSampler(seed=0, burn_in=1, train_length=2)
    assert sampler.sample(buffer, batch_size=4, n_step=1) is None  # 3 rows < 4
    buffer = filled_buffer(rows=20, steps=4)
    assert sampler.sample(buffer, batch_size=4, n_step=1) is not None


def test_sampler_state_round_trip() -> None:
    buffer = filled_buffer(rows=20, steps=15)
    a = SequenceSampler(seed=3, burn_in=2, train_length=3)
    a.sample(buffer, 4, 1)
    b = SequenceSampler(seed=99, burn_in=2, train_length=3)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.sample(buffer, 4, 1).obs, b.sample(buffer, 4, 1).obs)


# -- the network ----------------------------------------------------------------------------------
def gru_network(cell: str = "gru", burn_in: int = 2, train_length: int = 3) -> RecurrentQNetwork:
    torch.manual_seed(0)
    return RecurrentQNetwork(
        obs_shape=(1,),
        num_actions=2,
        encoder=functools.partial(RecurrentEncoder, cell=cell, hidden_size=8, hidden_sizes=[4]),
        head=linear_head,
        burn_in=burn_in,
        train_length=train_length,
    )


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unroll_equals_steps_and_resets_at_episode_starts(cell: str) -> None:
    net = gru_network(cell)
    obs = torch.randn(3, 6, 1)
    starts = torch.zeros(3, 6, dtype=torch.bool)
    starts[0, 2] = starts[2, 4] = True
    q, state = net.unroll(obs, None, starts)
    h = net.initial_state(3)
    for t in range(6):
        h = h * (~starts[:, t]).unsqueeze(1)
        q_t, h = net.step(obs[:, t], h)
        torch.testing.assert_close(q[:, t], q_t)
    torch.testing.assert_close(state, h)
    # nothing before an episode start reaches it: changing rows 0-1 of lane 0 changes nothing
    # from row 2 on
    other = obs.clone()
    other[0, :2] += 5.0
    q_other, _ = net.unroll(other, None, starts)
    torch.testing.assert_close(q_other[0, 2:], q[0, 2:])
    assert not torch.allclose(q_other[0, :2], q[0, :2])
    # one step from the zero state is forward()
    torch.testing.assert_close(net(obs[:, 0]), q[:, 0])


def test_burn_in_steps_get_no_gradient() -> None:
    net = gru_network(burn_in=2, train_length=3)
    loss = RecurrentTDLoss(q_network=net, estimator=QLearning(), loss=nn.MSELoss(), gamma=0.9)
    buffer = filled_buffer(rows=30, steps=20, lengths=(9, 9))
    seq = gather_sequences(buffer, np.array([0, 1, 6, 9]), 6).map(torch.from_numpy)
    obs = seq.obs.float().requires_grad_(True)
    value, q_sa, target = loss(seq._replace(obs=obs))
    value.backward()
    assert obs.grad is not None
    assert (obs.grad[:, :2] == 0).all()  # the burn-in rows: no gradient at all
    assert (obs.grad[:, 2:5].abs().sum(dim=(1, 2)) > 0).all()  # the train rows: some
    # the loss reads the burn-in rows only through the state they warm up (no gradient through
    # it): the parameters' gradient is that of a loss whose burned-in state is a constant
    net.zero_grad()
    value, _, _ = loss(seq)
    value.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with torch.no_grad():
        _, state = net.unroll(seq.obs[:, :2], None, seq.starts[:, :2])
    q_online, _ = net.unroll(seq.obs[:, 2:], state.clone(), seq.starts[:, 2:])
    a = seq.actions[:, 2:5].long().unsqueeze(2)
    manual = nn.functional.mse_loss(q_online[:, :3].gather(2, a).squeeze(2).flatten(), target)
    manual.backward()
    for g, p in zip(grads, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_window_flags_cut_at_the_episode_end_by_hand() -> None:
    # one sequence of 5 rows after the burn-in: rewards 1..5, the step from row 1 terminates,
    # the step from row 3 truncates; 3 train steps with 2-step windows
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    terminated = torch.tensor([[False, True, False, False, False]])
    truncated = torch.tensor([[False, False, False, True, False]])
    r, k, term = window_flags(rewards, terminated, truncated, n=2, length=3)
    np.testing.assert_array_equal(r[0].numpy(), [[1, 2], [2, 0], [3, 4]])
    np.testing.assert_array_equal(k[0].numpy(), [2, 1, 2])
    np.testing.assert_array_equal(term[0].numpy(), [True, True, False])


def test_loss_masks_auto_reset_rows_and_bootstraps_inside_the_sequence() -> None:
    net = gru_network(burn_in=1, train_length=4)
    loss = RecurrentTDLoss(
        q_network=net, estimator=QLearning(), loss=nn.MSELoss(), gamma=0.5, use_target_network=True
    )
    buffer = filled_buffer(rows=30, steps=20, lengths=(2, 3))
    # lane 0 from row 0: rows 0..5 = 0, 10, 20 (auto-reset), 30, 40, 50 (auto-reset)
    seq = gather_sequences(buffer, np.array([0]), 6).map(torch.from_numpy)
    value, q_sa, target = loss(seq)
    assert q_sa.shape == (3,)  # train rows 1..4, row 2 is an auto-reset row
    with torch.no_grad():
        q_all, _ = net.unroll(seq.obs, None, seq.starts)
    # row 1 (obs 10): terminated -> 1; row 3 (obs 30): r = 1, bootstrap row 4 (same episode);
    # row 4 (obs 40): terminated -> 1
    expected = torch.stack([torch.tensor(1.0), 1.0 + 0.5 * q_all[0, 4].max(), torch.tensor(1.0)])
    torch.testing.assert_close(target, expected)
    torch.testing.assert_close(
        q_sa, q_all[0, [1, 3, 4]].gather(1, seq.actions[0, [1, 3, 4], None]).squeeze(1)
    )


# -- acting and evaluation ------------------------------------------------------------------------
class StepCounter(nn.Module):
    """A fake recurrent network whose state counts the steps since the last zero state; its
    Q-values prefer action 1 after an odd number of steps."""

    recurrent = True

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def initial_state(self, batch: int, device: Any = None) -> torch.Tensor:
        return torch.zeros(batch, 1, device=device)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.seen.append(state.clone())
        state = state + 1
        odd = state.remainder(2)
        return torch.cat([1 - odd, odd], dim=1), state

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        raise AssertionError("a recurrent network acts through step()")


def greedy_actor(network: nn.Module) -> Actor:
    return Actor(
        network,
        EpsilonGreedy(schedule=LinearSchedule(start=0.0, end=0.0, duration_env_steps=0)),
        seed=0,
    )


def test_acting_state_resets_at_the_right_lane_and_step() -> None:
    network = StepCounter()
    actor = greedy_actor(network)
    buffer = ReplayBuffer(capacity=40, num_envs=2, obs_shape=(1,))
    collector = VectorCollector(counting_env((2, 3)), actor, buffer, seed=0)
    hidden = []
    for _ in range(8):
        collector.collect(1)
        assert actor.hidden is not None
        hidden.append(actor.hidden[:, 0].tolist())
    # lane 0: steps 1, 2 real, step 3 its auto-reset step (the final observation, still the old
    # episode: 3), then zeroed for the next episode's first observation; lane 1 likewise every 4
    np.testing.assert_array_equal(
        hidden, [[1, 1], [2, 2], [0, 3], [1, 0], [2, 1], [0, 2], [1, 3], [2, 0]]
    )
    # the network saw exactly the zero state at each episode's first observation
    seen = torch.stack(network.seen)[:, :, 0]
    np.testing.assert_array_equal(seen[:, 0].tolist(), [0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(seen[:, 1].tolist(), [0, 1, 2, 3, 0, 1, 2, 3])
    # actions follow the state: action 1 after an odd count (the auto-reset rows' are ignored)
    np.testing.assert_array_equal(buffer.actions[:8, 0], [1, 0, 1, 1, 0, 1, 1, 0])


def test_acting_state_survives_a_state_dict_round_trip() -> None:
    network = StepCounter()
    actor = greedy_actor(network)
    collector = VectorCollector(
        counting_env((4, 5)), actor, ReplayBuffer(capacity=40, num_envs=2, obs_shape=(1,)), seed=0
    )
    collector.collect(3)
    state = collector.state_dict()
    other = greedy_actor(StepCounter())
    other.load_state_dict(state["policy"])
    assert other.hidden is not None and actor.hidden is not None
    torch.testing.assert_close(other.hidden, actor.hidden)
    np.testing.assert_array_equal(state["policy"]["hidden"][:, 0], [3, 3])


def test_every_exploring_step_still_advances_the_state() -> None:
    network = StepCounter()
    actor = Actor(
        network,
        EpsilonGreedy(schedule=LinearSchedule(start=1.0, end=1.0, duration_env_steps=0)),
        seed=0,
    )
    for _ in range(3):
        actor(np.zeros((2, 1), dtype=np.float32), 0)
    assert actor.hidden is not None
    np.testing.assert_array_equal(actor.hidden[:, 0].tolist(), [3, 3])


def test_greedy_evaluation_carries_and_resets_the_state() -> None:
    network = StepCounter()
    result = play_greedy(network, counting_env((2, 3), (False, False)), episodes=4, seed=0)
    np.testing.assert_array_equal(result.returns, [2, 3, 2, 3])
    seen = torch.stack(network.seen)[:, :, 0]
    # two rounds of 3 steps (lane 1's episode lasts 3); each round starts from zero
    np.testing.assert_array_equal(seen[:, 1].tolist(), [0, 1, 2, 0, 1, 2])
