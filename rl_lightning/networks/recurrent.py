"""Recurrent Q-networks (DRQN, R2D2): an MLP, a GRU or LSTM cell over the steps, any head.

    x_t = mlp(o_t);   h_t = cell(x_t, h_{t-1});   Q(o_{<=t}, .) = head(h_t)

The hidden state ``h`` carries what the observations so far revealed (CartPole's velocities
from successive positions). It is kept *outside* the network: acting (``exploration.Actor``)
holds one state per env lane, evaluation (``greedy.play_greedy``) one per evaluation lane, and
the loss (``recurrent_loss.RecurrentTDLoss``) unrolls sequences from the zero state. So the
network is a pure function of ``(observations, state)`` and the target network, a deep copy,
shares nothing with it.

A state is one tensor ``(B, state_size)``: the GRU's h, or the LSTM's ``[h, c]`` side by side
(``state_size = 2 * hidden_size``), so that zeroing a lane, saving it in a checkpoint and moving
it between devices are the same code for both cells. The zero state is every episode's start
state (as in PFRL's DRQN and R2D2's zero-state baseline).

``forward(obs (B, *obs_shape))`` is one step from the zero state -- what a caller that knows
nothing of states (``rl-embed``'s t-SNE, the ``QNetwork`` contract) gets; acting and evaluation
use ``step``, learning ``unroll``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from rl_lightning.networks.encoders import ACTIVATIONS, Encoder, MLPEncoder

CELLS: dict[str, type[nn.Module]] = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentEncoder(Encoder):
    """Observations ``(B, T, *obs_shape)`` -> features ``(B, T, hidden_size)``, through an MLP
    (``hidden_sizes``; ``[]``: the flat observation) and one GRU or LSTM layer.

    Args:
        obs_shape: observation shape (runtime fact).
        cell: ``gru`` | ``lstm``.
        hidden_size: width of the cell's state h (= ``out_features``).
        hidden_sizes: widths of the MLP layers before the cell.
        activation: activation of the MLP layers.
        dropout: dropout after each MLP layer (set by exploration=dropout; the cell has none).
    """

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        cell: str = "gru",
        hidden_size: int = 128,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"arch.encoder.cell={cell!r} is not one of {sorted(CELLS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"arch.encoder.activation={activation!r} is not one of {sorted(ACTIVATIONS)}"
            )
        if hidden_size < 1:
            raise ValueError(f"arch.encoder.hidden_size={hidden_size} must be >= 1")
        self.mlp = MLPEncoder(
            obs_shape=obs_shape,
            hidden_sizes=list(hidden_sizes),
            activation=activation,
            dropout=dropout,
        )
        self.cell = cell
        self.rnn = CELLS[cell](self.mlp.out_features, hidden_size, batch_first=True)
        self.hidden_size = hidden_size
        self.out_features = hidden_size
        self.state_size = hidden_size * (2 if cell == "lstm" else 1)
        self.obs_dims = len(obs_shape)

    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """The zero state of ``batch`` lanes, ``(batch, state_size)``."""
        if device is None:
            device = next(self.parameters()).device
        return torch.zeros(batch, self.state_size, device=device)

    def _run(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell over ``x`` ``(B, T, D)`` from ``state`` ``(B, S)``: ``(B, T, H), (B, S)``."""
        h = self.hidden_size
        if self.cell == "lstm":
            hc = (state[:, :h].unsqueeze(0).contiguous(), state[:, h:].unsqueeze(0).contiguous())
            out, (h_n, c_n) = self.rnn(x, hc)
            return out, torch.cat([h_n[0], c_n[0]], dim=1)
        out, h_n = self.rnn(x, state.unsqueeze(0).contiguous())
        return out, h_n[0]

    def unroll(
        self,
        obs: torch.Tensor,
        state: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of every step and the final state.

        Args:
            obs: ``(B, T, *obs_shape)``.
            state: ``(B, state_size)`` before step 0; None: the zero state.
            starts: ``(B, T)`` bool, True where a step starts an episode: the state is zeroed
                just before that step, so nothing of an earlier episode reaches it. None: no
                episode starts.

        Returns:
            ``(B, T, hidden_size)`` features, ``(B, state_size)`` state after step T - 1.

        The cell runs once per stretch between the times where some lane starts an episode
        (one fused call when none does), not once per step.
        """
        if not torch.is_floating_point(obs):
            obs = obs.float()
        b, t = obs.shape[:2]
        x = self.mlp(obs.reshape(b * t, *obs.shape[2:])).reshape(b, t, -1)
        if state is None:
            state = self.initial_state(b, obs.device)
        if starts is None:
            return self._run(x, state)
        cuts = [0, *(torch.nonzero(starts[:, 1:].any(dim=0)).flatten() + 1).tolist(), t]
        outs = []
        for a, z in zip(cuts[:-1], cuts[1:], strict=True):
            state = state * (~starts[:, a]).unsqueeze(1).to(state.dtype)
            out, state = self._run(x[:, a:z], state)
            outs.append(out)
        return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)), state

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape)`` -> ``(B, hidden_size)``: one step from the zero state."""
        return self.unroll(obs.unsqueeze(1))[0][:, 0]


#: ``encoder(obs_shape=...) -> RecurrentEncoder``
RecurrentEncoderFactory = Callable[..., RecurrentEncoder]


class RecurrentQNetwork(nn.Module):
    """Q(o_{<=t}, .) = head(cell state after o_t): a ``RecurrentEncoder`` under any action-out
    head (``arch/head=linear|dueling``), trained on sequences with a burn-in.

    Args:
        obs_shape, num_actions: runtime facts.
        encoder: builds the ``RecurrentEncoder`` (``arch.encoder``).
        head: builds the head ``(B, F) -> (B, A)`` (``arch.head``).
        burn_in: steps at the start of each sampled sequence that only warm the state up
            (no loss, no gradient; R2D2's burn-in).
        train_length: steps of each sequence that are learnt from after the burn-in.

    ``burn_in`` and ``train_length`` say how the network is trained, not what it computes; they
    live here so that ``arch=gru`` holds all that a recurrent run needs, and the builder reads
    them for the sequence sampler and the loss.
    """

    #: acting, evaluation and the builder check this flag
    recurrent = True

    def __init__(
        self,
        *,
        obs_shape: Sequence[int],
        num_actions: int,
        encoder: RecurrentEncoderFactory,
        head: Callable[..., nn.Module],
        burn_in: int = 10,
        train_length: int = 20,
    ) -> None:
        super().__init__()
        if burn_in < 0 or train_length < 1:
            raise ValueError(
                f"arch.burn_in={burn_in} must be >= 0 and arch.train_length={train_length} >= 1"
            )
        self.encoder = encoder(obs_shape=tuple(obs_shape))
        self.head = head(in_features=self.encoder.out_features, num_actions=num_actions)
        self.burn_in = int(burn_in)
        self.train_length = int(train_length)
        self.state_size = self.encoder.state_size

    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """The zero state ``(batch, state_size)``."""
        return self.encoder.initial_state(batch, device)

    def unroll(
        self,
        obs: torch.Tensor,
        state: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, *obs_shape)`` -> Q-values ``(B, T, A)`` and the state after the last step
        (``RecurrentEncoder.unroll``: ``state`` None is zero, ``starts`` zeroes it)."""
        features, state = self.encoder.unroll(obs, state, starts)
        b, t = features.shape[:2]
        q = self.head(features.reshape(b * t, -1))
        return q.reshape(b, t, -1), state

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every lane: ``(B, *obs_shape), (B, S) -> (B, A), (B, S)``."""
        q, state = self.unroll(obs.unsqueeze(1), state)
        return q[:, 0], state

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape)`` -> ``(B, F)``, one step from the zero state."""
        return self.encoder(obs)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, *obs_shape)`` -> ``(B, A)``, one step from the zero state."""
        return self.head(self.features(obs))

    def q_values(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(o_b, a_b) of one step from the zero state: ``(B, *obs_shape), (B,) -> (B,)``."""
        return self(obs).gather(1, actions.long().unsqueeze(1)).squeeze(1)


def is_recurrent(network: nn.Module) -> bool:
    """Whether ``network`` carries a state between steps (``RecurrentQNetwork``'s flag)."""
    return bool(getattr(network, "recurrent", False))
