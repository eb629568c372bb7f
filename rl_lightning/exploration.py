"""Exploration: schedules over environment steps and the policies that use them.

An exploration object turns Q-values into behaviour actions while acting (``select``) and
exposes its exact action probabilities (``probs``) so that Expected SARSA can average the
bootstrap over the policy that actually collected the data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rl_lightning.networks.noisy import NoisyLinear
from rl_lightning.networks.numpy_forward import NumpyMLP
from rl_lightning.networks.recurrent import is_recurrent
from rl_lightning.networks.tabular import TabularQNetwork


class LinearSchedule:
    """``start`` -> ``end`` linearly over ``duration_env_steps``, then constant at ``end``.

    value(t) = start + (end - start) * min(1, max(0, t - begin_env_steps) / duration_env_steps)
    """

    def __init__(
        self, *, start: float, end: float, duration_env_steps: int, begin_env_steps: int = 0
    ) -> None:
        if duration_env_steps < 0:
            raise ValueError(f"duration_env_steps must be >= 0, got {duration_env_steps}")
        self.start, self.end = float(start), float(end)
        self.duration_env_steps = int(duration_env_steps)
        self.begin_env_steps = int(begin_env_steps)

    def __call__(self, env_step: int) -> float:
        if self.duration_env_steps == 0:
            return self.end if env_step >= self.begin_env_steps else self.start
        frac = min(1.0, max(0.0, (env_step - self.begin_env_steps) / self.duration_env_steps))
        return self.start + (self.end - self.start) * frac


class ExponentialSchedule:
    """value(t) = end + (start - end) * 0.5 ** (t / half_life_env_steps)."""

    def __init__(self, *, start: float, end: float, half_life_env_steps: float) -> None:
        if half_life_env_steps <= 0:
            raise ValueError(f"half_life_env_steps must be > 0, got {half_life_env_steps}")
        self.start, self.end = float(start), float(end)
        self.half_life_env_steps = float(half_life_env_steps)

    def __call__(self, env_step: int) -> float:
        return self.end + (self.start - self.end) * 0.5 ** (env_step / self.half_life_env_steps)


Schedule = Callable[[int], float]


class Exploration:
    """Base: greedy acting in eval mode; subclasses change what they need.

    Attributes:
        acting_train_mode: put the Q-network in train mode while acting (dropout / noise on).
        network_overrides: keyword arguments the Q-network needs for this exploration
            (e.g. noisy layers), merged into the ``arch`` config at build time.
    """

    acting_train_mode = False
    network_overrides: dict[str, Any] = {}

    def prepare(self, q_network: torch.nn.Module, env_step: int) -> None:
        """Called before each acting forward pass."""

    def metrics(self, env_step: int) -> dict[str, float]:
        """Values to log under ``rollout/``."""
        return {}

    def select(self, q: torch.Tensor, env_step: int, rng: np.random.Generator) -> np.ndarray:
        """q: (N, A) Q-values -> (N,) int64 actions."""
        return q.argmax(dim=1).cpu().numpy()

    def act(
        self,
        q_fn: Callable[[], torch.Tensor],
        greedy_fn: Callable[[], np.ndarray],
        num_envs: int,
        num_actions: int | None,
        env_step: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Actions for ``num_envs`` lanes, computing only what the choice needs: ``q_fn()``
        runs the Q-network (N, A); ``greedy_fn()`` gives argmax_a Q(s, a) (N,) int64, possibly
        by a cheaper path. ``num_actions`` is None until the first forward pass.

        The default needs the Q-values (``select``); epsilon-greedy needs only the greedy
        actions, and none when every lane explores.
        """
        return self.select(q_fn(), env_step, rng)

    def probs(self, q: torch.Tensor, env_step: int) -> torch.Tensor:
        """q: (B, A) -> (B, A) action probabilities of this policy given these Q-values."""
        return torch.nn.functional.one_hot(q.argmax(dim=1), q.shape[1]).to(q.dtype)


