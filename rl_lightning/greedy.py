"""Greedy evaluation: play whole episodes with argmax_a Q(s, a) on separate envs, and measure
the value estimates along them (V(s_0), overestimation V(s_t) - G_t)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rl_lightning.networks.recurrent import is_recurrent

#: a state of a truncated episode counts in ``eval/overestimation`` only when the missing tail
#: weighs at most this much: gamma^(T - t) <= TRUNCATION_TAIL_WEIGHT
TRUNCATION_TAIL_WEIGHT = 0.01


@dataclass
class GreedyEvaluation:
    """What one greedy evaluation measured.

    Attributes:
        returns: undiscounted returns, ``(episodes,)``.
        v_initial: mean over the episodes of V(s_0) = max_a Q(s_0, a) of their first states.
        overestimation: mean over the counted states of V(s_t) - G_t (``overestimation``), NaN
            when no state counts (or no ``gamma`` was given).
        states_counted: how many states entered ``overestimation``.
    """

    returns: np.ndarray
    v_initial: float
    overestimation: float
    states_counted: int


def returns_to_go(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{k >= t} gamma^(k - t) r_{k+1} along axis 0: ``rewards`` ``(T, ...)`` holds
    r_1 .. r_T (zeros after an episode's end); one backward pass G_t = r_{t+1} + gamma G_{t+1},
    G_T = 0. Returns ``(T, ...)`` float64."""
    out = np.zeros(rewards.shape, dtype=np.float64)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def counted_states(length: int, gamma: float, truncated: bool) -> np.ndarray:
    """Which states s_0 .. s_{T-1} of an episode of ``length`` T count in the overestimation:
    all of a terminated episode (G_t is its exact return); of a truncated one only those whose
    missing tail weighs gamma^(T - t) <= ``TRUNCATION_TAIL_WEIGHT``, i.e. whose G_t misses at
    most 1% of the value scale max|r| / (1 - gamma) (none when gamma = 1). Bootstrapping the
    tail with V(s_T) instead would add gamma^(T - t) V(s_T) -- the very estimate under audit --
    and hide an overestimation in proportion. Returns a bool mask ``(T,)``."""
    t = np.arange(length)
    if not truncated:
        return np.ones(length, dtype=bool)
    if gamma >= 1.0:
        return np.zeros(length, dtype=bool)
    if gamma <= 0.0:
        return np.ones(length, dtype=bool)
    tail = math.log(TRUNCATION_TAIL_WEIGHT) / math.log(gamma)  # T - t >= tail
    return (length - t) >= tail - 1e-9


def overestimation(
    values: np.ndarray,
    rewards: np.ndarray,
    lengths: np.ndarray,
    truncated: np.ndarray,
    gamma: float,
) -> tuple[float, int]:
    """Mean over the counted states (``counted_states``) of V(s_t) - G_t, pooled over the
    episodes, and the number of states counted.

    Args:
        values: V(s_t) = max_a Q(s_t, a), ``(T, episodes)`` (entries past an episode's end
            ignored).
        rewards: r_{t+1}, ``(T, episodes)``, zero past an episode's end.
        lengths: each episode's number of steps, ``(episodes,)``.
        truncated: whether each episode was cut (time limit, evaluation step limit) rather than
            terminated, ``(episodes,)``.
        gamma: the run's discount.
    """
    g = returns_to_go(rewards, gamma)
    total, count = 0.0, 0
    for lane, length in enumerate(lengths.tolist()):
        mask = counted_states(int(length), gamma, bool(truncated[lane]))
        if mask.any():
            diff = values[:length, lane][mask] - g[:length, lane][mask]
            total += float(diff.sum())
            count += int(mask.sum())
    return (total / count if count else math.nan), count


