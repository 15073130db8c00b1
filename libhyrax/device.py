"""The one rule for `general.device`, asked by training, inference, exact vector search and the knn score.

    "auto"      a GPU when there is one, else the CPU
    "cuda"      the GPU (in a run of several processes, this process's: LOCAL_RANK)
    "cpu", "cuda:1", ...   as given

`pick_device` answers for torch; onnxruntime applies the same rule to its own providers
(`libhyrax.onnx_io.session`: CUDA when the setting allows a GPU and the CUDA provider is there).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def allows_gpu(setting: str | None) -> bool:
    """Whether `setting` lets a run use a GPU: "auto" (or unset) and "cuda[:N]"."""
    return setting in ("auto", "", None) or str(setting).startswith("cuda")


def pick_device(setting: str | None = "auto") -> torch.device:
    """The torch device `setting` names, made this process's current CUDA device when it is one."""
    import torch

    from libhyrax.training import distributed as dist

    if setting in ("auto", "", None):
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and dist.world_size() > 1:
        setting = f"cuda:{int(os.environ.get('LOCAL_RANK', dist.rank() % max(torch.cuda.device_count(), 1)))}"
    device = torch.device(setting)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device
