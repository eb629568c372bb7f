"""Greedy evaluation: play whole episodes with argmax_a Q(s, a) on separate envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn


@torch.no_grad()
def evaluate_greedy(
    q_network: nn.Module,
    env: gym.vector.VectorEnv,
    *,
    episodes: int,
    seed: int,
    epsilon: float = 0.0,
    max_steps_per_episode: int = 108_000,
) -> np.ndarray:
    """Returns the undiscounted returns of ``episodes`` episodes, shape ``(episodes,)``.

    The env's lanes play in rounds: every round resets all lanes (lane i seeded with
    ``seed + round * num_envs + i``) and keeps each lane's first episode, so short episodes are
    not over-represented. The network is put in eval mode (no dropout) and restored after.
    ``epsilon`` > 0 evaluates an epsilon-greedy policy instead (Atari protocols use 0.001-0.05).
    """
    was_training = q_network.training
    q_network.eval()
    device = next(q_network.parameters()).device
    rng = np.random.default_rng(seed)
    lanes = env.num_envs
    returns: list[float] = []
    try:
        round_idx = 0
        while len(returns) < episodes:
            obs, _ = env.reset(seed=seed + round_idx * lanes)
            ret = np.zeros(lanes)
            done = np.zeros(lanes, dtype=bool)
            for _ in range(max_steps_per_episode):
                q = q_network(torch.as_tensor(obs, device=device))
                actions = q.argmax(dim=1).cpu().numpy()
                if epsilon > 0:
                    explore = rng.random(lanes) < epsilon
                    actions[explore] = rng.integers(q.shape[1], size=int(explore.sum()))
                obs, reward, terminated, truncated, _ = env.step(actions)
                ret += np.where(done, 0.0, reward)
                done |= terminated | truncated
                if done.all():
                    break
            returns.extend(ret[: episodes - len(returns)].tolist())
            round_idx += 1
    finally:
        q_network.train(was_training)
    return np.asarray(returns, dtype=np.float64)
