"""TDLoss: what it computes for each estimator, in which order, and the module around it."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.estimators import Estimator, TDInputs
from rl_lightning.estimators.double_q import DoubleQLearning
from rl_lightning.estimators.expected_sarsa import ExpectedSarsa
from rl_lightning.estimators.q_learning import QLearning
from rl_lightning.estimators.sarsa import Sarsa
from rl_lightning.exploration import EpsilonGreedy, LinearSchedule
from rl_lightning.losses import TDLoss
from rl_lightning.module import QLearningModule
from rl_lightning.networks import MLPQNetwork
from rl_lightning.target_updates import HardTargetUpdate, NoTargetUpdate

B, OBS, A = 6, 4, 3


class Recording(nn.Module):
    """A small Q-network that appends (its name, which input) to a shared log per pass."""

    def __init__(self, log: list[tuple[str, str]], name: str = "online") -> None:
        super().__init__()
        self.linear = nn.Linear(OBS, A)
        self.log, self.name = log, name

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        self.log.append((self.name, "s_t" if bool((obs >= 10).all()) else "s_tm1"))
        return self.linear(obs)

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        self.log.append((self.name, "q(s_tm1, a_tm1)"))
        return self.linear(obs).gather(1, actions.long().unsqueeze(1)).squeeze(1)

    def __deepcopy__(self, memo):  # the target copy logs under its own name
        copy = Recording(self.log, "target")
        copy.load_state_dict(self.state_dict())
        return copy


class Capture(Estimator):
    """Records the inputs it is given; reads the target network at s_tm1 (as Munchausen does)."""

    needs_q_tm1_target = True
    seen: list[TDInputs] = []

    def target(self, x: TDInputs) -> torch.Tensor:
        Capture.seen.append(x)
        return x.r_t


def batch(weights: torch.Tensor | None = None) -> TransitionBatch:
    g = torch.Generator().manual_seed(0)
    return TransitionBatch(
        obs=torch.rand(B, OBS, generator=g),  # s_tm1 in [0, 1)
        actions=torch.randint(A, (B,), generator=g),
        rewards=torch.randn(B, 1, generator=g),
        n_steps=torch.ones(B, dtype=torch.int64),
        terminated=torch.zeros(B),
        next_obs=10 + torch.rand(B, OBS, generator=g),  # s_t in [10, 11): the log tells them apart
        next_actions=torch.randint(A, (B,), generator=g),
        env_steps=0,
        weights=weights,
    )


def exploration() -> EpsilonGreedy:
    return EpsilonGreedy(schedule=LinearSchedule(start=0.3, end=0.3, duration_env_steps=1))


def td_loss(estimator: Estimator, *, target: bool, log: list | None = None, **kwargs) -> TDLoss:
    return TDLoss(
        q_network=Recording([] if log is None else log),
        estimator=estimator,
        loss=kwargs.pop("loss", nn.MSELoss()),
        gamma=0.9,
        use_target_network=target,
        exploration=kwargs.pop("exploration", exploration()),
    )


@pytest.mark.parametrize(
    ("estimator", "target", "passes"),
    [
        (QLearning(), True, [("target", "s_t")]),
        (Sarsa(), True, [("target", "s_t")]),
        # the online pass at s_t: Double Q's selector, Expected SARSA's behaviour policy
        (DoubleQLearning(), True, [("target", "s_t"), ("online", "s_t")]),
        (ExpectedSarsa(), True, [("target", "s_t"), ("online", "s_t")]),
        # without a target network the bootstrap pass is the online one, made once
        (DoubleQLearning(), False, [("online", "s_t")]),
        (ExpectedSarsa(), False, [("online", "s_t")]),
        (Capture(), True, [("target", "s_t"), ("target", "s_tm1")]),
        (Capture(), False, [("online", "s_t"), ("online", "s_tm1")]),
    ],
)
def test_the_forward_passes_in_order(estimator: Estimator, target: bool, passes: list) -> None:
    # noisy layers and dropout draw random numbers per pass: the order is part of the result
    log: list[tuple[str, str]] = []
    td_loss(estimator, target=target, log=log)(batch())
    assert log == [*passes, ("online", "q(s_tm1, a_tm1)")]


def test_an_estimator_gets_exactly_what_it_declared() -> None:
    Capture.seen.clear()
    loss = td_loss(Capture(), target=True)
    b = batch()
    loss(b)
    (x,) = Capture.seen
    assert x.a_t is None and x.probs_t is None and x.q_t_online is None  # not declared
    assert loss.target_network is not None
    torch.testing.assert_close(x.q_tm1_target, loss.target_network(b.obs))
    torch.testing.assert_close(x.q_t, loss.target_network(b.next_obs))
    assert torch.equal(x.a_tm1, b.actions)
    # one-step window: r_t = r, discount_t = gamma (not terminated)
    assert torch.equal(x.r_t, b.rewards[:, 0])
    torch.testing.assert_close(x.discount_t, torch.full((B,), 0.9))


def test_expected_sarsa_reads_the_behaviour_policy_of_the_online_values() -> None:
    loss = td_loss(ExpectedSarsa(), target=True)
    b = batch()
    with torch.no_grad():
        q_online = loss.q_network(b.next_obs)
        q_target = loss.target_network(b.next_obs)  # type: ignore[misc]
    # epsilon-greedy 0.3 over 3 actions: 0.1 each, + 0.7 on the online argmax
    probs = torch.full((B, A), 0.1) + 0.7 * nn.functional.one_hot(q_online.argmax(1), A)
    expected = b.rewards[:, 0] + 0.9 * (probs * q_target).sum(1)
    torch.testing.assert_close(loss.td_target(b), expected)


def test_the_target_carries_no_gradient_and_q_sa_does() -> None:
    value, q_sa, target = td_loss(QLearning(), target=False)(batch())
    assert not target.requires_grad and q_sa.requires_grad and value.requires_grad


def test_importance_weights_multiply_each_sample_loss() -> None:
    loss = td_loss(QLearning(), target=True)
    plain, q_sa, target = loss(batch())
    ones, _, _ = loss(batch(weights=torch.ones(B)))
    assert torch.equal(ones, plain)  # all-one weights: the unweighted mean, bit for bit
    w = torch.arange(B, dtype=torch.float32)
    weighted, _, _ = loss(batch(weights=w))
    torch.testing.assert_close(weighted, (w * (q_sa - target) ** 2).mean())
    # by hand: squared errors 1 and 4 with weights 0.5 and 2 -> (0.5 + 8) / 2 = 4.25
    per_sample = td_loss(QLearning(), target=True)._per_sample
    errors = per_sample(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    assert (errors * torch.tensor([0.5, 2.0])).mean().item() == 4.25


def test_construction_checks() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        td_loss(ExpectedSarsa(), target=True, exploration=None)
    with pytest.raises(ValueError, match="disagree"):
        QLearningModule(
            loss=td_loss(QLearning(), target=False),
            target_update=HardTargetUpdate(every_updates=1),
            optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        )


def make_module(target_update, **kwargs) -> QLearningModule:
    net = MLPQNetwork(obs_shape=[OBS], num_actions=A, hidden_sizes=[8])
    loss = TDLoss(
        q_network=net,
        estimator=DoubleQLearning(),
        loss=nn.HuberLoss(),
        gamma=0.9,
        use_target_network=target_update.uses_target_network,
        exploration=exploration(),
    )
    return QLearningModule(
        loss=loss,
        target_update=target_update,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        **kwargs,
    )


def test_checkpoint_keys_are_the_networks_names() -> None:
    # rl-eval and rl-embed load ``q_network.*``
    module = make_module(HardTargetUpdate(every_updates=1))
    names = set(dict(module.q_network.named_parameters()))
    assert set(module.state_dict()) == {
        f"{net}.{name}" for net in ("q_network", "target_network") for name in names
    }
    assert set(make_module(NoTargetUpdate()).state_dict()) == {f"q_network.{n}" for n in names}
    assert module.q_network is module.loss.q_network
    assert module.target_network is module.loss.target_network
    assert module.estimator is module.loss.estimator
    assert module.exploration is module.loss.exploration


def test_the_td_errors_hook_gets_every_update() -> None:
    calls: list[tuple[TransitionBatch, torch.Tensor]] = []
    module = make_module(
        HardTargetUpdate(every_updates=2), on_td_errors=lambda b, td: calls.append((b, td))
    )
    minibatches = [batch()._replace(env_steps=10 * (i + 1)) for i in range(3)]
    _, q_sa, target = module.loss(minibatches[0])  # the first update's errors, before its step
    stacked = [b.map(lambda x: x.unsqueeze(0)) for b in minibatches]  # K = 1 per training step
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        logger=False,
    )
    trainer.fit(module, DataLoader(stacked, batch_size=None))
    assert module.updates == len(calls) == 3
    for (b, td), original in zip(calls, minibatches, strict=True):
        assert torch.equal(b.obs, original.obs) and not td.requires_grad and td.shape == (B,)
    torch.testing.assert_close(calls[0][1], target - q_sa.detach())
