"""How the target network follows the online network; the config group ``target/``.

Each object is called after every optimizer step with the number of updates done so far.
The optimizer never sees the target parameters (they have ``requires_grad=False``).
"""

from __future__ import annotations

import torch
from torch import nn


class NoTargetUpdate:
    """No target network: the online network bootstraps, still without gradient."""

    uses_target_network = False

    def __call__(self, online: nn.Module, target: nn.Module | None, updates: int) -> None:
        return None


class HardTargetUpdate:
    """theta_old := theta every ``every_updates`` optimizer steps (Mnih et al., 2015)."""

    uses_target_network = True

    def __init__(self, *, every_updates: int) -> None:
        if every_updates < 1:
            raise ValueError(f"target.every_updates must be >= 1, got {every_updates}")
        self.every_updates = int(every_updates)

    def __call__(self, online: nn.Module, target: nn.Module | None, updates: int) -> None:
        if target is not None and updates % self.every_updates == 0:
            copy_(target, online)


class PolyakTargetUpdate:
    """theta_old := (1 - a) theta_old + a theta every ``every_updates`` steps (a = coefficient).

    With ``coefficient=1`` this is a hard copy. Buffers (batchnorm statistics) are copied.
    """

    uses_target_network = True

    def __init__(self, *, coefficient: float, every_updates: int = 1) -> None:
        if not 0.0 < coefficient <= 1.0:
            raise ValueError(f"target.coefficient must be in (0, 1], got {coefficient}")
        if every_updates < 1:
            raise ValueError(f"target.every_updates must be >= 1, got {every_updates}")
        self.coefficient = float(coefficient)
        self.every_updates = int(every_updates)

    @torch.no_grad()
    def __call__(self, online: nn.Module, target: nn.Module | None, updates: int) -> None:
        if target is None or updates % self.every_updates != 0:
            return
        t_params = [p.data for p in target.parameters()]
        o_params = [p.data for p in online.parameters()]
        torch._foreach_lerp_(t_params, o_params, self.coefficient)
        for t_buf, o_buf in zip(target.buffers(), online.buffers(), strict=True):
            t_buf.copy_(o_buf)


@torch.no_grad()
def copy_(target: nn.Module, online: nn.Module) -> None:
    """Copy every parameter and buffer of ``online`` into ``target`` in place (the tensors
    themselves, without building state dicts: a copy every few updates stays cheap)."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.copy_(o)
    for t_buf, o_buf in zip(target.buffers(), online.buffers(), strict=True):
        t_buf.copy_(o_buf)
