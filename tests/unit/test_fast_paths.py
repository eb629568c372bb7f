"""The hot-loop fast paths keep the maths: interleaved acting and learning, the direct update
path against Lightning's, the actor's skipped forward pass, the one-step target, the deferred
training statistics."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from rl_lightning.data import ReplayBuffer, ReplayDataset, TransitionBatch, VectorCollector
from rl_lightning.data.dataset import InterleavedUpdates
from rl_lightning.data.samplers import OnlineSampler, UniformSampler
from rl_lightning.estimators import TDInputs, bootstrap_discount, n_step_return, window_return
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.exploration import Actor, EpsilonGreedy, LinearSchedule
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule
from rl_lightning.networks import MLPQNetwork
from rl_lightning.networks.numpy_forward import NumpyMLP
from rl_lightning.target_updates import HardTargetUpdate
from rl_lightning.train_stats import STATS_FOLD, TrainStats

# -- the interleaved stream ------------------------------------------------------------------


def stream(interleaved: bool, k: int = 5, per_update: float = 4, total: int = 300):
    env = gym.make_vec("CartPole-v1", 2)
    buf = ReplayBuffer(capacity=1_000, num_envs=2, obs_shape=(4,))
    rng = np.random.default_rng(0)
    collector = VectorCollector(env, lambda obs, t: rng.integers(2, size=len(obs)), buf, seed=0)
    dataset = ReplayDataset(
        collector=collector,
        buffer=buf,
        sampler=UniformSampler(seed=0),
        batch_size=8,
        n_step=1,
        total_env_steps=total,
        learning_starts_env_steps=40,
        env_steps_per_update=per_update,
        updates_per_batch=k,
        interleaved=interleaved,
    )
    return dataset, collector


def test_interleaved_stream_acts_before_every_minibatch() -> None:
    dataset, collector = stream(interleaved=True)
    updates, target = 0, 40.0
    for item in dataset:
        assert isinstance(item, InterleavedUpdates)
        for minibatch in item:
            target += 4
            # the collector reached this update's share of env steps, and no more than one
            # vector step (2 lanes) beyond it: acting happened just before this minibatch
            assert min(target, 300) <= collector.env_steps < min(target, 300) + 2 + 1
            assert minibatch.env_steps == collector.env_steps
            assert minibatch.obs.shape == (8, 4) and minibatch.actions.shape == (8,)
            assert isinstance(minibatch.obs, torch.Tensor)
            updates += 1
    # one update per 4 env steps after the warm-up, the last one when the budget is reached
    assert updates == (300 - 40) // 4
    assert 300 <= collector.env_steps < 302
    assert dataset.sample_time_s > 0 and collector.collect_time_s > 0


def test_interleaved_is_ignored_for_the_online_stream() -> None:
    env = gym.make_vec("CartPole-v1", 2)
    buf = ReplayBuffer(capacity=100, num_envs=2, obs_shape=(4,))
    collector = VectorCollector(env, lambda obs, t: np.zeros(len(obs), np.int64), buf, seed=0)
    dataset = ReplayDataset(
        collector=collector,
        buffer=buf,
        sampler=OnlineSampler(),
        batch_size=8,
        n_step=1,
        total_env_steps=50,
        learning_starts_env_steps=0,
        env_steps_per_update=4,
        updates_per_batch=3,
        interleaved=True,
    )
    assert not dataset.interleaved
    assert all(isinstance(item, TransitionBatch) for item in dataset)


# -- the direct update path against Lightning's ------------------------------------------------


class FixedBatches(IterableDataset):
    def __init__(self, minibatches: list[TransitionBatch], k: int, interleaved: bool) -> None:
        self.minibatches, self.k, self.interleaved = minibatches, k, interleaved

    def __iter__(self):
        for i in range(0, len(self.minibatches), self.k):
            chunk = self.minibatches[i : i + self.k]
            if self.interleaved:
                yield chunk  # any iterable of minibatches is learnt from one by one
            else:
                yield TransitionBatch(
                    *(torch.stack(fields) for fields in zip(*(m[:7] for m in chunk), strict=True)),
                    env_steps=chunk[-1].env_steps,
                )


class StepHookCounter(pl.Callback):
    """Listens to a per-update hook: the module must take Lightning's path and call it."""

    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1


