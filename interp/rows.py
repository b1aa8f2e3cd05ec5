"""Per-row edits: every row of a batch (every request of a server) with its own edits, one pass per site.

A plan holds edit sets (slots). A slot's *program* for a phase ("prompt" or "generated") is its
edits whose position rule is "all" or that phase. Programs get keys: 0 is "no edit", slot s has
1 + 2s (prompt) and 2 + 2s (generated). Each forward hands the hooks `keys` [tokens], the key of
every token of the (flattened) batch; rows that share an edit set share its slot.

`RowSite` stacks the programs of one site into dense tables [keys, width] — one gain, one add, and
one table per gate and clamp slot — and applies ablate → scale → gate → clamp → add by gathering each
token's row of every table, so many recipes cost about what one does. Ablations and low-rank terms
run once per distinct edit, on its tokens only. Tokens with key 0 pass through bit for bit.
`apply_reference` on each row alone defines what this must compute.

`row_edit(model, rows, prompt_len)` applies per-row edits to an ordinary padded batch; `serve` maps
its flattened continuous batches onto the same keys through `RowHooks`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .edits import ACTIVATION_KINDS, EditError, LowRank
from .engine import _check_fits, _check_width, resolve_module
from .hooks import site_hook
from .models import Model

PHASES = ("prompt", "generated")


def program(edits: Sequence, phase: str) -> list:
    """The edits of one row that act on tokens of `phase`."""
    return [e for e in edits if e.positions in ("all", phase)]


def row_keys(slots: Sequence[int | None], starts: Sequence[int], lengths: Sequence[int],
             positions: torch.Tensor, prompt_lens: Sequence[int]) -> torch.Tensor:
    """keys [tokens] of a flattened batch: row r owns tokens starts[r] : starts[r] + lengths[r].

    slots[r]: which edit set of the plan row r uses (None: no edits), so rows that share a recipe
    share its keys. positions [tokens]: each token's absolute position in its own sequence; a token
    is "generated" when its position is ≥ its row's prompt length.
    """
    keys = torch.zeros(positions.numel(), dtype=torch.long)
    for slot, a, n, plen in zip(slots, starts, lengths, prompt_lens):
        if slot is not None and n:
            keys[a:a + n] = 1 + 2 * slot + (positions[a:a + n] >= plen).long()
    return keys


@dataclass
class RowSite:
    """The programs of one site, stacked; `__call__(x, keys)` applies each token its own program."""

    width: int
    gain: torch.Tensor | None = None  # [K, W]
    add: torch.Tensor | None = None  # [K, W]
    gates: list = field(default_factory=list)  # per slot: (active [K], gains, thresholds [K, W], temp [K, 1], hard [K], strength [K, 1])
    clamps: list = field(default_factory=list)  # per slot: (mask [K, W], values [K, W], strength [K, W] | None)
    ablates: list = field(default_factory=list)  # per slot: [(keys, basis [W, r], weight [W])]

    @classmethod
    def build(cls, programs: Sequence[Sequence], width: int) -> "RowSite":
        """programs[k]: the activation edits of key k at this site (programs[0] is empty)."""
        for prog in programs:
            for e in prog:
                _check_width(e, width)
        K, site = len(programs), cls(width)
        by_kind = [{k: [e for e in prog if e.kind == k] for k in ACTIVATION_KINDS} for prog in programs]
        if any(p["scale"] for p in by_kind):
            site.gain = torch.ones(K, width)
            for k, p in enumerate(by_kind):
                for e in p["scale"]:
                    site.gain[k, e.neurons] = site.gain[k, e.neurons] * e.gains
        if any(p["add"] for p in by_kind):
            site.add = torch.zeros(K, width)
            for k, p in enumerate(by_kind):
                if p["add"]:
                    site.add[k] = sum((e.scale * e.vector for e in p["add"]), torch.zeros(width))
        for j in range(max(len(p["gate"]) for p in by_kind)):
            site.gates.append(_gate_slot([p["gate"][j] if j < len(p["gate"]) else None for p in by_kind], width))
        clamps = [_clamp_stages(p["clamp"], width) for p in by_kind]
        for j in range(max(len(c) for c in clamps)):
            site.clamps.append(_clamp_slot([c[j] if j < len(c) else None for c in clamps], width))
        for j in range(max(len(p["ablate"]) for p in by_kind)):
            groups: dict[int, tuple[list[int], object]] = {}
            for k, p in enumerate(by_kind):
                if j < len(p["ablate"]):
                    e = p["ablate"][j]
                    groups.setdefault(id(e), ([], e))[0].append(k)
            site.ablates.append([(torch.tensor(ks), e.basis, e.weight(width)) for ks, e in groups.values()])
        return site

    def __call__(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """x [..., tokens, width] (or [..., tokens, heads, d_head]); keys [tokens of x, flattened]."""
        y = x.reshape(-1, self.width)
        keys = keys.to(y.device)
        for slot in self.ablates:
            for ks, q, w in slot:
                sel = torch.isin(keys, ks.to(keys.device)).nonzero().squeeze(1)
                if sel.numel():
                    ys, q = y[sel], q.to(y)
                    y = y.index_copy(0, sel, ys - w.to(y) * ((ys @ q) @ q.T))
        if self.gain is not None:
            y = y * self.gain.to(y)[keys]
        for active, g, t, temp, hard, s in self.gates:
            on = active.to(y.device)[keys]
            if not bool(on.any()):
                continue
            g, t, temp, s = g.to(y)[keys], t.to(y)[keys], temp.to(y)[keys], s.to(y)[keys]
            hard_rows = hard.to(y.device)[keys].unsqueeze(1)
            soft = g * torch.sigmoid((y - t) / temp) * y
            gated = torch.where(hard_rows, g * (y > t).to(y.dtype) * y, soft)
            gated = torch.where(s == 1.0, gated, torch.lerp(y, gated, s))
            y = torch.where(on.unsqueeze(1), gated, y)
        for mask, values, s in self.clamps:
            m, v = mask.to(y.device)[keys], values.to(y)[keys]
            y = torch.where(m, v if s is None else torch.lerp(y, v, s.to(y)[keys]), y)
        if self.add is not None:
            y = y + self.add.to(y)[keys]
        return y.view(x.shape)


def _gate_slot(gates: list, width: int) -> tuple:
    K = len(gates)
    active, hard = torch.zeros(K, dtype=torch.bool), torch.zeros(K, dtype=torch.bool)
    g, t, temp, s = torch.ones(K, width), torch.zeros(K, width), torch.ones(K, 1), torch.ones(K, 1)
    for k, e in enumerate(gates):
        if e is not None:
            active[k], hard[k] = True, bool(e.hard)
            g[k], t[k], temp[k], s[k] = e.gains, e.thresholds, float(e.temperature), e.strength
    return active, g, t, temp, hard, s


def _clamp_stages(clamps: list, width: int) -> list[tuple]:
    """A row's clamps as (mask, values, strength) stages: merged into one when every strength is 1."""
    if not clamps:
        return []
    if all(e.strength == 1.0 for e in clamps):
        clamps = [clamps]  # later clamps win
    else:
        clamps = [[e] for e in clamps]
    stages = []
    for group in clamps:
        mask, values, strength = torch.zeros(width, dtype=torch.bool), torch.zeros(width), torch.ones(width)
        for e in group:
            mask[e.neurons], values[e.neurons], strength[e.neurons] = True, e.values, e.strength
        stages.append((mask, values, strength))
    return stages


