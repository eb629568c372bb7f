"""Every estimator at n = 1 and n = 3, from windows the real ReplayBuffer builds.

Hand-made lanes are written with ``ReplayBuffer.add`` exactly as ``VectorCollector`` writes
them (gymnasium's NEXT_STEP auto-reset: the step after an episode end stores the final
observation, reward 0, no flags, ``reset_step=True``). Windows are built with
``buffer.gather(starts, lanes, n)``, converted to tensors and fed to each estimator's ``target``
(and to ``TDLoss.td_target`` inside a ``QLearningModule``) with hand-picked Q-value tables indexed by the
observation, which is a state id. Every expected target is computed by hand in a comment.

gamma = 0.9: gamma^2 = 0.81, gamma^3 = 0.729.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from q_doubles import LookupQ
from torch import nn

from rl_lightning.data.buffer import ReplayBuffer, TransitionBatch
from rl_lightning.data.samplers import UniformSampler
from rl_lightning.estimators import Estimator, TDInputs, window_return
from rl_lightning.estimators.double_q import DoubleQLearning
from rl_lightning.estimators.expected_sarsa import ExpectedSarsa
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.estimators.sarsa import Sarsa
from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule
from rl_lightning.target_updates import HardTargetUpdate, NoTargetUpdate

GAMMA = 0.9
NUM_ACTIONS = 3
NUM_STATES = 30
NAN = float("nan")
# the four estimators by their config names (conf/estimator/<name>.yaml)
CLASSES: dict[str, type[Estimator]] = {
    "q_learning": QLearning,
    "sarsa": Sarsa,
    "expected_sarsa": ExpectedSarsa,
    "double_q": DoubleQLearning,
}
ESTIMATORS = tuple(CLASSES)

# One row per vector step: (obs = state id, action, reward, terminated, truncated, reset_step).
# Row t holds (o_t, a_t, r_{t+1}, terminated_{t+1}, truncated_{t+1}).
LANE_0 = [
    (0, 1, 1.0, False, False, False),
    (1, 0, 2.0, False, False, False),
    (2, 2, 3.0, False, False, False),
    (3, 1, 4.0, True, False, False),  # the step from s=3 terminates (into state 4)
    (4, 2, 0.0, False, False, True),  # auto-reset row: obs 4 = terminal state, action ignored
    (5, 0, 5.0, False, False, False),
    (6, 2, 6.0, False, False, False),
    (7, 1, 7.0, False, False, False),
]
LANE_1 = [
    (10, 2, -1.0, False, False, False),
    (11, 1, 0.5, False, False, False),
    (12, 0, 2.0, False, True, False),  # the step from s=12 is truncated by the time limit
    # auto-reset row: obs 13 is the truncated episode's final observation; its action is what
    # the behaviour policy chose in s=13 (the env ignored it): SARSA's a_{t+k}
    (13, 2, 0.0, False, False, True),
    (14, 0, 1.0, False, False, False),
    (15, 0, 1.0, False, False, False),
    (16, 1, 1.0, False, False, False),
    (17, 1, 1.0, False, False, False),
]


def table(rows: dict[int, list[float]]) -> torch.Tensor:
    """A (NUM_STATES, A) Q table; rows not listed are NaN, so a wrong lookup poisons the target."""
    q = torch.full((NUM_STATES, NUM_ACTIONS), NAN)
    for state, values in rows.items():
        q[state] = torch.tensor(values)
    return q


# the target network's values (what is bootstrapped)
Q_VALUE = table(
    {
        1: [2.0, 4.0, 1.0],  # max 4
        3: [2.0, 1.0, 5.0],  # max 5
        4: [100.0, 100.0, 100.0],  # terminal state: must be multiplied by 0
        13: [-2.0, 6.0, 1.0],  # max 6
        15: [1.0, 0.0, 3.0],  # max 3
        17: [4.0, 2.0, -1.0],  # max 4
        25: [0.0, 2.0, 4.0],  # (wrap-around test)
        26: [1.0, 3.0, 2.0],
        27: [5.0, -1.0, 2.0],
    }
)
# the online network (Double Q's selector and the behaviour policy's Q-values)
Q_ONLINE = table(
    {
        1: [0.0, 1.0, 9.0],  # argmax 2
        3: [7.0, 0.0, 0.0],  # argmax 0
        4: [0.0, 0.0, 50.0],  # argmax 2
        13: [5.0, 0.0, 1.0],  # argmax 0
        15: [0.0, 8.0, 0.0],  # argmax 1
        17: [0.0, 0.0, 1.0],  # argmax 2
    }
)
# epsilon-greedy (eps = 0.3) w.r.t. Q_ONLINE: eps / 3 = 0.1 each, + 0.7 on the online argmax
PROBS = table(
    {
        1: [0.1, 0.1, 0.8],
        3: [0.8, 0.1, 0.1],
        4: [0.1, 0.1, 0.8],
        13: [0.8, 0.1, 0.1],
        15: [0.1, 0.8, 0.1],
        17: [0.1, 0.1, 0.8],
    }
)
# E_pi Q_VALUE:  s1: 0.2 + 0.4 + 0.8 = 1.4       s3: 1.6 + 0.1 + 0.5 = 2.2
#               s13: -1.6 + 0.6 + 0.1 = -0.9    s15: 0.1 + 0 + 0.3 = 0.4   s17: 0.4 + 0.2 - 0.8 = -0.2


def write(buf: ReplayBuffer, lanes: list[list[tuple]]) -> None:
    for rows in zip(*lanes, strict=True):
        obs, act, rew, term, trunc, reset = zip(*rows, strict=True)
        buf.add(
            np.array(obs, dtype=np.float32)[:, None],
            np.array(act, dtype=np.int64),
            np.array(rew, dtype=np.float32),
            np.array(term),
            np.array(trunc),
            np.array(reset),
        )


def two_lane_buffer() -> ReplayBuffer:
    buf = ReplayBuffer(capacity=20, num_envs=2, obs_shape=(1,))  # 10 rows, no wrap
    write(buf, [LANE_0, LANE_1])
    return buf


def gather(buf: ReplayBuffer, windows: list[tuple[int, int]], n: int) -> TransitionBatch:
    """Windows given as (lane, start row), converted to tensors."""
    lanes = np.array([lane for lane, _ in windows], dtype=np.int64)
    starts = np.array([start for _, start in windows], dtype=np.int64)
    return buf.gather(starts, lanes, n).map(torch.as_tensor)


def target(name: str, batch: TransitionBatch, n: int) -> torch.Tensor:
    """The estimator's target with the hand tables looked up at the bootstrap observations."""
    s_t = batch.next_obs[:, 0].long()
    r_t, discount_t = window_return(batch.rewards, batch.n_steps, batch.terminated, GAMMA)
    return CLASSES[name](n_step=n).target(
        TDInputs(
            r_t=r_t,
            discount_t=discount_t,
            q_t=Q_VALUE[s_t],
            a_tm1=batch.actions,
            a_t=batch.next_actions,
            probs_t=PROBS[s_t],
            q_t_online=Q_ONLINE[s_t],
        )
    )


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=0, atol=1e-5)