def random_minibatches(count: int, size: int = 16) -> list[TransitionBatch]:
    g = torch.Generator().manual_seed(0)
    return [
        TransitionBatch(
            obs=torch.randn(size, 4, generator=g),
            actions=torch.randint(2, (size,), generator=g),
            rewards=torch.randn(size, 1, generator=g),
            n_steps=torch.ones(size, dtype=torch.int64),
            terminated=(torch.rand(size, generator=g) < 0.2).float(),
            next_obs=torch.randn(size, 4, generator=g),
            next_actions=torch.randint(2, (size,), generator=g),
            env_steps=10 * (i + 1),
        )
        for i in range(count)
    ]


def fit_module(
    net: nn.Module, minibatches, *, k: int, interleaved: bool, callbacks: list[pl.Callback]
) -> QLearningModule:
    module = QLearningModule(
        loss=TDLoss(
            q_network=copy.deepcopy(net),
            estimator=QLearning(),
            loss=nn.MSELoss(),
            gamma=0.99,
            exploration=EpsilonGreedy(
                schedule=LinearSchedule(start=1.0, end=0.1, duration_env_steps=100)
            ),
        ),
        target_update=HardTargetUpdate(every_updates=3),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-2),
        max_grad_norm=0.5,  # small: the clipping is active
        log_every_updates=4,
        total_env_steps=120,
        lr_end_factor=0.5,  # the learning-rate schedule is exercised too
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        logger=False,
        callbacks=callbacks,
    )
    loader = DataLoader(FixedBatches(minibatches, k, interleaved), batch_size=None)
    trainer.fit(module, loader)
    assert trainer.global_step == module.updates == len(minibatches)
    return module


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("interleaved", [False, True])
def test_direct_update_path_equals_lightnings(interleaved: bool) -> None:
    torch.manual_seed(0)
    net = MLPQNetwork(obs_shape=[4], num_actions=2, hidden_sizes=[16, 16])
    minibatches = random_minibatches(12)
    direct = fit_module(net, minibatches, k=4, interleaved=interleaved, callbacks=[])
    counter = StepHookCounter()
    hooked = fit_module(net, minibatches, k=4, interleaved=interleaved, callbacks=[counter])
    assert direct._direct and not hooked._direct
    assert counter.calls == len(minibatches)  # Lightning's path ran every hook
    for a, b in zip(direct.state_dict().values(), hooked.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert direct.learn_time_s > 0


# -- the actor ----------------------------------------------------------------------------------


class CountingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.calls = 0

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(obs)


def constant(eps: float) -> EpsilonGreedy:
    return EpsilonGreedy(schedule=LinearSchedule(start=eps, end=eps, duration_env_steps=1))


def test_actor_skips_the_forward_pass_only_when_every_lane_explores() -> None:
    net = CountingNet()
    actor = Actor(net, constant(1.0), seed=0)
    obs = np.zeros((1, 3), dtype=np.float32)
    actor(obs, 0)  # the first call learns the number of actions
    assert net.calls == 1 and actor.num_actions == 4
    actions = np.concatenate([actor(obs, t) for t in range(4000)])
    assert net.calls == 1  # epsilon = 1: never needed again
    np.testing.assert_allclose(np.bincount(actions, minlength=4) / 4000, 0.25, atol=0.03)
    greedy = Actor(net, constant(0.0), seed=0)
    greedy(obs, 0)
    greedy(obs, 1)
    assert net.calls == 3  # epsilon = 0: always


@pytest.mark.parametrize("eps", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("lanes", [1, 5])
def test_actor_draws_the_same_actions_as_select(eps: float, lanes: int) -> None:
    torch.manual_seed(0)
    net = CountingNet()
    obs = np.random.default_rng(1).standard_normal((200, lanes, 3)).astype(np.float32)
    actor = Actor(net, constant(eps), seed=7)
    actor(obs[0], 0)  # learn the number of actions (one draw, as select makes)
    reference_rng = np.random.default_rng(7)
    constant(eps).select(net(torch.as_tensor(obs[0])), 0, reference_rng)
    for t in range(1, 200):
        with torch.no_grad():
            expected = constant(eps).select(net(torch.as_tensor(obs[t])), t, reference_rng)
        np.testing.assert_array_equal(actor(obs[t], t), expected)


# -- the one-step target and the deferred statistics --------------------------------------------


@pytest.mark.parametrize("gamma", [0.99, 0.98, 0.9, 0.123456789])
def test_one_step_target_is_bitwise_the_general_formula(gamma: float) -> None:
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(1000, 1, generator=g)
    terminated = (torch.rand(1000, generator=g) < 0.3).float()
    q_t = torch.randn(1000, 2, generator=g)
    n_steps = torch.ones(1000, dtype=torch.int64)
    general = (
        n_step_return(rewards, gamma)
        + bootstrap_discount(n_steps, terminated, gamma) * q_t.max(dim=-1).values
    )
    r_t, discount_t = window_return(rewards, n_steps, terminated, gamma)
    fast = QLearning(n_step=1).target(TDInputs(r_t, discount_t, q_t, torch.zeros(1000).long()))
    torch.testing.assert_close(fast, general, rtol=0, atol=0)


@pytest.mark.parametrize("sizes", [[8] * 300, [5, 8, 3]])  # replay; online (sizes differ)
def test_folded_statistics_are_the_means_of_the_per_update_values(sizes: list[int]) -> None:
    stats = TrainStats()
    g = torch.Generator().manual_seed(0)
    expected = torch.zeros(4, dtype=torch.float64)
    q_abs_max = 0.0
    for update, size in enumerate(sizes, start=1):
        q, y = torch.randn(size, generator=g), torch.randn(size, generator=g)
        loss, norm = ((q - y) ** 2).mean(), torch.rand((), generator=g)
        stats.add(loss, q, y, norm, update)  # folds every STATS_FOLD updates
        assert len(stats.pending) == update % STATS_FOLD
        expected += torch.tensor(
            [loss.item(), q.mean().item(), (q - y).abs().mean().item(), norm.item()],
            dtype=torch.float64,
        )
        q_abs_max = max(q_abs_max, q.abs().max().item())
    stats.fold(len(sizes))
    assert stats.count == len(sizes) and stats.pending == []
    assert stats.sums is not None
    torch.testing.assert_close(
        stats.sums.double() / len(sizes), expected / len(sizes), rtol=1e-5, atol=1e-6
    )
    means = stats.take_means(len(sizes))  # the logged means; the sums start again
    torch.testing.assert_close(
        torch.tensor(means[:4], dtype=torch.float64), expected / len(sizes), rtol=1e-5, atol=1e-6
    )
    assert means[4] == q_abs_max  # train/q_max: max |Q(s_tm1, a_tm1)| since the last log
    assert stats.sums is None and stats.count == 0


# -- acting through numpy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_sizes": [120, 84]},
        {"hidden_sizes": [32], "activation": "tanh"},
        {"hidden_sizes": []},  # a linear model of the observation
        {"hidden_sizes": [16, 16], "bias": False},
    ],
)
def test_numpy_mirror_matches_the_torch_forward_pass(kwargs: dict) -> None:
    torch.manual_seed(0)
    net = MLPQNetwork(obs_shape=[2, 3], num_actions=5, **kwargs)  # 2-D obs: flattened
    mirror = NumpyMLP.build(net)
    assert mirror is not None
    obs = np.random.default_rng(0).standard_normal((4096, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.as_tensor(obs)).numpy()
    got = mirror(obs)
    assert got is not None
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    assert mirror(obs.astype(np.int64)) is not None  # integer observations: cast as torch does
    assert mirror(obs.astype(np.float64)) is None  # torch itself would refuse these


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head": "dueling"},
        {"noisy": True},
        {"norm": "layernorm"},
        {"norm": "batchnorm"},
        {"dropout": 0.1},
        {"activation": "elu"},
    ],
)
def test_numpy_mirror_refuses_what_it_does_not_reproduce(kwargs: dict) -> None:
    net = MLPQNetwork(obs_shape=[4], num_actions=2, hidden_sizes=[8], **kwargs)
    assert NumpyMLP.build(net) is None
    hooked = MLPQNetwork(obs_shape=[4], num_actions=2, hidden_sizes=[8])
    hooked.head.register_forward_hook(lambda module, args, out: out * 2)
    assert NumpyMLP.build(hooked) is None
    assert NumpyMLP.build(CountingNet()) is None