class EpsilonGreedy(Exploration):
    """With probability epsilon(t) a uniformly random action, otherwise argmax_a Q(s, a).

    pi(a|s) = epsilon / |A| + (1 - epsilon) * [a == argmax_a' Q(s, a')]
    """

    def __init__(self, *, schedule: Schedule) -> None:
        self.schedule = schedule

    def epsilon(self, env_step: int) -> float:
        return self.schedule(env_step)

    def metrics(self, env_step: int) -> dict[str, float]:
        return {"rollout/epsilon": self.epsilon(env_step)}

    def select(self, q: torch.Tensor, env_step: int, rng: np.random.Generator) -> np.ndarray:
        actions = q.argmax(dim=1).cpu().numpy()
        eps = self.epsilon(env_step)
        if eps > 0.0:
            explore = np.asarray(rng.random(actions.shape[0]) < eps)
            if explore.any():
                actions[explore] = rng.integers(q.shape[1], size=int(explore.sum()))
        return actions

    def act(
        self,
        q_fn: Callable[[], torch.Tensor],
        greedy_fn: Callable[[], np.ndarray],
        num_envs: int,
        num_actions: int | None,
        env_step: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``select`` with the same random draws, from the greedy actions alone, and no
        forward pass when every lane explores (most steps early on with one env: CleanRL and
        SB3 skip it likewise)."""
        eps = self.epsilon(env_step)
        if num_actions is None:
            return self.select(q_fn(), env_step, rng)
        if eps <= 0.0:
            return greedy_fn()
        explore = rng.random(num_envs) < eps
        n_explore = int(np.count_nonzero(explore))
        if n_explore == num_envs:
            return rng.integers(num_actions, size=num_envs)
        actions = greedy_fn()
        if n_explore:
            actions[explore] = rng.integers(num_actions, size=n_explore)
        return actions

    def probs(self, q: torch.Tensor, env_step: int) -> torch.Tensor:
        eps = self.epsilon(env_step)
        return (1.0 - eps) * super().probs(q, env_step) + eps / q.shape[1]


class Boltzmann(Exploration):
    """Softmax exploration: pi(a|s) = exp(Q(s, a) / T) / sum_a' exp(Q(s, a') / T).

    T(t) follows the schedule (in the units of Q); T -> 0 approaches greedy.
    """

    def __init__(self, *, schedule: Schedule) -> None:
        self.schedule = schedule

    def temperature(self, env_step: int) -> float:
        return max(self.schedule(env_step), 1e-8)

    def metrics(self, env_step: int) -> dict[str, float]:
        return {"rollout/temperature": self.temperature(env_step)}

    def probs(self, q: torch.Tensor, env_step: int) -> torch.Tensor:
        return torch.softmax(q / self.temperature(env_step), dim=-1)

    def select(self, q: torch.Tensor, env_step: int, rng: np.random.Generator) -> np.ndarray:
        p = self.probs(q.double(), env_step).cpu().numpy()
        cumulative = p.cumsum(axis=1)
        u = rng.random((p.shape[0], 1)) * cumulative[:, -1:]
        return np.minimum((u > cumulative).sum(axis=1), p.shape[1] - 1).astype(np.int64)


class DropoutExploration(Exploration):
    """Dropout kept on while acting: the greedy action of a randomly thinned network.

    The dropout probability p(t) follows the schedule and is set on every dropout layer before
    acting, so it also applies to the learning updates; evaluation is deterministic (eval mode).
    Expected SARSA treats the policy as greedy (the thinned network's probabilities have no
    closed form).
    """

    acting_train_mode = True

    def __init__(self, *, schedule: Schedule) -> None:
        self.schedule = schedule
        self.network_overrides = {"dropout": float(schedule(0))}

    def metrics(self, env_step: int) -> dict[str, float]:
        return {"rollout/dropout_p": self.schedule(env_step)}

    def prepare(self, q_network: torch.nn.Module, env_step: int) -> None:
        p = float(self.schedule(env_step))
        for module in q_network.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = p


class NoisyExploration(Exploration):
    """NoisyNet: factorised Gaussian noise in the network's linear layers, on while acting and
    learning, off for evaluation; actions are greedy w.r.t. the noisy network."""

    acting_train_mode = True
    network_overrides = {"noisy": True}


#: layers that behave differently in train and eval mode
MODE_SENSITIVE = (
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.modules.batchnorm._BatchNorm,
    NoisyLinear,
    TabularQNetwork,  # its noisy / dropout perturbations
)


class Actor:
    """The behaviour policy: one batched forward pass of the Q-network, then exploration.

    The actor shares the Q-network object with the LightningModule, so it always acts with
    the latest weights, on whatever device Lightning moved them to.

    A recurrent network (``networks.RecurrentQNetwork``) acts with a hidden state per lane,
    ``hidden`` ``(N, state_size)``, kept here: every call runs the network (the state must see
    every observation, also when every lane explores) and advances it; ``episode_starts(lanes)``
    -- the collector calls it at each reset and for the lanes whose next observation starts an
    episode -- zeroes those lanes' states. ``state_dict`` holds it: exact resume.
    """

    def __init__(
        self,
        q_network: torch.nn.Module,
        exploration: Exploration,
        *,
        seed: int,
        numpy_acting: bool = True,
    ) -> None:
        self.q_network = q_network
        self.exploration = exploration
        self.rng = np.random.default_rng(seed)
        self._mode_sensitive = any(isinstance(m, MODE_SENSITIVE) for m in q_network.modules())
        # moving a module to a device keeps its Parameter objects (``param.data`` is swapped),
        # so this parameter always tells the current device without walking the module tree
        self._first_param = next(q_network.parameters())
        self.num_actions: int | None = None  # learnt from the first forward pass
        # greedy actions of a plain MLP on the CPU through numpy (NumpyMLP: same weights,
        # float32 rounding aside; several times cheaper per step than torch's dispatch)
        self._numpy = (
            NumpyMLP.build(q_network) if numpy_acting and not self._mode_sensitive else None
        )
        self.recurrent = is_recurrent(q_network)
        #: ``(N, state_size)`` hidden state per lane (recurrent networks; None: zero)
        self.hidden: torch.Tensor | None = None

    def act_through_torch(self) -> None:
        """Compute every acting forward pass with torch (no numpy fast path)."""
        self._numpy = None

    def state_dict(self) -> dict[str, Any]:
        """The exploration generator's state (the schedule is a function of the env step) and,
        for a recurrent network, the lanes' hidden states (numpy, None before the first step)."""
        if not self.recurrent:
            return {"rng": self.rng.bit_generator.state}
        hidden = None if self.hidden is None else self.hidden.cpu().numpy().copy()
        return {"rng": self.rng.bit_generator.state, "hidden": hidden}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        if self.recurrent:
            hidden = state.get("hidden")
            self.hidden = (
                None
                if hidden is None
                else torch.as_tensor(np.asarray(hidden), device=self._first_param.device)
            )

    def episode_starts(self, lanes: np.ndarray) -> None:
        """Lanes (bool ``(N,)``) whose next observation is an episode's first: their hidden
        states restart at zero. A no-op for networks without a state."""
        if self.recurrent and self.hidden is not None and lanes.any():
            keep = torch.as_tensor(~lanes, device=self.hidden.device)
            self.hidden = self.hidden * keep.unsqueeze(1).to(self.hidden.dtype)

    @torch.no_grad()
    def _step_recurrent(self, obs: np.ndarray, env_step: int) -> torch.Tensor:
        """One step of every lane with the recurrent network (N, A), advancing ``hidden``."""
        net: Any = self.q_network
        obs_t = torch.as_tensor(obs, device=self._first_param.device)
        if self.hidden is None or self.hidden.shape[0] != len(obs):
            self.hidden = net.initial_state(len(obs), obs_t.device)
        elif self.hidden.device != obs_t.device:  # restored before the network was moved
            self.hidden = self.hidden.to(obs_t.device)
        self.exploration.prepare(net, env_step)
        was_training = net.training
        net.train(self.exploration.acting_train_mode)
        try:
            q, self.hidden = net.step(obs_t, self.hidden)
        finally:
            net.train(was_training)
        self.num_actions = int(q.shape[1])
        return q

    def __call__(self, obs: np.ndarray, env_step: int) -> np.ndarray:
        """obs: (N, *obs_shape) -> (N,) actions."""
        if self.recurrent:
            q = self._step_recurrent(obs, env_step)
            return self.exploration.act(
                lambda: q,
                lambda: q.argmax(dim=1).cpu().numpy(),
                len(obs),
                self.num_actions,
                env_step,
                self.rng,
            )
        return self.exploration.act(
            lambda: self.q_values(obs, env_step),
            lambda: self.greedy(obs, env_step),
            len(obs),
            self.num_actions,
            env_step,
            self.rng,
        )

    def greedy(self, obs: np.ndarray, env_step: int) -> np.ndarray:
        """argmax_a Q(s, a) for each lane, (N,) int64."""
        if self._numpy is not None:
            q = self._numpy(obs)
            if q is not None:
                self.num_actions = int(q.shape[1])
                return q.argmax(axis=1)
        return self.q_values(obs, env_step).argmax(dim=1).cpu().numpy()

    @torch.no_grad()
    def q_values(self, obs: np.ndarray, env_step: int) -> torch.Tensor:
        """The acting forward pass (N, A), in the mode the exploration asks for."""
        obs_t = torch.as_tensor(obs, device=self._first_param.device)
        if not self._mode_sensitive:
            q = self.q_network(obs_t)
        else:
            self.exploration.prepare(self.q_network, env_step)
            was_training = self.q_network.training
            self.q_network.train(self.exploration.acting_train_mode)
            try:
                q = self.q_network(obs_t)
            finally:
                self.q_network.train(was_training)
        self.num_actions = int(q.shape[1])
        return q