@torch.no_grad()
def play_greedy(
    q_network: nn.Module,
    env: gym.vector.VectorEnv,
    *,
    episodes: int,
    seed: int,
    gamma: float | None = None,
    epsilon: float = 0.0,
    max_steps_per_episode: int = 108_000,
) -> GreedyEvaluation:
    """Play ``episodes`` episodes; their returns, V(s_0) and (with ``gamma``) the
    overestimation. V(s_t) is the max of the Q-values the action was chosen from (no extra
    forward pass); G_t one backward pass over the rewards at the end of each round.

    The env's lanes play in rounds: every round resets all lanes (lane i seeded with
    ``seed + round * num_envs + i``) and keeps each lane's first episode, so short episodes are
    not over-represented. The network is put in eval mode (no dropout) and restored after.
    ``epsilon`` > 0 evaluates an epsilon-greedy policy instead (Atari protocols use 0.001-0.05).
    An episode still running after ``max_steps_per_episode`` counts as truncated.

    A recurrent network (``RecurrentQNetwork``) plays with one hidden state per lane, zero at
    each round's reset (every lane starts an episode there); a lane's later episodes in a round
    are not counted, so its state is never reset inside a round.
    """
    was_training = q_network.training
    q_network.eval()
    device = next(q_network.parameters()).device
    rng = np.random.default_rng(seed)
    lanes = env.num_envs
    recurrent = is_recurrent(q_network)
    returns: list[float] = []
    v0: list[float] = []
    total, count = 0.0, 0
    try:
        round_idx = 0
        while len(returns) < episodes:
            keep = min(lanes, episodes - len(returns))
            obs, _ = env.reset(seed=seed + round_idx * lanes)
            ret = np.zeros(lanes)
            done = np.zeros(lanes, dtype=bool)
            cut = np.ones(lanes, dtype=bool)  # truncated (or still running at the step limit)
            length = np.full(lanes, max_steps_per_episode, dtype=np.int64)
            values: list[np.ndarray] = []
            rewards: list[np.ndarray] = []
            hidden = cast(Any, q_network).initial_state(lanes, device) if recurrent else None
            for step in range(max_steps_per_episode):
                if hidden is None:
                    q = q_network(torch.as_tensor(obs, device=device))
                else:
                    q, hidden = cast(Any, q_network).step(
                        torch.as_tensor(obs, device=device), hidden
                    )
                v, greedy = q.max(dim=1)  # V(s_t) and the greedy actions in one op
                actions = greedy.cpu().numpy()
                if gamma is not None or not values:
                    values.append(v.cpu().numpy())
                if epsilon > 0:
                    explore = rng.random(lanes) < epsilon
                    actions[explore] = rng.integers(q.shape[1], size=int(explore.sum()))
                obs, reward, terminated, truncated, _ = env.step(actions)
                live_reward = np.where(done, 0.0, reward)
                ret += live_reward
                if gamma is not None:
                    rewards.append(live_reward)
                ended = terminated | truncated
                newly = ended & ~done
                if newly.any():
                    length[newly] = step + 1
                    cut[newly] = ~np.asarray(terminated, dtype=bool)[newly]
                    done |= ended
                    if done.all():
                        break
            returns.extend(ret[:keep].tolist())
            v0.extend(values[0][:keep].tolist())
            if gamma is not None:
                r = np.stack(rewards)[:, :keep]
                v = np.stack(values)[:, :keep].astype(np.float64)
                mean, n = overestimation(v, r, length[:keep], cut[:keep], gamma)
                if n:
                    total, count = total + mean * n, count + n
            round_idx += 1
    finally:
        q_network.train(was_training)
    return GreedyEvaluation(
        returns=np.asarray(returns, dtype=np.float64),
        v_initial=float(np.mean(v0)),
        overestimation=total / count if count else math.nan,
        states_counted=count,
    )


def evaluate_greedy(
    q_network: nn.Module,
    env: gym.vector.VectorEnv,
    *,
    episodes: int,
    seed: int,
    epsilon: float = 0.0,
    max_steps_per_episode: int = 108_000,
) -> np.ndarray:
    """The undiscounted returns of ``episodes`` greedy episodes, shape ``(episodes,)``
    (``play_greedy`` without the overestimation)."""
    return play_greedy(
        q_network,
        env,
        episodes=episodes,
        seed=seed,
        epsilon=epsilon,
        max_steps_per_episode=max_steps_per_episode,
    ).returns
