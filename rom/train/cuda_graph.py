"""CUDA graphs for training: capture forward, loss and backward of one micro-batch once, then replay it.

Why: on a fast GPU a training step of these models is a few hundred small kernels (a RoM layer: router,
sort, gathers, grouped GEMMs, Triton scan and conv), and issuing them from Python takes longer than running
them; the GPU then waits on the host. Replaying a captured graph issues the whole step in one launch.

What a captured step needs, and how this module provides it:
- fixed shapes and addresses: the inputs are copied into static buffers before each replay; every
  micro-batch has the loader's fixed (micro_batch, seq_len) shape;
- no host synchronisation inside the step: the model's hot path has none (rom.kernels.experts); a capture
  that meets one fails with CUDA's "operation not permitted when stream is capturing";
- gradients that accumulate: every parameter that receives a gradient gets a fixed, zeroed ``.grad`` before
  the capture, so the captured backward *adds* into it, micro-batch after micro-batch. The optimizer must
  therefore zero gradients in place (``zero_grad(set_to_none=False)``): a new ``.grad`` tensor would be
  invisible to the graph;
- outputs (loss terms, router statistics) live in the graph's memory and the next replay overwrites them:
  read or copy them before that (``RouterStats.snapshot``).

The capture runs inside ``rom.kernels.weight_cast.weight_grads_accumulate_in_place``: the expert weights'
bf16 gradients are added into their fixed fp32 ``.grad`` in one pass instead of a cast and then autograd's
add (which would reread and rewrite every fp32 gradient, 8x the dense layer's for a RoM bank).

Warm-up runs (on a side stream, as torch requires before a capture) compute gradients that are discarded:
no parameter changes and no optimizer step, so a graphed run trains as the eager one does.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from rom import kernels
from rom.config import Precision
from rom.layers.aux import RouterStats
from rom.models.precision import autocast_context


class CapturedStep:
    """One CUDA graph of ``step`` (a closure that runs forward and backward on fixed input tensors).

    ``step`` is run ``warmup`` times on a side stream (kernel compilation, allocator, cuBLAS handles), the
    gradients it produced are zeroed in place, and one more call is captured. ``replay()`` reruns the
    captured kernels and returns the outputs of the captured call, whose tensors hold the new values after
    each replay. Parameters that already have a ``.grad`` keep that tensor (the warm-up adds into it, then it
    is zeroed), so several captures over one model (say, one per kernel backend) share the same gradients.
    """

    def __init__(self, step: Callable[[], Any], params: Iterable[nn.Parameter], warmup: int = 3) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CapturedStep: CUDA graphs need a CUDA device")
        if warmup < 1:
            raise ValueError(f"CapturedStep: warmup must be >= 1 (kernels compile before a capture), got {warmup}")
        params = [p for p in params if p.requires_grad]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream().wait_stream(side)
        # fixed gradients for exactly the parameters the step reaches, zeroed: the captured backward adds into
        # them; the others keep .grad None, as in an eager step (AdamW skips them)
        self.grads = [p.grad for p in params if p.grad is not None]
        with torch.no_grad():
            for g in self.grads:
                g.zero_()
        self.graph = torch.cuda.CUDAGraph()
        # every .grad is fixed from here on: the expert banks' casts add into them in one pass
        with torch.cuda.graph(self.graph), kernels.weight_grads_accumulate_in_place():
            self.outputs = step()
        torch.cuda.synchronize()
        self._params = params

    def replay(self) -> Any:
        """Run the captured step again; returns the (static) outputs of the captured call."""
        self.graph.replay()
        return self.outputs

    def check_gradients_in_place(self) -> None:
        """Raise if some parameter's .grad is no longer the tensor the graph adds into."""
        current = {id(p.grad) for p in self._params if p.grad is not None}
        if any(id(g) not in current for g in self.grads):
            raise RuntimeError("CapturedStep: a parameter's .grad was replaced (zero_grad(set_to_none=True)?); "
                               "the graph adds into the tensors allocated at capture time. Zero them in place.")


def micro_batch_loss(forward: Callable[[torch.Tensor], Any], x: torch.Tensor, y: torch.Tensor, accum: int,
                     device: torch.device, precision: Precision) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Forward, cross-entropy + auxiliary loss, backward of (ce + aux) / accum: one micro-batch of training.

    Returns (ce detached, aux detached, the model output). Shared by the eager loop and the captured step, so
    both compute exactly the same thing.
    """
    with autocast_context(device, precision):
        out = forward(x)
        logits = out.logits
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        aux = out.aux_loss if torch.is_tensor(out.aux_loss) else torch.tensor(float(out.aux_loss), device=device)
        ((ce + aux) / accum).backward()
    return ce.detach(), aux.detach(), out


class GraphedMicroStep:
    """``micro_batch_loss`` for a fixed batch shape as a replayed CUDA graph (the train loop's fast path).

    Captured on random token ids drawn from a private generator (the loader's batches and the global RNG are
    not touched, so a graphed run sees the same data as an eager one). Call with each micro-batch:
    ``ce, aux, router_stats = step(x, y)``; the returned tensors are overwritten by the next call.
    """

    def __init__(self, model: nn.Module, x_shape: tuple[int, ...], vocab_size: int, accum: int,
                 device: torch.device, precision: Precision, warmup: int = 3) -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randint(0, vocab_size, x_shape, device=device, generator=gen)
        self.y = torch.randint(0, vocab_size, x_shape, device=device, generator=gen)

        def step() -> tuple[torch.Tensor, torch.Tensor, list[RouterStats]]:
            ce, aux, out = micro_batch_loss(model, self.x, self.y, accum, device, precision)
            return ce, aux, list(getattr(out, "router_stats", []) or [])

        self.captured = CapturedStep(step, model.parameters(), warmup)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[RouterStats]]:
        if x.shape != self.x.shape or y.shape != self.y.shape:
            raise ValueError(f"GraphedMicroStep: captured for batches of shape {tuple(self.x.shape)}, "
                             f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        return self.captured.replay()