def _clamp_slot(stages: list, width: int) -> tuple:
    K = len(stages)
    mask, values, strength = torch.zeros(K, width, dtype=torch.bool), torch.zeros(K, width), torch.ones(K, width)
    for k, st in enumerate(stages):
        if st is not None:
            mask[k], values[k], strength[k] = st
    return mask, values, (None if bool((strength == 1.0).all()) else strength)


@dataclass
class RowLowRank:
    """Low-rank terms of one Linear module: each distinct edit on the tokens of the keys that hold it."""

    groups: list  # [(keys [n], LowRank)]

    @classmethod
    def build(cls, programs: Sequence[Sequence], weight_shape: Sequence[int]) -> "RowLowRank":
        """programs[k]: the LowRank edits of key k, each checked against the module's weight shape [out, in]
        (an engine that repacks weights passes the config's); each distinct edit once, with the keys that hold it."""
        groups: dict[int, tuple[list[int], LowRank]] = {}
        for k, prog in enumerate(programs):
            for e in prog:
                _check_fits(e, weight_shape)
                groups.setdefault(id(e), ([], e))[0].append(k)
        return cls([(torch.tensor(ks), e) for ks, e in groups.values()])

    def __call__(self, x: torch.Tensor, out: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """x [..., in], out [..., out] of the module; keys [tokens]."""
        xf, of = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
        keys = keys.to(x.device)
        for ks, e in self.groups:
            sel = torch.isin(keys, ks.to(keys.device)).nonzero().squeeze(1)
            if not sel.numel():
                continue
            of = of.index_copy(0, sel, e.add_to(of[sel], xf[sel]))
        return of.view(out.shape)


@dataclass
class RowPlan:
    """Per-row edits of one batch composition, ready to apply: a RowSite per site, a RowLowRank per module."""

    sites: dict[str, RowSite]
    modules: dict[str, RowLowRank]

    @classmethod
    def build(cls, model: Model, slots: Sequence[Sequence]) -> "RowPlan":
        """slots[s]: the edits of slot s (any sites, any position rules)."""
        programs: list[list] = [[]]
        for edits in slots:
            programs += [program(edits, phase) for phase in PHASES]
        names = list(dict.fromkeys(e.site for prog in programs for e in prog))
        sites, modules = {}, {}
        for name in names:
            per_key = [[e for e in prog if e.site == name] for prog in programs]
            if all(isinstance(e, LowRank) for prog in per_key for e in prog):
                modules[name] = RowLowRank.build(per_key, resolve_module(model, name).weight.shape)
            else:
                model.adapter.resolve(name)
                sites[name] = RowSite.build(per_key, model.adapter.site_width(name))
        return cls(sites, modules)


class RowHooks:
    """Hooks that apply `plan` to the current forward by `keys`; `ensure` adds sites, `close` removes all.

    Set `plan` and `keys` before each forward (from the thread that runs it). A site hook whose site
    the plan does not edit returns the tensor untouched.
    """

    def __init__(self, model: Model):
        self.model = model
        self.plan: RowPlan | None = None
        self.keys: torch.Tensor | None = None
        self._handles: dict[str, torch.utils.hooks.RemovableHandle] = {}

    def ensure(self, plan: RowPlan) -> None:
        for name in plan.sites:
            if name not in self._handles:
                self._handles[name] = site_hook(self.model.adapter.resolve(name), self._site_fn(name))
        for name in plan.modules:
            if name not in self._handles:
                self._handles[name] = resolve_module(self.model, name).register_forward_hook(self._module_fn(name))

    def _site_fn(self, name: str):
        def fn(x):
            site = self.plan.sites.get(name) if self.plan is not None else None
            return None if site is None or self.keys is None else site(x, self.keys)
        return fn

    def _module_fn(self, name: str):
        def fn(module, args, output):
            lr = self.plan.modules.get(name) if self.plan is not None else None
            return None if lr is None or self.keys is None else lr(args[0], output, self.keys)
        return fn

    def close(self) -> None:
        for h in self._handles.values():
            h.remove()
        self._handles.clear()


@contextmanager
def row_edit(model: Model, rows: Sequence[Sequence], *, prompt_len: int | None = None) -> Iterator[RowHooks]:
    """Apply rows[b]'s edits to row b of every forward inside (a padded batch [B, seq]); always restore.

    prompt_len: the padded prompt length (positions ≥ it are "generated"), as for `interp.edit`.
    """
    plan = RowPlan.build(model, rows)
    hooks = RowHooks(model)
    slots = [b if r else None for b, r in enumerate(rows)]

    def pre(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = args[0] if args else kwargs.get("inputs_embeds")
        batch, seq = ids.shape[0], ids.shape[1]
        if batch != len(rows):
            raise EditError(f"row_edit has edits for {len(rows)} rows but the batch has {batch}")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None and hasattr(cache, "get_seq_length") else 0
        pos = torch.arange(past, past + seq).repeat(batch)
        limit = prompt_len if prompt_len is not None else torch.iinfo(torch.long).max
        hooks.keys = row_keys(slots, [b * seq for b in range(batch)], [seq] * batch, pos, [limit] * batch)

    handle = model.hf.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        hooks.plan = plan
        hooks.ensure(plan)
        yield hooks
    finally:
        handle.remove()
        hooks.close()