def test_numpy_mirror_follows_the_parameters() -> None:
    torch.manual_seed(0)
    net = MLPQNetwork(obs_shape=[4], num_actions=3, hidden_sizes=[8])
    mirror = NumpyMLP.build(net)
    assert mirror is not None
    obs = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)

    def torch_q() -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(obs)).numpy()

    # an in-place optimizer step is seen at once (the views share memory)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.as_tensor(obs)).sum().backward()
    opt.step()
    np.testing.assert_allclose(mirror(obs), torch_q(), rtol=1e-5, atol=1e-6)
    # parameters replaced by new tensors: the views are rebuilt
    other = MLPQNetwork(obs_shape=[4], num_actions=3, hidden_sizes=[8])
    net.load_state_dict(other.state_dict(), assign=True)
    np.testing.assert_allclose(mirror(obs), torch_q(), rtol=1e-5, atol=1e-6)
    # parameters no longer float32: back to torch
    net.double()
    assert mirror(obs) is None
    net.float()
    np.testing.assert_allclose(mirror(obs), torch_q(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.5, 1.0])
def test_numpy_acting_takes_the_same_actions_as_torch_acting(eps: float) -> None:
    torch.manual_seed(0)
    net = MLPQNetwork(obs_shape=[4], num_actions=3, hidden_sizes=[16, 16])
    fast = Actor(net, constant(eps), seed=3)
    slow = Actor(net, constant(eps), seed=3, numpy_acting=False)
    assert fast._numpy is not None and slow._numpy is None
    obs = np.random.default_rng(0).standard_normal((300, 7, 4)).astype(np.float32)
    for t in range(300):
        np.testing.assert_array_equal(fast(obs[t], t), slow(obs[t], t))