# -- n = 3 -----------------------------------------------------------------------------------

WINDOWS_3 = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 4)]

# (lane, start): R = sum_{i<k} 0.9^i r, discount d = 0.9^k (0 if terminated), bootstrap s', a'
#   (0,0): [1, 2, 3] k=3      R = 1 + 1.8 + 2.43 = 5.23      d = 0.729  s'=3  a'=1
#   (0,1): [2, 3, 4] k=3 term R = 2 + 2.7 + 3.24 = 7.94      d = 0      (terminates on step 3)
#   (0,2): [3, 4, 0] k=2 term R = 3 + 3.6 = 6.6              d = 0      (terminates on step 2)
#   (1,0): [-1, .5, 2] k=3 trunc R = -1 + 0.45 + 1.62 = 1.07 d = 0.729  s'=13 a'=2 (reset row)
#   (1,1): [.5, 2, 0] k=2 trunc  R = 0.5 + 1.8 = 2.3         d = 0.81   s'=13 a'=2
#   (1,2): [2, 0, 0]  k=1 trunc  R = 2                       d = 0.9    s'=13 a'=2
#   (1,4): [1, 1, 1]  k=3        R = 1 + 0.9 + 0.81 = 2.71   d = 0.729  s'=17 a'=1
EXPECTED_3 = {
    # max:            5.23 + .729*5, 7.94, 6.6, 1.07 + .729*6, 2.3 + .81*6, 2 + .9*6, 2.71 + .729*4
    "q_learning": [8.875, 7.94, 6.6, 5.444, 7.16, 7.4, 5.626],
    # Q(s', a'):      5.23 + .729*1, ..., 1.07 + .729*1, 2.3 + .81*1, 2 + .9*1, 2.71 + .729*2
    "sarsa": [5.959, 7.94, 6.6, 1.799, 3.11, 2.9, 4.168],
    # E_pi Q(s', .):  5.23 + .729*2.2, ..., 1.07 - .729*.9, 2.3 - .81*.9, 2 - .9*.9, 2.71 - .729*.2
    "expected_sarsa": [6.8338, 7.94, 6.6, 0.4139, 1.571, 1.19, 2.5642],
    # Q_VALUE(s', argmax Q_ONLINE(s')): s'=3 -> a=0 -> 2; s'=13 -> a=0 -> -2; s'=17 -> a=2 -> -1
    #                 5.23 + .729*2, ..., 1.07 - .729*2, 2.3 - .81*2, 2 - .9*2, 2.71 - .729
    "double_q": [6.688, 7.94, 6.6, -0.388, 0.68, 0.2, 1.981],
}


