"""bf16 working weights with fp32 master copies in the optimizer (``train.master_weights``).

Under the default policy the parameters are fp32 and autocast casts every projection weight to bf16 in each
forward, and each bf16 weight gradient is cast back and added into an fp32 ``.grad`` in the backward. For a
RoM model that is 8x the dense projections' bytes on every step: at d_model 1024 the expert banks hold 50M
elements per layer (what those casts cost on a GPU: docs/gpu_kernels.md, "Master weights").

With ``train.master_weights: true`` the projection weights (of every ``nn.Linear`` and ``ExpertLinear``, except
a weight tied to an embedding) are stored in bf16 and used as they are; the optimizer owns an fp32 master of
each, with its AdamW moments, and its update (the ``adamw_step`` op: one pass on CUDA) reads the bf16
gradient and writes the new master and its bf16 copy. Everything else (embeddings, norms, biases, A_log, D,
the conv and router weights) stays fp32 and is updated by torch's AdamW as before.

What the forward computes is unchanged: a bf16 working weight is exactly the autocast cast of its master. What
changes is the gradient's precision: it is the bf16 result of the weight-gradient GEMM, as autocast's is
before the cast back. With gradient accumulation (micro-batches per step > 1) each micro-batch's bf16
gradients are added into an fp32 buffer per master (``fold_gradients``), so sums are fp32 as before.

Checkpoints carry the masters in the optimizer's state; the final model file (``model.safetensors``) holds the
masters in place of the working weights, so its state dict is fp32 under either policy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from rom.kernels.registry import get_impl
from rom.layers.expert_linear import ExpertLinear

WORKING_DTYPE = torch.bfloat16


def working_weight_names(model: nn.Module) -> list[str]:
    """Names of the projection weights the policy stores in bf16: weights of nn.Linear and ExpertLinear
    modules, except one shared with an nn.Embedding (a tied LM head)."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    names, seen = [], set()
    for module_name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, ExpertLinear)):
            continue
        w = module.weight
        if id(w) in embedded or id(w) in seen or not w.requires_grad:
            continue
        seen.add(id(w))
        names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def to_working_weights(model: nn.Module) -> dict[str, tuple[nn.Parameter, Tensor]]:
    """Store the policy's weights in bf16 and return name -> (working parameter, its fp32 master). Call before
    wrapping the model (DDP) and before building the optimizer."""
    params = dict(model.named_parameters(remove_duplicate=False))
    pairs: dict[str, tuple[nn.Parameter, Tensor]] = {}
    for name in working_weight_names(model):
        p = params[name]
        if p.dtype != torch.float32:
            raise ValueError(f"train.master_weights: {name} is {p.dtype}, expected float32 parameters to start from")
        master = p.detach().clone()
        p.data = p.data.to(WORKING_DTYPE)
        pairs[name] = (p, master)
    return pairs


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW over fp32 masters of the bf16 working weights (see the module docstring) and over the other
    parameters as they are.

    The param groups hold the masters in place of the working weights, so the schedule, ``state_dict`` (plus
    the masters themselves) and the moments look as they would for fp32 parameters. The working weights' bf16
    gradients are read directly by the update unless ``fold_gradients`` moved them into the masters' fp32
    ``.grad`` (gradient accumulation).
    """

    def __init__(self, groups: list[dict], pairs: dict[str, tuple[nn.Parameter, Tensor]], backend: str,
                 **kwargs: Any) -> None:
        super().__init__(groups, **kwargs)
        self.names = list(pairs)
        self.working = [pairs[n][0] for n in self.names]
        self.masters = [pairs[n][1] for n in self.names]
        self.backend = backend
        self._working_of = {id(m): p for p, m in zip(self.working, self.masters)}  # master -> working weight

    # --------------------------------------------------------------------------------- gradients
    def fold_gradients(self, keep_grad_tensors: bool) -> None:
        """Add each working weight's bf16 gradient into its master's fp32 ``.grad`` and clear it (zeroed in
        place when ``keep_grad_tensors``, as a captured CUDA graph needs, else set to None)."""
        for p, m in zip(self.working, self.masters):
            if p.grad is None:
                continue
            if m.grad is None:
                m.grad = p.grad.to(m.dtype)
            else:
                get_impl("upcast_add", self.backend, p.device)(m.grad, p.grad)
            if keep_grad_tensors:
                p.grad.zero_()
            else:
                p.grad = None

    def _gradient_of(self, master: Tensor) -> Tensor | None:
        """The gradient the update uses for a master: its folded fp32 sum, else the working weight's own."""
        if master.grad is not None:
            return master.grad
        return self._working_of[id(master)].grad

    def gradients(self) -> list[Tensor]:
        """Every gradient the next step uses (masters' as ``_gradient_of``, other parameters' own)."""
        out = []
        for group in self.param_groups:
            for q in group["params"]:
                g = self._gradient_of(q) if id(q) in self._working_of else q.grad
                if g is not None:
                    out.append(g)
        return out

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> Tensor:
        """Scale all gradients so that their global L2 norm is at most ``max_norm``; returns the norm before
        clipping (fp32, summed in fp32 whatever the gradients' dtypes), as torch.nn.utils.clip_grad_norm_."""
        grads = self.gradients()
        if not grads:
            return torch.zeros(())
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        norms = [n for gs in by_dtype.values() for n in torch._foreach_norm(gs, 2, dtype=torch.float32)]
        total = torch.linalg.vector_norm(torch.stack(norms))
        if math.isfinite(max_norm):
            coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            for dtype, gs in by_dtype.items():
                torch._foreach_mul_(gs, coef.to(dtype))
        return total

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)  # the masters' folded gradients and the other parameters'
        for p in self.working:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.zero_()

    # --------------------------------------------------------------------------------- update
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if closure is not None:
            raise ValueError("MasterWeightAdamW.step: closures are not supported")
        for group in self.param_groups:
            # the group's masters that have a gradient, batched by their step count (the same for all of them
            # unless some weight got no gradient at some step): one call of the op per batch
            batches: dict[int, list[list[Tensor]]] = {}
            for q in group["params"]:
                grad = self._gradient_of(q) if id(q) in self._working_of else None
                if grad is None:
                    continue
                state = self.state[q]
                if not state:  # AdamW's own state layout, so state_dict and load_state_dict need nothing new
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(q, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(q, memory_format=torch.preserve_format)
                state["step"] += 1
                lists = batches.setdefault(int(state["step"].item()), [[], [], [], [], []])
                working = self._working_of[id(q)].data
                for lst, t in zip(lists, (q, grad, state["exp_avg"], state["exp_avg_sq"], working)):
                    lst.append(t)
            for step, lists in batches.items():
                get_impl("adamw_step", self.backend, lists[0][0].device)(
                    *lists, group["lr"], group["weight_decay"], *group["betas"], group["eps"], step)
        # the other parameters: torch's AdamW (the masters carry no .grad of their own unless folded: hide it)
        folded = [(m, m.grad) for m in self.masters if m.grad is not None]
        for m, _ in folded:
            m.grad = None
        try:
            super().step()
        finally:
            for m, g in folded:
                m.grad = g
        return None

    # --------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        sd = super().state_dict()
        # the live tensors, as torch's state_dict hands out its moments (a copy would double the masters' memory)
        sd["master_weights"] = {"names": list(self.names), "tensors": [m.detach() for m in self.masters]}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        state_dict = dict(state_dict)
        saved = state_dict.pop("master_weights", None)
        if saved is None or list(saved["names"]) != self.names:
            found = None if saved is None else saved["names"]
            raise ValueError(f"optimizer state: expected master weights for {self.names}, found {found}")
        super().load_state_dict(state_dict)
        with torch.no_grad():
            for p, m, t in zip(self.working, self.masters, saved["tensors"]):
                m.copy_(t)
                p.data.copy_(m)

    def with_masters(self, model_state: dict[str, Tensor]) -> dict[str, Tensor]:
        """``model_state`` (a state dict of the model) with each working weight replaced by its fp32 master."""
        out = dict(model_state)
        for name, m in zip(self.names, self.masters):
            if name not in out:
                raise KeyError(f"model state has no {name!r} to replace by its master weight")
            out[name] = m.detach().to(out[name].device, copy=True)
        return out


def master_param_groups(groups: list[dict], pairs: dict[str, tuple[nn.Parameter, Tensor]]) -> list[dict]:
    """``groups`` (rom.train.optim.param_groups) with each working weight replaced by its master."""
    master_of = {id(p): m for p, m in pairs.values()}
    return [{**g, "params": [master_of.get(id(p), p) for p in g["params"]]} for g in groups]


__all__ = ["MasterWeightAdamW", "master_param_groups", "to_working_weights", "working_weight_names"]
