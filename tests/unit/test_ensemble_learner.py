"""EnsembleLearner: member k's vmapped updates are the single run's updates of seed k."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from rl_lightning import builders
from rl_lightning.data.buffer import TransitionBatch
from rl_lightning.ensemble import EnsembleLearner
from rl_lightning.module import QLearningModule

#: float32 rounding: the vmapped matmuls sum in another order than the single ones
ATOL = 1e-5


def member(cfg, seed: int) -> QLearningModule:
    """The module of a single run with ``seed``, built in the single run's order."""
    pl.seed_everything(seed, verbose=False)
    env = builders.make_env(cfg)
    exploration = instantiate(cfg.exploration)
    q_network = builders.build_q_network(cfg, env, exploration)
    env.close()
    return builders.build_module(cfg, q_network, exploration)


def random_batch(generator: torch.Generator, size: int = 64) -> TransitionBatch:
    obs = torch.randn(size, 4, generator=generator)
    return TransitionBatch(
        obs=obs,
        actions=torch.randint(0, 2, (size,), generator=generator),
        rewards=torch.ones(size, 1),
        n_steps=torch.ones(size, dtype=torch.int64),
        terminated=(torch.rand(size, generator=generator) < 0.05).float(),
        next_obs=obs + 0.05 * torch.randn(size, 4, generator=generator),
        next_actions=torch.randint(0, 2, (size,), generator=generator),
        env_steps=1000,
    )


def single_update(module: QLearningModule, optimizer, batch: TransitionBatch) -> float:
    loss, _, _ = module.loss(batch)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.q_network.parameters(), module.max_grad_norm)
    optimizer.step()
    module.updates += 1
    module.target_update(module.q_network, module.target_network, module.updates)
    return float(loss.detach())


@pytest.mark.parametrize(
    ("overrides", "design"),
    [
        # the default run (Double Q, Huber, Adam, clipping at 10) with a short target period,
        # so that 200 updates see two hard copies
        (["target=hard"], "batched"),
        (["target=hard"], "vmap"),
        (["target=polyak"], "batched"),
        # the other parts with a batched twin
        (
            [
                "arch/head=dueling",
                "arch.encoder.norm=layernorm",
                "arch.encoder.activation=tanh",
                "estimator=expected_sarsa",
                "loss=mse",
            ],
            "batched",
        ),
        # a network without one (a distributional head: its own loss) goes through vmap
        (["arch/head=distributional", "arch.head.v_min=-10", "arch.head.v_max=10"], "vmap"),
    ],
    ids=["default", "default-vmap", "polyak", "dueling-layernorm", "c51"],
)
def test_members_follow_their_single_runs_for_200_updates(
    compose_config, overrides: list[str], design: str
) -> None:
    cfg = compose_config([*overrides, "target.every_updates=100"])
    seeds = [0, 1, 2]
    singles = [member(cfg, s) for s in seeds]
    optimizers = [instantiate(cfg.optim)(m.q_network.parameters()) for m in singles]
    learner = EnsembleLearner([copy.deepcopy(m) for m in singles], design=design)
    assert learner.design == design
    generator = torch.Generator().manual_seed(0)
    worst_loss = 0.0
    for _ in range(200):
        batches = [random_batch(generator) for _ in seeds]
        losses, q_sa, y, norm = learner.update(batches)
        assert losses.shape == (3,) and q_sa.shape == y.shape == (3, 64) and norm.shape == (3,)
        for k, module in enumerate(singles):
            worst_loss = max(
                worst_loss, abs(single_update(module, optimizers[k], batches[k]) - float(losses[k]))
            )
    assert worst_loss < ATOL
    for k, module in enumerate(singles):
        for (name, want), got in zip(
            module.q_network.named_parameters(),
            learner.members[k].q_network.parameters(),
            strict=True,
        ):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=name)
        for want, got in zip(
            module.target_network.parameters(),  # type: ignore[union-attr]
            learner.members[k].target_network.parameters(),  # type: ignore[union-attr]
            strict=True,
        ):
            torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # the members' own networks are views of the stacks: acting sees every update
    assert learner.members[1].q_network(torch.zeros(1, 4)).shape == (1, 2)
    first = next(learner.members[2].q_network.parameters())
    assert first.data_ptr() == learner.params[0][2].data_ptr()


def test_a_frozen_member_keeps_its_weights_while_the_others_learn(compose_config) -> None:
    cfg = compose_config([])
    learner = EnsembleLearner([member(cfg, s) for s in (0, 1)])
    before = [p.detach().clone() for p in learner.params]
    learner.frozen[1] = True
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        learner.update([random_batch(generator), random_batch(generator)])
    for old, new in zip(before, learner.params, strict=True):
        assert torch.equal(old[1], new[1])
        assert not torch.equal(old[0], new[0])


def test_the_batched_design_is_chosen_where_it_exists(compose_config) -> None:
    cfg = compose_config(["arch/head=distributional", "arch.head.v_min=-10", "arch.head.v_max=10"])
    members = [member(cfg, 0), member(cfg, 1)]
    assert EnsembleLearner(copy.deepcopy(members)).design == "vmap"
    with pytest.raises(ValueError, match="no hand-batched twin"):
        EnsembleLearner(members, design="batched")
    assert EnsembleLearner([member(compose_config([]), s) for s in (0, 1)]).design == "batched"


def test_networks_with_batchnorm_or_noise_are_refused(compose_config) -> None:
    for overrides, words in (
        (["arch.encoder.norm=batchnorm"], "buffers"),
        (["exploration=noisy"], "random stream"),
    ):
        cfg = compose_config(overrides)
        with pytest.raises(ValueError, match=words):
            EnsembleLearner([member(cfg, 0), member(cfg, 1)])
