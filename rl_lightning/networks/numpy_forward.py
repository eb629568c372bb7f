"""A numpy mirror of a small action-out MLP, for acting on the CPU.

Acting runs the Q-network once per vector step on a handful of observations. For a small MLP
that is a dozen tiny operations, and torch's per-operation dispatch (several µs each on a small
CPU) costs far more than the arithmetic: on the 2-core benchmark machine a 4-120-84-2 forward
pass on one observation takes about 34 µs through torch and 7 µs through numpy.

``NumpyMLP`` reads the network's own parameters through zero-copy views (a CPU tensor and its
``.numpy()`` share memory), so every in-place optimizer step is seen at once, and checks before
each call that the parameters are still the same tensors at the same addresses (a move to
another device or dtype, or parameters replaced by ``load_state_dict(assign=True)``, rebuilds
the views or hands back to torch). Q-values agree with torch's up to float32 rounding (the
summation order differs, about 1e-7): a greedy action can only differ between two actions
whose values agree to that precision.

Only plain stacks are mirrored: ``QNetwork`` with an ``nn.Sequential`` encoder of
``Flatten`` / ``Linear`` / ``ReLU`` / ``Tanh`` / ``Identity`` and an ``nn.Linear`` or
``LinearHead`` head (``arch/encoder=mlp`` with ``arch/head=linear``), float32
parameters on the CPU, no hooks. Anything else (dueling or noisy heads, normalisation, dropout,
tables, action-in networks) acts through torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rl_lightning.networks.encoders import MLPEncoder
from rl_lightning.networks.heads import LinearHead
from rl_lightning.networks.q_network import QNetwork

_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Identity: "identity"}


def _has_hooks(module: nn.Module) -> bool:
    return any(
        getattr(m, name)
        for m in module.modules()
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    )


def _plan(network: nn.Module) -> list[Any] | None:
    """The layer sequence [("linear", module) | ("relu" | "tanh" | "identity", None)], or None
    when the network is not a plain MLP this mirror reproduces exactly."""
    if not isinstance(network, QNetwork) or type(network).forward is not QNetwork.forward:
        return None
    if type(network).features is not QNetwork.features or _has_hooks(network):
        return None
    encoder, head = network.encoder, network.head
    if not isinstance(encoder, nn.Sequential) or type(head) not in (nn.Linear, LinearHead):
        return None
    if type(encoder).forward not in (nn.Sequential.forward, MLPEncoder.forward):
        return None
    plan: list[Any] = []
    for i, layer in enumerate(encoder):
        if isinstance(layer, nn.Flatten) and i == 0 and (layer.start_dim, layer.end_dim) == (1, -1):
            continue
        if type(layer) is nn.Linear:
            plan.append(("linear", layer))
        elif type(layer) in _ACTIVATIONS:
            plan.append((_ACTIVATIONS[type(layer)], None))
        else:
            return None
    plan.append(("linear", head))
    return plan


class NumpyMLP:
    """``NumpyMLP.build(network)`` -> a callable ``obs (N, *obs_shape) -> Q (N, A)`` in numpy,
    or None if the network is not a plain MLP. A call returns None when the parameters are no
    longer float32 CPU tensors (the caller then uses torch)."""

    def __init__(self, plan: list[Any]) -> None:
        self.plan = plan
        self.linears: list[nn.Linear] = [module for kind, module in plan if kind == "linear"]
        # (module._parameters, name, tensor, data_ptr) of every weight and bias viewed
        self._checks: list[tuple[Any, str, torch.Tensor, int]] = []
        # (weight (out, in), bias (out, 1) or None) per linear layer, sharing memory
        self._views: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._usable = self._refresh()

    @classmethod
    def build(cls, network: nn.Module) -> NumpyMLP | None:
        plan = _plan(network)
        return None if plan is None else cls(plan)

    def _refresh(self) -> bool:
        """(Re)build the views; False if the parameters cannot be viewed as float32 CPU."""
        checks: list[tuple[Any, str, torch.Tensor, int]] = []
        for module in self.linears:
            for name in ("weight", "bias"):
                tensor = module._parameters[name]
                if tensor is not None:
                    checks.append((module._parameters, name, tensor, tensor.data_ptr()))
        self._checks = checks
        self._views = []
        if any(t.device.type != "cpu" or t.dtype != torch.float32 for _, _, t, _ in checks):
            return False
        for module in self.linears:
            weight, bias = module._parameters["weight"], module._parameters["bias"]
            assert weight is not None
            # activations are kept as columns (features, N): W @ h reads the weight in its own
            # layout, which BLAS does faster than h @ W.T for a few observations
            self._views.append(
                (
                    weight.detach().numpy(),
                    None if bias is None else bias.detach().numpy().reshape(-1, 1),
                )
            )
        return True

    def _stale(self) -> bool:
        """Whether any parameter tensor was replaced or moved since the views were built."""
        for params, name, tensor, ptr in self._checks:
            current = params[name]
            if current is not tensor or current.data_ptr() != ptr:
                return True
        return False

    def __call__(self, obs: np.ndarray) -> np.ndarray | None:
        if self._stale():
            self._usable = self._refresh()
        if not self._usable:
            return None
        if obs.dtype != np.float32:
            if obs.dtype.kind == "f":  # torch would refuse float64 input to float32 weights
                return None
            obs = obs.astype(np.float32)  # QNetwork.features: obs.float()
        h = obs.reshape(obs.shape[0], -1).T  # (features, N)
        layer = 0
        fresh = False  # h is a new array (safe to modify in place), not the caller's obs
        for kind, _ in self.plan:
            if kind == "linear":
                weight, bias = self._views[layer]
                h = weight @ h
                if bias is not None:
                    h += bias
                layer += 1
                fresh = True
            elif kind == "relu":
                h = np.maximum(h, 0.0, out=h) if fresh else np.maximum(h, 0.0)
            elif kind == "tanh":
                h = np.tanh(h, out=h) if fresh else np.tanh(h)
        return h.T  # (N, A)
