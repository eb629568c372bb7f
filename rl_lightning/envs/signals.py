"""What the learner sees vs what is reported: reward clipping and life-loss terminals.

The DQN protocol on Atari (Mnih et al., 2015) learns from rewards clipped to their sign and
treats the loss of a life as the end of an episode, but reports the *game's* score over whole
games. Here the env itself stays honest -- its ``step`` returns the game's reward and ends an
episode only when the game is over -- and ``LearningSignals`` adds what the learner should see
to ``info``:

* ``info["learn_reward"]``: ``sign(r)`` with ``clip_rewards`` (else ``r``);
* ``info["learn_terminated"]``: ``terminated`` or, with ``life_loss_terminal``, a life lost at
  this step (``info["lives"]`` fell; never at an auto-reset step, where a new game restores them).

The collector stores those in the replay buffer (``rl_lightning.data.collector``) and counts
episode returns, ``rollout/episode_return`` and evaluations with the game's own reward and end:
a life-loss terminal stops n-step windows and bootstrapping, while the frame stack and the game
go on (no reset happens: it is ale-py's ``life_loss_info``, not ``episodic_life``). Any env can
use ``clip_rewards``; ``life_loss_terminal`` needs an env that reports ``info["lives"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

#: the ``info`` keys the collector reads (absent: the env's own reward and terminated)
LEARN_REWARD = "learn_reward"
LEARN_TERMINATED = "learn_terminated"


class LearningSignals(gym.vector.VectorWrapper):
    """Adds the learner's reward and terminal flag to ``info`` (see the module docstring);
    observations, rewards and flags pass through unchanged.

    Args:
        env: the vector env (NEXT_STEP auto-reset).
        clip_rewards: learn from ``sign(r)``.
        life_loss_terminal: a life lost ends the learner's episode (needs ``info["lives"]``).

    Attributes:
        lives: ``(num_envs,)`` each lane's lives after the last step (None before ``reset``).
        autoreset: ``(num_envs,)`` lanes whose next step is gymnasium's auto-reset step.
    """

    def __init__(
        self, env: gym.vector.VectorEnv, *, clip_rewards: bool, life_loss_terminal: bool
    ) -> None:
        super().__init__(env)
        self.clip_rewards = clip_rewards
        self.life_loss_terminal = life_loss_terminal
        self.lives: np.ndarray | None = None
        self.autoreset = np.zeros(self.num_envs, dtype=bool)

    def _lives(self, info: dict[str, Any]) -> np.ndarray:
        if "lives" not in info:
            raise ValueError(
                "env.life_loss_terminal=true needs an env that reports info['lives'] (ALE games); "
                "this one does not"
            )
        return np.asarray(info["lives"], dtype=np.int64)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        if self.life_loss_terminal:
            self.lives = self._lives(info)
        self.autoreset = np.zeros(self.num_envs, dtype=bool)
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        info = dict(info)
        learn_rewards = np.asarray(rewards, dtype=np.float32)
        info[LEARN_REWARD] = np.sign(learn_rewards) if self.clip_rewards else learn_rewards
        learn_terminated = np.asarray(terminated, dtype=bool)
        if self.life_loss_terminal:
            lives = self._lives(info)
            if self.lives is not None:
                lost = (lives < self.lives) & ~self.autoreset
                learn_terminated = learn_terminated | lost
            self.lives = lives
        info[LEARN_TERMINATED] = learn_terminated
        self.autoreset = np.logical_or(terminated, truncated)
        return obs, rewards, terminated, truncated, info


def wrap_learning_signals(
    env: gym.vector.VectorEnv, *, clip_rewards: bool, life_loss_terminal: bool
) -> gym.vector.VectorEnv:
    """``env`` with ``LearningSignals`` when either option is on, else ``env`` itself."""
    if clip_rewards or life_loss_terminal:
        return LearningSignals(
            env, clip_rewards=clip_rewards, life_loss_terminal=life_loss_terminal
        )
    return env
