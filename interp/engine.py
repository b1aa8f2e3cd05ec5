"""The edit engine: all edits at a site compiled into one function, applied by one hook.

`edit(model, edits)` groups edits by site, builds one `FusedSite` per site
(gain vector, clamp mask, summed add vector, gates and projections prepared
once) and registers one hook per site; leaving the context removes every
hook, even on an exception. Weights are never written, so the model is
restored bit for bit. `apply_reference` applies edits one by one and defines
the semantics the fused path must match.

Positions: a pre-hook on the model reads how many tokens the KV cache already
holds, so each call knows the absolute positions of its tokens; `generate`
sets the prompt length, and edits with rule "prompt" / "generated" act only
on those positions.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from . import kernels
from .batching import encode_left
from .edits import ACTIVATION_KINDS, EditError, LowRank
from .errors import SiteError
from .hooks import hooks, site_hook
from .models import Model


@dataclass
class PositionState:
    """Absolute positions of the tokens in the current forward call."""

    prompt_len: int | None = None  # None: every position is prompt
    positions: torch.Tensor | None = None  # [seq]

    def mask(self, rule: str, seq: int, device) -> torch.Tensor | None:
        """[seq] bool of positions the rule selects; None means all."""
        if rule == "all":
            return None
        pos = self.positions if self.positions is not None and self.positions.numel() == seq else torch.arange(seq)
        prompt = pos < (self.prompt_len if self.prompt_len is not None else torch.iinfo(torch.long).max)
        return (prompt if rule == "prompt" else ~prompt).to(device)


def _where(mask: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if mask is None else torch.where(mask.view(1, -1, *([1] * (new.dim() - 2))), new, old)


# ---------------------------------------------------------------- reference: one edit at a time
def _apply_one(e, x: torch.Tensor) -> torch.Tensor:
    f = lambda t: t.to(device=x.device, dtype=x.dtype)  # noqa: E731
    if e.kind == "add":
        return x + e.scale * f(e.vector)
    if e.kind == "clamp":
        x = x.clone()
        n = e.neurons.to(x.device)
        x[..., n] = f(e.values) if e.strength == 1.0 else torch.lerp(x[..., n], f(e.values), e.strength)
        return x
    if e.kind == "scale":
        x = x.clone()
        n = e.neurons.to(x.device)
        x[..., n] = x[..., n] * f(e.gains)
        return x
    if e.kind == "gate":
        if e.hard:
            gated = f(e.gains) * (x > f(e.thresholds)).to(x.dtype) * x
        else:
            gated = f(e.gains) * torch.sigmoid((x - f(e.thresholds)) / e.temperature) * x
        return gated if e.strength == 1.0 else torch.lerp(x, gated, e.strength)
    if e.kind == "ablate":
        q = f(e.basis)
        return x - f(e.weight(x.shape[-1])) * ((x @ q) @ q.T)
    raise EditError(f"{e.kind} is not an activation edit")


def apply_reference(edits: Sequence, x: torch.Tensor, state: PositionState | None = None) -> torch.Tensor:
    """The semantics: edits of one site applied one by one, kinds in ACTIVATION_KINDS order."""
    state = state or PositionState()
    heads = x.dim() == 4
    y = x.flatten(2) if heads else x
    for kind in ACTIVATION_KINDS:
        for e in (e for e in edits if e.kind == kind):
            y = _where(state.mask(e.positions, y.shape[1], y.device), _apply_one(e, y), y)
    return y.view_as(x) if heads else y


# ---------------------------------------------------------------- fused: one function per site
@dataclass
class FusedSite:
    """Edits of one site prepared as a few dense tensors; `__call__` applies them all."""

    width: int
    stages: list = field(default_factory=list)  # (kind, rule, payload) in application order

    @classmethod
    def build(cls, edits: Sequence, width: int) -> "FusedSite":
        for e in edits:
            _check_width(e, width)
        fused = cls(width)
        for kind in ACTIVATION_KINDS:
            mine = [e for e in edits if e.kind == kind]
            if not mine:
                continue
            rules = list(dict.fromkeys(e.positions for e in mine))
            partial = any(e.strength != 1.0 for e in mine) if kind == "clamp" else False
            if kind in ("gate", "ablate") or (kind == "clamp" and (len(rules) > 1 or partial)):
                # order-dependent kinds stay sequential (still inside this one function)
                fused.stages += [(kind, e.positions, _payload(kind, [e], width)) for e in mine]
            else:
                fused.stages += [(kind, r, _payload(kind, [e for e in mine if e.positions == r], width))
                                 for r in rules]
        return fused

    @property
    def kernel_ready(self) -> bool:
        """Whether the elementwise stages fit the Triton kernel (all positions, ≤ 1 gate, ≤ 1 clamp)."""
        kinds = [k for k, _, _ in self.stages if k != "ablate"]
        partial = any(p[-1] != 1.0 for k, _, p in self.stages if k in ("clamp", "gate"))
        return (all(r == "all" for _, r, _ in self.stages) and kinds.count("gate") <= 1
                and kinds.count("clamp") <= 1 and bool(kinds) and not partial)

    def __call__(self, x: torch.Tensor, state: PositionState) -> torch.Tensor:
        heads = x.dim() == 4
        y = x.flatten(2) if heads else x
        if y.is_cuda and self.kernel_ready and kernels.available():
            y = self.apply_kernel(y)
            return y.view_as(x) if heads else y
        for kind, rule, p in self.stages:
            p = _on(p, y)
            if kind == "add":
                new = y + p
            elif kind == "scale":
                new = y * p
            elif kind == "clamp":
                mask, values, s = p
                new = torch.where(mask, values if s == 1.0 else torch.lerp(y, values, s), y)
            elif kind == "gate":
                g, t, temp, hard, s = p
                new = (g * (y > t).to(y.dtype) * y) if hard else g * torch.sigmoid((y - t) / temp) * y
                new = new if s == 1.0 else torch.lerp(y, new, s)
            else:  # ablate
                q, w = p
                new = y - w * ((y @ q) @ q.T)
            y = _where(state.mask(rule, y.shape[1], y.device), new, y)
        return y.view_as(x) if heads else y

    def apply_kernel(self, y: torch.Tensor) -> torch.Tensor:
        """Projections in torch, then one Triton kernel for scale → gate → clamp → add; y: [batch, seq, width].

        What `__call__` does on CUDA when `kernel_ready` and `kernels.available()`; every position is
        edited (kernel_ready sites have rule "all" only). Callable on CPU tensors under TRITON_INTERPRET=1.
        """
        tail: dict = {}
        for kind, _, p in self.stages:
            p = tuple(q.to(y.device) if isinstance(q, torch.Tensor) else q for q in p) if isinstance(p, tuple) \
                else p.to(y.device)
            if kind == "ablate":
                q, w = (t.to(y.dtype) for t in p)
                y = y - w * ((y @ q) @ q.T)
            else:
                tail[kind] = p[:-1] if kind in ("gate", "clamp") else p  # kernel_ready: every strength is 1
        return kernels.fused_tail(y, gain=tail.get("scale"), gate=tail.get("gate"), clamp=tail.get("clamp"),
                                  add=tail.get("add"))


def _check_width(e, width: int) -> None:
    sizes = {"add": lambda: e.vector.numel(), "gate": lambda: e.thresholds.numel(),
             "ablate": lambda: e.directions.shape[1]}
    if e.kind in sizes and sizes[e.kind]() != width:
        raise EditError(f"{e.kind} at {e.site}: expected width {width}, got {sizes[e.kind]()}")
    if e.kind in ("clamp", "scale") and e.neurons.numel() and not (0 <= int(e.neurons.min()) and int(e.neurons.max()) < width):
        raise EditError(f"{e.kind} at {e.site}: neuron index out of range 0..{width - 1}")
    if e.kind == "ablate" and e.units is not None and not (0 <= int(e.units.min()) and int(e.units.max()) < width):
        raise EditError(f"ablate at {e.site}: unit index out of range 0..{width - 1}")


def _payload(kind: str, edits: list, width: int):
    if kind == "add":
        return sum((e.scale * e.vector for e in edits), torch.zeros(width))
    if kind == "scale":
        gain = torch.ones(width)
        for e in edits:
            gain[e.neurons] = gain[e.neurons] * e.gains
        return gain
    if kind == "clamp":
        mask, values = torch.zeros(width, dtype=torch.bool), torch.zeros(width)
        for e in edits:  # later clamps win (merged only when every strength is 1)
            mask[e.neurons] = True
            values[e.neurons] = e.values
        return mask, values, edits[-1].strength
    if kind == "gate":
        (e,) = edits
        return e.gains, e.thresholds, float(e.temperature), bool(e.hard), e.strength
    (e,) = edits
    return e.basis, e.weight(width)


def _on(p, like: torch.Tensor):
    if isinstance(p, torch.Tensor):
        return p.to(device=like.device, dtype=like.dtype if p.is_floating_point() else p.dtype)
    if isinstance(p, tuple):
        return tuple(_on(q, like) for q in p)
    return p


# ---------------------------------------------------------------- applying
def resolve_module(model: Model, name: str) -> nn.Module:
    """An HF module name, or 'blocks.L.<path>' relative to decoder layer L."""
    if name.startswith("blocks."):
        _, layer, *rest = name.split(".")
        try:
            mod = model.adapter.layer(int(layer))
        except ValueError:
            raise SiteError(f"bad module name {name!r}") from None
        for part in rest:
            mod = getattr(mod, part, None)
            if mod is None:
                raise SiteError(f"no module {name!r}")
        return mod
    mods = dict(model.hf.named_modules())
    if name not in mods:
        raise SiteError(f"no module {name!r} in this model")
    return mods[name]


def _check_fits(e: LowRank, weight_shape: tuple[int, ...]) -> None:
    """EditError unless ΔW has the weight's shape [out, in] (an engine that repacks weights passes the config's)."""
    if tuple(e.delta().shape) != tuple(weight_shape):
        raise EditError(f"LowRank on {e.module}: ΔW {tuple(e.delta().shape)} ≠ weight {tuple(weight_shape)}")


def _lowrank_hook(edits: list[LowRank], module: nn.Module, state: PositionState):
    for e in edits:
        _check_fits(e, module.weight.shape)

    def hook(mod, args, output):
        x = args[0]
        out = output
        for e in edits:
            mask = state.mask(e.positions, x.shape[1], x.device) if x.dim() == 3 else None
            x_e = x if mask is None else x * mask.view(1, -1, 1).to(x.dtype)  # a linear term: zero input, zero change
            out = e.add_to(out, x_e)
        return out

    return hook


def _position_hook(state: PositionState):
    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = args[0] if args else kwargs.get("inputs_embeds")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        state.positions = torch.arange(past, past + ids.shape[1])

    return pre


@contextmanager
def edit(model: Model, edits: Sequence, *, fused: bool = True, compile: bool = False,
         prompt_len: int | None = None) -> Iterator[PositionState]:
    """Apply `edits` inside the context (one hook per site); always restore on exit.

    fused=False uses the one-by-one reference path; compile=True runs each
    fused site function through torch.compile. No edits: no hook at all; no position rule
    ("prompt" / "generated"): no position pre-hook (nothing is paid for what is not asked).
    """
    state = PositionState(prompt_len=prompt_len)
    by_site: dict[str, list] = {}
    for e in edits:
        by_site.setdefault(e.site, []).append(e)
    regs = []
    if any(getattr(e, "positions", "all") != "all" for e in edits):  # only position rules need to know where tokens are
        regs.append(lambda: model.hf.register_forward_pre_hook(_position_hook(state), with_kwargs=True))
    for site, mine in by_site.items():
        if all(isinstance(e, LowRank) for e in mine):
            module = resolve_module(model, site)
            regs.append(lambda m=module, es=mine: m.register_forward_hook(_lowrank_hook(es, m, state)))
            continue
        point = model.adapter.resolve(site)
        width = model.adapter.site_width(site)
        if fused:
            fn = FusedSite.build(mine, width)
            run = torch.compile(fn.__call__, dynamic=True) if compile else fn.__call__
            call = (lambda r: (lambda x: r(x, state)))(run)
        else:
            for e in mine:
                _check_width(e, width)
            call = (lambda es: (lambda x: apply_reference(es, x, state)))(mine)
        regs.append(lambda p=point, c=call: site_hook(p, c))
    with hooks(regs):
        yield state


def generate(model: Model, prompts: str | Sequence[str], edits: Sequence = (), *, fused: bool = True,
             return_ids: bool = False, **generation_kwargs) -> list[str] | torch.Tensor:
    """Generate continuations of `prompts` with `edits` applied (KV cache on by default).

    Prompts are left-padded; edits with rule "prompt" act on prompt positions,
    "generated" on the new tokens. Returns the decoded continuations (or the
    new token ids when `return_ids`).
    """
    tok = model.tokenizer
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise EditError("generate needs one prompt string or a non-empty list of prompt strings")
    enc = {k: v.to(model.device) for k, v in encode_left(tok, prompts).items()}
    generation_kwargs.setdefault("do_sample", False)
    generation_kwargs.setdefault("max_new_tokens", 20)
    generation_kwargs.setdefault("pad_token_id", tok.pad_token_id)
    n = enc["input_ids"].shape[1]
    if n == 0:
        raise EditError("generate needs a prompt with at least one token")
    limit = getattr(getattr(model.hf.config, "text_config", None) or model.hf.config, "max_position_embeddings", None)
    if limit is not None and n + int(generation_kwargs["max_new_tokens"]) > limit:
        raise EditError(f"a prompt of {n} tokens plus {generation_kwargs['max_new_tokens']} new ones exceeds the "
                        f"model's {limit} positions; shorten the prompt")
    with edit(model, edits, fused=fused, prompt_len=n), torch.inference_mode():
        out = model.hf.generate(**enc, **generation_kwargs)
    new = out[:, n:]
    if return_ids:
        return new
    return tok.batch_decode(new, skip_special_tokens=True)