def test_three_step_windows_from_the_buffer_by_hand() -> None:
    batch = gather(two_lane_buffer(), WINDOWS_3, 3)
    torch.testing.assert_close(
        batch.rewards,
        torch.tensor(
            [
                [1.0, 2.0, 3.0],
                [2.0, 3.0, 4.0],
                [3.0, 4.0, 0.0],  # zero-padded after the termination
                [-1.0, 0.5, 2.0],
                [0.5, 2.0, 0.0],  # zero-padded after the truncation
                [2.0, 0.0, 0.0],
                [1.0, 1.0, 1.0],
            ]
        ),
    )
    assert batch.n_steps.tolist() == [3, 3, 2, 3, 2, 1, 3]
    assert batch.terminated.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # truncation: 0
    # the truncated windows bootstrap from the final obs 13 (the auto-reset row), not from 14
    assert batch.next_obs[:, 0].tolist() == [3.0, 4.0, 4.0, 13.0, 13.0, 13.0, 17.0]
    assert batch.next_actions.tolist() == [1, 2, 2, 2, 2, 2, 1]
    assert batch.obs[:, 0].tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0, 14.0]
    assert batch.actions.tolist() == [1, 0, 2, 2, 1, 0, 0]


@pytest.mark.parametrize("name", ESTIMATORS)
def test_three_step_targets_by_hand(name: str) -> None:
    batch = gather(two_lane_buffer(), WINDOWS_3, 3)
    close(target(name, batch, 3), EXPECTED_3[name])


# -- n = 1 -----------------------------------------------------------------------------------

WINDOWS_1 = [(0, 0), (0, 3), (1, 2), (1, 4)]

#   (0,0): r=1  d=0.9 s'=1  a'=0        (0,3): r=4 terminated -> 4 for every estimator
#   (1,2): r=2  truncated: d=0.9 s'=13 (the final obs) a'=2 (the reset row's action)
#   (1,4): r=1  d=0.9 s'=15 a'=0
EXPECTED_1 = {
    "q_learning": [4.6, 4.0, 7.4, 3.7],  # 1 + .9*4, 4, 2 + .9*6, 1 + .9*3
    "sarsa": [2.8, 4.0, 2.9, 1.9],  # 1 + .9*Q(1,0)=2, 4, 2 + .9*Q(13,2)=1, 1 + .9*Q(15,0)=1
    "expected_sarsa": [2.26, 4.0, 1.19, 1.36],  # 1 + .9*1.4, 4, 2 - .9*.9, 1 + .9*.4
    "double_q": [1.9, 4.0, 0.2, 1.0],  # 1 + .9*Q(1,2)=1, 4, 2 + .9*Q(13,0)=-2, 1 + .9*Q(15,1)=0
}


