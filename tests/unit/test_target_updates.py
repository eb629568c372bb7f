"""Target networks: untouched by the optimizer, hard copies on schedule, exact Polyak values."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators.double_q import DoubleQLearning
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule
from rl_lightning.networks import MLPQNetwork
from rl_lightning.target_updates import (
    HardTargetUpdate,
    NoTargetUpdate,
    PolyakTargetUpdate,
    copy_,
)


def make_module(
    target_update, *, estimator: str = "q_learning", optim=torch.optim.Adam, lr=0.01
) -> QLearningModule:
    torch.manual_seed(0)
    estimators = {"q_learning": QLearning, "double_q": DoubleQLearning}
    loss = TDLoss(
        q_network=MLPQNetwork(obs_shape=[4], num_actions=3, hidden_sizes=[8]),
        estimator=estimators[estimator](n_step=1),
        loss=nn.MSELoss(),
        gamma=0.9,
        use_target_network=target_update.uses_target_network,
        exploration=EpsilonGreedy(
            schedule=LinearSchedule(start=0.3, end=0.3, duration_env_steps=1)
        ),
    )
    return QLearningModule(
        loss=loss, target_update=target_update, optimizer=functools.partial(optim, lr=lr)
    )


def random_batch(seed: int, size: int = 16) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    return TransitionBatch(
        obs=torch.randn(size, 4, generator=g),
        actions=torch.randint(3, (size,), generator=g),
        rewards=torch.randn(size, 1, generator=g),
        n_steps=torch.ones(size, dtype=torch.int64),
        terminated=(torch.rand(size, generator=g) < 0.2).float(),
        next_obs=torch.randn(size, 4, generator=g),
        next_actions=torch.randint(3, (size,), generator=g),
        env_steps=0,
    )


def params(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_optimizer_never_changes_the_target_network() -> None:
    module = make_module(HardTargetUpdate(every_updates=3))
    target = module.target_network
    assert target is not None
    assert all(not p.requires_grad for p in target.parameters())
    opt = module.configure_optimizers()
    opt_ids = {id(p) for group in opt.param_groups for p in group["params"]}
    assert opt_ids == {id(p) for p in module.q_network.parameters()}
    assert not opt_ids & {id(p) for p in target.parameters()}

    snapshot = params(target)
    assert same(snapshot, params(module.q_network))  # the target starts as a copy
    for step in range(1, 8):
        online_before = params(module.q_network)
        loss, _, _ = module.compute_loss(random_batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None for p in target.parameters())  # no gradient reaches it
        opt.step()
        assert not same(online_before, params(module.q_network)), (
            "the optimizer did not move the online net"
        )
        assert same(snapshot, params(target)), f"the optimizer changed the target at step {step}"
        module.updates += 1
        module.target_update(module.q_network, target, module.updates)
        if step % 3 == 0:  # hard copy at updates 3 and 6
            assert same(params(target), params(module.q_network))
            snapshot = params(target)
        else:
            assert same(snapshot, params(target))
            assert not same(snapshot, params(module.q_network))


def test_td_target_bootstraps_from_the_target_network() -> None:
    module = make_module(HardTargetUpdate(every_updates=1000))
    with torch.no_grad():  # make online and target differ in a known way
        for p in module.q_network.parameters():
            p.add_(1.0)
    batch = random_batch(0)
    expected_q = module.target_network(batch.next_obs)
    # y = r + 0.9 * (1 - d) * max_a Q_target(s', a)
    expected = batch.rewards[:, 0] + 0.9 * (1 - batch.terminated) * expected_q.max(dim=1).values
    torch.testing.assert_close(module.loss.td_target(batch), expected)
    online = (
        batch.rewards[:, 0]
        + 0.9 * (1 - batch.terminated) * module.q_network(batch.next_obs).max(1).values
    )
    assert not torch.allclose(module.loss.td_target(batch), online)


def test_double_q_selects_online_and_evaluates_target() -> None:
    module = make_module(HardTargetUpdate(every_updates=1000), estimator="double_q")
    with torch.no_grad():
        for p in module.q_network.parameters():
            p.mul_(-1.0)
    batch = random_batch(1)
    a_star = module.q_network(batch.next_obs).argmax(dim=1)
    value = module.target_network(batch.next_obs).gather(1, a_star[:, None])[:, 0]
    expected = batch.rewards[:, 0] + 0.9 * (1 - batch.terminated) * value
    torch.testing.assert_close(module.loss.td_target(batch), expected.detach())


def test_no_target_network_bootstraps_from_the_online_network_without_gradient() -> None:
    module = make_module(NoTargetUpdate())
    assert module.target_network is None
    batch = random_batch(2)
    y = module.loss.td_target(batch)
    assert not y.requires_grad
    expected = (
        batch.rewards[:, 0]
        + 0.9 * (1 - batch.terminated) * module.q_network(batch.next_obs).max(1).values
    )
    torch.testing.assert_close(y, expected.detach())


def linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def test_hard_update_copies_only_at_multiples() -> None:
    update = HardTargetUpdate(every_updates=3)
    online, target = linear(0.0), linear(-1.0)
    seen = []
    for updates in range(1, 10):
        with torch.no_grad():
            online.weight.fill_(float(updates))  # online weights = the update count
            online.bias.fill_(float(updates))
        update(online, target, updates)
        seen.append(target.weight[0, 0].item())
    # copies at 3, 6, 9 only; the target holds the last copy in between
    assert seen == [-1.0, -1.0, 3.0, 3.0, 3.0, 6.0, 6.0, 6.0, 9.0]
    assert torch.equal(target.bias, online.bias)


def test_polyak_exact_values() -> None:
    update = PolyakTargetUpdate(coefficient=0.1)
    online, target = linear(1.0), linear(0.0)
    update(online, target, 1)
    # 0.9 * 0 + 0.1 * 1 = 0.1
    torch.testing.assert_close(target.weight, torch.full((2, 2), 0.1), rtol=0, atol=1e-7)
    update(online, target, 2)
    # 0.9 * 0.1 + 0.1 * 1 = 0.19
    torch.testing.assert_close(target.weight, torch.full((2, 2), 0.19), rtol=0, atol=1e-7)
    torch.testing.assert_close(target.bias, torch.full((2,), 0.19), rtol=0, atol=1e-7)
    update(online, target, 3)
    # 0.9 * 0.19 + 0.1 = 0.271
    torch.testing.assert_close(target.weight, torch.full((2, 2), 0.271), rtol=0, atol=1e-7)
    assert torch.equal(online.weight, torch.ones(2, 2))  # the online net is only read


def test_polyak_every_updates() -> None:
    update = PolyakTargetUpdate(coefficient=0.5, every_updates=2)
    online, target = linear(1.0), linear(0.0)
    values = []
    for updates in range(1, 6):
        update(online, target, updates)
        values.append(target.weight[0, 0].item())
    # averages at 2 (0.5) and 4 (0.75) only
    assert values == [0.0, 0.5, 0.5, 0.75, 0.75]


def test_polyak_with_coefficient_one_is_a_hard_copy() -> None:
    torch.manual_seed(0)

    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))

    online, polyak_target, hard_target = net(), net(), net()
    online.train()(torch.randn(32, 5))  # non-trivial batchnorm running statistics
    PolyakTargetUpdate(coefficient=1.0)(online, polyak_target, 1)
    HardTargetUpdate(every_updates=1)(online, hard_target, 1)
    for a, b, c in zip(
        polyak_target.state_dict().values(),
        hard_target.state_dict().values(),
        online.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, c)
        assert torch.equal(b, c)


def test_copy_copies_parameters_and_buffers() -> None:
    online, target = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    online.train()(torch.randn(8, 3))
    copy_(target, online)
    for a, b in zip(target.state_dict().values(), online.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_validation() -> None:
    with pytest.raises(ValueError, match="every_updates"):
        HardTargetUpdate(every_updates=0)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="coefficient"):
            PolyakTargetUpdate(coefficient=bad)
    with pytest.raises(ValueError, match="every_updates"):
        PolyakTargetUpdate(coefficient=0.5, every_updates=0)
    assert not NoTargetUpdate.uses_target_network
    online, target = linear(1.0), linear(-1.0)
    for updates in (1, 2, 3):  # a target network, if one is passed, is never touched
        NoTargetUpdate()(online, target, updates)
    assert torch.equal(target.weight, torch.full((2, 2), -1.0))
    assert torch.equal(target.bias, torch.full((2,), -1.0))
    # hard and polyak tolerate a missing target network, and only read the online one
    HardTargetUpdate(every_updates=1)(online, None, 1)
    PolyakTargetUpdate(coefficient=0.5)(online, None, 1)
    assert torch.equal(online.weight, torch.ones(2, 2))
    assert torch.equal(online.bias, torch.ones(2))


def test_target_network_stays_in_eval_mode() -> None:
    module = make_module(PolyakTargetUpdate(coefficient=0.5))
    module.train()
    assert module.q_network.training
    assert not module.target_network.training
    assert np.isclose(module.loss.gamma, 0.9)