# -- the sampler's random draws -----------------------------------------------------------------


def reference_sample(buf: ReplayBuffer, rng: np.random.Generator, batch_size: int, n: int):
    """The sampler as first written (a start row per transition, then a lane, redrawing the
    auto-reset rows), with 2-D indexing: fixed-seed runs must keep reproducing."""
    span = buf.num_sampleable_rows(n)
    oldest = max(0, buf.rows_written - buf.rows)
    starts = np.empty(batch_size, dtype=np.int64)
    lanes = np.empty(batch_size, dtype=np.int64)
    todo = np.arange(batch_size)
    while todo.size:
        starts[todo] = oldest + rng.integers(span, size=todo.size)
        lanes[todo] = rng.integers(buf.num_envs, size=todo.size)
        todo = todo[buf.reset_step[starts[todo] % buf.rows, lanes[todo]]]
    return starts % buf.rows, lanes


@pytest.mark.parametrize(("lanes", "n"), [(1, 1), (16, 1), (4, 3)])
def test_sampler_makes_the_same_draws_as_first_written(lanes: int, n: int) -> None:
    buf = ReplayBuffer(capacity=64 * lanes, num_envs=lanes, obs_shape=(1,))
    sampler = UniformSampler(seed=5)
    rng = np.random.default_rng(1)
    reset = np.zeros(lanes, dtype=bool)
    for t in range(150):  # wraps the ring twice; episodes end ~1 step in 7
        terminated = rng.random(lanes) < 0.15
        buf.add(
            obs=(1000.0 * t + np.arange(lanes, dtype=np.float32))[:, None],  # identifies the slot
            actions=np.zeros(lanes, dtype=np.int64),
            rewards=np.ones(lanes, dtype=np.float32),
            terminated=terminated,
            truncated=np.zeros(lanes, dtype=bool),
            reset_step=reset,
        )
        reset = terminated
    reference_rng = np.random.default_rng(5)
    for _ in range(20):
        rows, lane = reference_sample(buf, reference_rng, 128, n)
        batch = sampler.sample(buf, 128, n)
        np.testing.assert_array_equal(batch.obs[:, 0], buf.obs[rows, lane, 0])
