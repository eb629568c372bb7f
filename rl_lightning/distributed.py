"""What a process needs to know about the other ranks of a DDP run, and the one collective the
data side makes (the env-step counts of all ranks).

Under DDP (``trainer=ddp|ddp_cpu``) every rank runs its own envs, collector and replay buffer;
the budgets in the config (``total_env_steps``, ``learning_starts_env_steps``,
``env_steps_per_update``, every ``*_env_steps`` period) count the env steps of all ranks
together. Lightning initialises ``torch.distributed`` inside ``trainer.fit``; before that (and in
a single-process run) these functions answer for one process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks (1 outside a DDP run)."""
    return dist.get_world_size() if initialized() else 1


def process_rank() -> int:
    """Global rank of this process: ``torch.distributed``'s once it is up; before, the launcher's
    environment (``RANK``; under SLURM with several tasks ``SLURM_PROCID``; Lightning's
    subprocess launcher sets ``NODE_RANK`` / ``LOCAL_RANK`` and ``WORLD_SIZE``); 0 otherwise."""
    if initialized():
        return dist.get_rank()
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    node_rank = int(os.environ.get("NODE_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    nodes = int(os.environ.get("PL_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    return node_rank * max(world // max(nodes, 1), 1) + local_rank


def gather_counts(value: int) -> list[int]:
    """``value`` of every rank, in rank order (``[value]`` in a single process): one
    ``all_gather`` of one int64 (on the GPU under NCCL, which cannot gather CPU tensors)."""
    if not initialized() or dist.get_world_size() == 1:
        return [int(value)]
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    mine = torch.tensor([int(value)], dtype=torch.int64, device=device)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    return [int(t.item()) for t in everyone]


@torch.no_grad()
def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace every parameter's gradient by its mean over the ranks: one ``all_reduce`` of the
    gradients flattened into one buffer (the same values on every rank afterwards)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not initialized():
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, mean in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(mean)


#: environment variables of one DDP launch (Lightning's subprocess launcher sets them in the
#: parent; a second DDP job in the same process, e.g. the next job of a Hydra sweep, needs them
#: gone to pick a new port and re-launch its own ranks)
LAUNCH_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def end_process_group() -> None:
    """After a DDP job: destroy the process group and clear the launch's variables, so that the
    next job of the same process starts its own (Lightning #11300 / Hydra #2070)."""
    if initialized():
        dist.destroy_process_group()
    for name in LAUNCH_VARIABLES:
        os.environ.pop(name, None)