def test_one_step_windows_from_the_buffer_by_hand() -> None:
    batch = gather(two_lane_buffer(), WINDOWS_1, 1)
    assert batch.rewards[:, 0].tolist() == [1.0, 4.0, 2.0, 1.0]
    assert batch.n_steps.tolist() == [1, 1, 1, 1]
    assert batch.terminated.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert batch.next_obs[:, 0].tolist() == [1.0, 4.0, 13.0, 15.0]
    assert batch.next_actions.tolist() == [0, 2, 2, 0]


@pytest.mark.parametrize("name", ESTIMATORS)
def test_one_step_targets_by_hand(name: str) -> None:
    batch = gather(two_lane_buffer(), WINDOWS_1, 1)
    close(target(name, batch, 1), EXPECTED_1[name])


def test_terminated_bootstrap_is_ignored_even_with_huge_values() -> None:
    # the terminal state's Q-values (100) never enter: the (0,1), (0,2), (0,3) windows end there
    batch = gather(two_lane_buffer(), [(0, 1), (0, 2)], 3)
    for name in ESTIMATORS:
        close(target(name, batch, 3), [7.94, 6.6])


# -- SARSA across the ring buffer's wrap-around ----------------------------------------------

# one lane, 5 rows: rows 0..7 are written, rows 3..7 survive in slots t % 5 = 3, 4, 0, 1, 2
WRAP_ACTIONS = [0, 1, 0, 1, 0, 1, 0, 2]  # rows 0, 1, 2 (overwritten) differ from rows 5, 6, 7


def wrapped_buffer() -> ReplayBuffer:
    buf = ReplayBuffer(capacity=5, num_envs=1, obs_shape=(1,))
    lane = [(20 + t, a, float(t), False, False, False) for t, a in enumerate(WRAP_ACTIONS)]
    write(buf, [lane])
    return buf


def test_the_wrapped_layout() -> None:
    buf = wrapped_buffer()
    assert buf.rows == 5 and buf.rows_written == 8
    assert buf.obs[:, 0, 0].tolist() == [25.0, 26.0, 27.0, 23.0, 24.0]  # slots 0..4
    assert buf.actions[:, 0].tolist() == [1, 0, 2, 1, 0]  # rows 5, 6, 7, 3, 4


def test_sarsa_reads_the_next_action_across_the_wrap() -> None:
    buf = wrapped_buffer()
    # start row 3 (slot 3): rows 3, 4, 5, 6 = slots 3, 4, 0, 1 -> r = [3, 4, 5], s' = 26, a' = 0
    # start row 4 (slot 4): rows 4, 5, 6, 7 = slots 4, 0, 1, 2 -> r = [4, 5, 6], s' = 27, a' = 2
    batch = gather(buf, [(0, 3), (0, 4)], 3)
    assert batch.rewards.tolist() == [[3.0, 4.0, 5.0], [4.0, 5.0, 6.0]]
    assert batch.next_obs[:, 0].tolist() == [26.0, 27.0]
    assert batch.next_actions.tolist() == [0, 2]  # not the overwritten rows' actions 1, 0
    # R = 3 + 3.6 + 4.05 = 10.65 -> 10.65 + 0.729 * Q(26, 0)=1 = 11.379
    # R = 4 + 4.5 + 4.86 = 13.36 -> 13.36 + 0.729 * Q(27, 2)=2 = 14.818
    close(target("sarsa", batch, 3), [11.379, 14.818])
    # Q-learning from the same windows: 10.65 + 0.729 * 3 = 12.837; 13.36 + 0.729 * 5 = 17.005
    close(target("q_learning", batch, 3), [12.837, 17.005])
    # one step from row 4 (slot 4) to row 5 (slot 0): r = 4, s' = 25, a' = 1
    # -> 4 + 0.9 * Q(25, 1)=2 = 5.8
    batch = gather(buf, [(0, 4)], 1)
    assert (batch.next_obs[0, 0].item(), batch.next_actions[0].item()) == (25.0, 1)
    close(target("sarsa", batch, 1), [5.8])


