"""torchrun detection, process-group setup, and DDP / FSDP2 wrapping.

Single process when ``WORLD_SIZE`` is unset or 1. Backend: nccl on CUDA, gloo on CPU. Every rank builds
the same model from the same seed; DDP additionally broadcasts rank 0's weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rom.config import Parallelism


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str  # "none" for one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's environment; init the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world <= 1:
        return DistInfo(0, 1, 0, dev, "none")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend}
        if use_cuda:
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistInfo(rank, world, local_rank, dev, backend)


def shutdown(info: DistInfo) -> None:
    from rom.layers.router import use_global_load_balance

    use_global_load_balance(False)
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_sum(info: DistInfo, values: list[float]) -> list[float]:
    """Sum a few floats over ranks (float64, on the process group's device)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True when ``flag`` is set on any rank (keeps ranks in step, e.g. on a signal)."""
    if not info.distributed:
        return flag
    return all_reduce_sum(info, [1.0 if flag else 0.0])[0] > 0


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The residual blocks to shard one by one: the elements of the model's largest ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        return []
    return list(max(lists, key=len))


def wrap_model(model: nn.Module, info: DistInfo, parallelism: Parallelism) -> nn.Module:
    """DDP or FSDP2 (fully_shard per block, then the root); unchanged for one process. With several processes
    the routers' load-balancing loss counts every rank's tokens (rom.layers.router.use_global_load_balance)."""
    from rom.layers.router import use_global_load_balance

    use_global_load_balance(info.distributed)
    if not info.distributed:
        return model
    if parallelism == Parallelism.FSDP:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for block in _blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def set_grad_sync(model: nn.Module, enabled: bool) -> Any:
    """Context for gradient-accumulation micro-steps: skip the all-reduce when ``enabled`` is False."""
    import contextlib

    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(model, DDP):
        return contextlib.nullcontext() if enabled else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, info: DistInfo,
               parallelism: Parallelism) -> tuple[dict, dict | None]:
    """Unsharded (model, optimizer) state dicts on CPU, identical to a single-process run's layout."""
    if info.distributed and parallelism == Parallelism.FSDP:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model, options=opts)
        osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
        return msd, osd
    inner = unwrap(model)
    msd = {k: v.detach().cpu() for k, v in inner.state_dict().items()}
    osd = optimizer.state_dict() if optimizer is not None else None
    return msd, osd


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, msd: dict, osd: dict, info: DistInfo,
                    parallelism: Parallelism) -> None:
    if info.distributed and parallelism == Parallelism.FSDP:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, set_model_state_dict, set_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, msd, options=opts)
        set_optimizer_state_dict(model, optimizer, osd, options=opts)
        return
    unwrap(model).load_state_dict(msd)
    optimizer.load_state_dict(osd)
