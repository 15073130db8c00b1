"""Several processes through Ignite's `idist`: launched by torchrun or by srun under Slurm (Ignite reads the
Slurm variables), `nccl` on GPUs and `gloo` on CPU. Every rank trains on its share of the train split;
gradients (and the loss) are averaged across ranks in one all-reduce per step; only rank 0 writes.

    torchrun --nproc_per_node 4 -m hyrax_cli train                   # one node, 4 GPUs
    srun --ntasks-per-node 4 --gpus-per-task 1 hyrax train            # Slurm, any number of nodes

Ignite is imported at the first call that needs it, not with this module: a second of imports that
`infer` (libhyrax.device's pick_device) would pay for nothing.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import numpy as np
import torch


def _idist():
    import ignite.distributed as idist

    return idist


def _serial() -> bool:
    """No process group can exist: Ignite isn't loaded (so nothing initialised one through it) and torch
    has none. Ignite would answer rank 0 of 1 too, after a second of imports (the Horovod and XLA groups it
    also looks for are not Hyrax's)."""
    return "ignite.distributed" not in sys.modules and not (torch.distributed.is_available()
                                                           and torch.distributed.is_initialized())


def launched_world_size() -> int:
    """The number of processes a launcher started (torchrun's WORLD_SIZE, srun's SLURM_NTASKS)."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_STEP_ID" in os.environ and "SLURM_NTASKS" in os.environ:  # inside an srun step
        return int(os.environ["SLURM_NTASKS"])
    return 1


@contextmanager
def distributed(device: str):
    """Initialise the process group when launched as several processes; a no-op for one."""
    if launched_world_size() <= 1 or _idist().get_world_size() > 1:
        yield
        return
    backend = (
        "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"
    )
    _idist().initialize(backend)
    try:
        yield
        _idist().barrier()  # every rank is done with its collectives before any of them tears the group down
    finally:
        _idist().finalize()


def rank() -> int:
    return 0 if _serial() else _idist().get_rank()


def world_size() -> int:
    return 1 if _serial() else _idist().get_world_size()


def share(indices: np.ndarray, equal: bool) -> np.ndarray:
    """This rank's contiguous share of `indices`. `equal` trims to the same length on every rank, so all
    ranks take the same number of steps (each step is an all-reduce)."""
    n, r = world_size(), rank()
    if n == 1:
        return indices
    if equal:
        per = len(indices) // n
        return indices[r * per : (r + 1) * per]
    return np.array_split(indices, n)[r]


def broadcast_parameters(model: torch.nn.Module) -> None:
    if world_size() > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            t.data.copy_(_idist().broadcast(t.data, src=0))


def average_gradients(params: list[torch.nn.Parameter], loss: torch.Tensor) -> float:
    """All-reduce every gradient and the loss in one flat buffer; returns the mean loss over ranks."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().float().reshape(1)])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
        offset += n
    return float(flat[-1])


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Sums over ranks. Every rank joins, even one with no values (fewer validation objects than ranks):
    the key sets are merged first, so no rank waits forever in an all-reduce the others skipped."""
    if world_size() == 1:
        return values
    key_sets: list = [None] * world_size()
    torch.distributed.all_gather_object(key_sets, sorted(values))
    keys = sorted(set().union(*key_sets))
    if not keys:
        return values
    t = _idist().all_reduce(torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64))
    return dict(zip(keys, t.tolist(), strict=True))


def barrier() -> None:
    if world_size() > 1:
        _idist().barrier()