def test_sampling_across_the_wrap_gives_the_same_windows() -> None:
    # the uniform sampler picks the start rows itself; both 3-step windows it can pick are the
    # ones above
    batch = UniformSampler(seed=0).sample(wrapped_buffer(), 200, 3).map(torch.as_tensor)
    assert set(batch.obs[:, 0].tolist()) == {23.0, 24.0}
    expected = torch.where(batch.obs[:, 0] == 23.0, 11.379, 14.818)
    torch.testing.assert_close(target("sarsa", batch, 3), expected, rtol=0, atol=1e-5)


# -- the same numbers through TDLoss.td_target inside the module -----------------------------


def make_module(name: str, n: int, target_update=None) -> QLearningModule:
    target_update = target_update or HardTargetUpdate(every_updates=1000)
    module = QLearningModule(
        loss=TDLoss(
            q_network=LookupQ(Q_ONLINE),
            estimator=CLASSES[name](n_step=n),
            loss=nn.MSELoss(),
            gamma=GAMMA,
            use_target_network=target_update.uses_target_network,
            exploration=EpsilonGreedy(
                schedule=LinearSchedule(start=0.3, end=0.3, duration_env_steps=1)
            ),
        ),
        target_update=target_update,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
    )
    if module.target_network is not None:
        with torch.no_grad():
            module.target_network.table.copy_(Q_VALUE)
    return module


def test_epsilon_greedy_probs_are_the_hand_table() -> None:
    exploration = make_module("expected_sarsa", 1).exploration
    states = [1, 3, 4, 13, 15, 17]
    torch.testing.assert_close(exploration.probs(Q_ONLINE[states], 0), PROBS[states])


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_module_td_target_wires_target_and_online_networks(name: str, n: int) -> None:
    # the target network supplies the values, the online network Double Q's argmax and the
    # epsilon-greedy probabilities of Expected SARSA: the same hand numbers as above
    windows, expected = (WINDOWS_3, EXPECTED_3) if n == 3 else (WINDOWS_1, EXPECTED_1)
    batch = gather(two_lane_buffer(), windows, n)
    close(make_module(name, n).loss.td_target(batch), expected[name])


def test_module_without_target_network_bootstraps_from_the_online_network() -> None:
    # no target network and online = Q_VALUE: Double Q selects and evaluates with one table, so
    # it is Q-learning: [8.875, 7.94, 6.6, 5.444, 7.16, 7.4, 5.626]
    batch = gather(two_lane_buffer(), WINDOWS_3, 3)
    module = make_module("double_q", 3, NoTargetUpdate())
    assert module.target_network is None
    with torch.no_grad():
        module.q_network.table.copy_(Q_VALUE)
    close(module.loss.td_target(batch), EXPECTED_3["q_learning"])


def test_module_loss_regresses_q_of_the_taken_action_on_the_target() -> None:
    # 3-step windows (0,1): s=1, a=0, terminated -> y = 7.94; (0,3): s=3, a=1, terminated after
    # one step -> y = 4. Q_ONLINE(1, 0) = Q_ONLINE(3, 1) = 0.
    # MSE = ((0 - 7.94)^2 + (0 - 4)^2) / 2 = (63.0436 + 16) / 2 = 39.5218
    module = make_module("q_learning", 3)
    batch = gather(two_lane_buffer(), [(0, 1), (0, 3)], 3)
    loss, q_sa, y = module.compute_loss(batch)
    close(q_sa, [0.0, 0.0])
    close(y, [7.94, 4.0])
    torch.testing.assert_close(loss, torch.tensor(39.5218), rtol=0, atol=1e-4)
