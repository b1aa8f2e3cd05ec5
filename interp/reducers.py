"""Streaming reducers: statistics that grow with the model, not the corpus.

Each reducer keeps per-site state and is updated with a site's activations
`[batch, seq, width]` plus the `Batch` masks. All reducers can `merge` with
another of their kind (data-parallel runs add counts and merge top-k) and
round-trip through safetensors (`save` / `load`); never pickle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file

from .batching import Batch
from .cache import atomic_path
from .errors import InterpError


def _valid(acts: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens that count, flattened to float32: acts [N, width] and their row in the batch [N].

    Computed once per site and batch and shared by every reducer (the batch
    remembers the last tensor it flattened); no copy for float32 activations
    when every token counts.
    """
    memo = batch.memo
    if memo is not None and memo[0] is acts:
        return memo[1]
    flat = acts.flatten(2) if acts.dim() > 3 else acts
    b, s = batch.mask.shape
    if bool(batch.mask.all()):
        out = flat.reshape(b * s, -1), torch.arange(b).repeat_interleave(s)
    else:
        rows = torch.arange(b).unsqueeze(1).expand(b, s)
        out = flat[batch.mask], rows[batch.mask]
    out = (out[0].float(), out[1])
    batch.memo = (acts, out)
    return out


def _one_hot(index: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """[n, N] one-hot of `index` [N], for per-group sums as one matrix product."""
    out = torch.zeros(n, index.numel(), dtype=dtype)
    out[index, torch.arange(index.numel())] = 1
    return out


class Reducer:
    """Base class: per-site state as named tensors, merge and save/load."""

    kind: ClassVar[str] = "reducer"

    def __init__(self) -> None:
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.groups: list[str] = ["all"]

    def bind(self, site: str, width: int, groups: list[str]) -> None:
        """Allocate state for `site` (called once per site before updates)."""
        if self.state and groups != self.groups:
            raise InterpError(f"{self.kind}: group lists differ ({self.groups} vs {groups})")
        self.groups = list(groups)
        if site not in self.state:
            self.state[site] = self._empty(width)

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        raise NotImplementedError

    def merge(self, other: "Reducer") -> None:
        """Fold another reducer's state (same kind, groups and settings) into this one."""
        if type(other) is not type(self) or other.groups != self.groups:
            raise InterpError(f"cannot merge {other.kind} ({other.groups}) into {self.kind} ({self.groups})")
        for site, theirs in other.state.items():
            if site not in self.state:
                self.state[site] = {k: v.clone() for k, v in theirs.items()}
            else:
                self.state[site] = self._merge(self.state[site], theirs)

    def _merge(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: a[k] + b[k] for k in a}

    @property
    def sites(self) -> list[str]:
        return list(self.state)

    def settings(self) -> dict:
        return {}

    # ---- persistence -----------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{site}/{k}": v.contiguous() for site, st in self.state.items() for k, v in st.items()}

    def metadata(self) -> dict:
        return {"kind": self.kind, "groups": self.groups, "sites": self.sites, "settings": self.settings()}

    def save(self, path: str | Path) -> None:
        """Write state to one safetensors file (metadata in its header), atomically."""
        with atomic_path(path) as tmp:
            save_file(self.tensors(), str(tmp), metadata={"interp": json.dumps(self.metadata())})

    def load_tensors(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.groups = list(meta["groups"])
        self.state = {site: {} for site in meta.get("sites", [])}  # the saved site order (files sort their keys)
        for key, value in tensors.items():
            site, name = key.rsplit("/", 1)
            self.state.setdefault(site, {})[name] = value

    @classmethod
    def load(cls, path: str | Path) -> "Reducer":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("interp", "{}"))
        return cls._from_state(meta, load_file(str(path)), str(path))

    def to_bytes(self) -> bytes:
        """The state as safetensors bytes, in `save`'s format (how vLLM's workers hand reducers back)."""
        from safetensors.torch import save

        return save(self.tensors(), metadata={"interp": json.dumps(self.metadata())})

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Reducer":
        """The inverse of `to_bytes`."""
        from safetensors.torch import load

        size = int.from_bytes(blob[:8], "little")
        meta = json.loads(json.loads(blob[8:8 + size]).get("__metadata__", {}).get("interp", "{}"))
        return cls._from_state(meta, load(blob), "reducer bytes")

    @classmethod
    def _from_state(cls, meta: dict, tensors: dict[str, torch.Tensor], where: str) -> "Reducer":
        if meta.get("kind") != cls.kind and cls is not Reducer:
            raise InterpError(f"{where}: holds a {meta.get('kind')!r} reducer, not {cls.kind!r}")
        klass = cls if cls is not Reducer else REDUCERS[meta["kind"]]
        obj = klass(**meta.get("settings", {}))
        obj.load_tensors(meta, tensors)
        return obj


class ActivationFrequency(Reducer):
    """Per group: tokens with activation > threshold (`counts` [groups, width]) and token counts (`tokens`
    [groups]); with `active_sums`, also the sum of the activation over those tokens (`active_sum`
    [groups, width], float64), so `active_mean()` is a unit's mean value when active."""

    kind = "frequency"

    def __init__(self, threshold: float = 0.0, active_sums: bool = False) -> None:
        super().__init__()
        self.threshold = threshold
        self.active_sums = active_sums

    def settings(self) -> dict:
        return {"threshold": self.threshold, "active_sums": self.active_sums}

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        g = len(self.groups)
        state = {"counts": torch.zeros(g, width, dtype=torch.int64), "tokens": torch.zeros(g, dtype=torch.int64)}
        if self.active_sums:
            state["active_sum"] = torch.zeros(g, width, dtype=torch.float64)
        return state

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        x, rows = _valid(acts, batch)
        if x.shape[0] == 0:
            return
        st = self.state[site]
        groups = batch.group_index[rows]
        fired = (x - self.threshold if self.threshold else x).sign().clamp_(min=0)  # 1.0 where act > threshold
        if bool((groups == groups[0]).all()):
            st["counts"][groups[0]] += fired.sum(0).long()  # exact: fewer than 2**24 tokens a batch
            if self.active_sums:
                st["active_sum"][groups[0]] += (x.float() * fired).sum(0, dtype=torch.float64)
        else:
            one_hot = _one_hot(groups, len(self.groups), torch.float32)
            st["counts"] += (one_hot @ fired).long()
            if self.active_sums:
                st["active_sum"] += (one_hot @ (x.float() * fired)).double()
        st["tokens"] += torch.bincount(groups, minlength=len(self.groups))

    def active_mean(self, site: str) -> torch.Tensor:
        """Mean activation over the tokens where it is > threshold (0 where never), [groups, width]."""
        if not self.active_sums:
            raise InterpError("active_mean needs ActivationFrequency(active_sums=True)")
        st = self.state[site]
        return st["active_sum"] / st["counts"].clamp(min=1).double()

    def rate(self, site: str) -> torch.Tensor:
        """Fraction of tokens with activation > threshold, [groups, width]."""
        st = self.state[site]
        return st["counts"].double() / st["tokens"].clamp(min=1).double().unsqueeze(1)


class Moments(Reducer):
    """Per group: sum, sum of squares and sum |x| over tokens (float64), [groups, width]."""

    kind = "moments"

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        g = len(self.groups)
        z = lambda: torch.zeros(g, width, dtype=torch.float64)  # noqa: E731
        return {"sum": z(), "sumsq": z(), "sumabs": z(), "tokens": torch.zeros(g, dtype=torch.int64)}

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        x, rows = _valid(acts, batch)
        if x.shape[0] == 0:
            return
        st = self.state[site]
        groups = batch.group_index[rows]
        hot = _one_hot(groups, len(self.groups), torch.float32)
        st["sum"] += hot @ x  # each batch summed in fp32, accumulated in float64
        st["sumsq"] += hot @ (x * x)
        st["sumabs"] += hot @ x.abs()
        st["tokens"] += torch.bincount(groups, minlength=len(self.groups))

    def mean(self, site: str) -> torch.Tensor:
        st = self.state[site]
        return st["sum"] / st["tokens"].clamp(min=1).unsqueeze(1)

    def std(self, site: str) -> torch.Tensor:
        st = self.state[site]
        n = st["tokens"].clamp(min=1).unsqueeze(1).double()
        return (st["sumsq"] / n - (st["sum"] / n) ** 2).clamp(min=0).sqrt()


class TopK(Reducer):
    """The k largest activations of each unit with where they occurred.

    State per site: values [width, k] (descending; -inf where unfilled),
    doc [width, k] and pos [width, k] (token position inside the document).
    By default each document counts once, at its maximum (top-k *documents*
    by the unit's max activation, as MILAN picks exemplars); with
    `per_document=False` several tokens of one document can fill the list.
    """

    kind = "topk"

    def __init__(self, k: int = 16, per_document: bool = True) -> None:
        super().__init__()
        self.k = k
        self.per_document = per_document

    def settings(self) -> dict:
        return {"k": self.k, "per_document": self.per_document}

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        return {
            "values": torch.full((width, self.k), float("-inf")),
            "doc": torch.full((width, self.k), -1, dtype=torch.int64),
            "pos": torch.full((width, self.k), -1, dtype=torch.int64),
        }

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        st = self.state[site]
        if self.per_document:
            acts = acts.flatten(2) if acts.dim() > 3 else acts  # maxima in the activations' dtype: exact
            masked = acts if bool(batch.mask.all()) else acts.masked_fill(~batch.mask.unsqueeze(-1), float("-inf"))
            vals = masked.amax(dim=1)  # [batch, width]: each document's maximum (amax: far cheaper than max)
            need = self._changeable(site, vals)
            if need.numel() == 0:
                return
            # where the maxima occurred, for those units only (all of them while the lists fill up)
            if 2 * need.numel() > vals.shape[1]:  # [batch, needed units]; max's indices (argmax is slower)
                at = masked.max(dim=1).indices[:, need]
            else:
                at = masked.index_select(2, need).max(dim=1).indices
            self._fold(site, vals[:, need].float(), batch.doc_index, batch.positions.gather(1, at), need)
            return
        x, rows = _valid(acts, batch)
        if x.shape[0] == 0:
            return
        # only units whose batch maximum beats their current k-th value can change
        need = (x.amax(0) > st["values"][:, -1]).nonzero().squeeze(1)
        if need.numel() == 0:
            return
        vals, idx = x[:, need].topk(min(self.k, x.shape[0]), dim=0)  # [kk, units needed]
        docs, pos = batch.doc_index[rows][idx], batch.positions[batch.mask][idx]
        merged = self._merge({n: v[need] for n, v in st.items()}, {"values": vals.T, "doc": docs.T, "pos": pos.T})
        for n, v in merged.items():
            st[n][need] = v

    def add_maxima(self, site: str, values: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor) -> None:
        """Fold in whole documents' maxima (per-document lists): values [docs, width] (-inf: no token),
        doc [docs], pos [docs, width] where each maximum occurred. Engines that see a document in several
        chunks (vLLM's chunked prefill) keep its running maximum and add it once, here."""
        need = self._changeable(site, values)
        if need.numel():
            self._fold(site, values[:, need].float(), doc, pos[:, need], need)

    def _changeable(self, site: str, values: torch.Tensor) -> torch.Tensor:
        """The units [n] where some document's maximum (values [docs, width]) beats or ties the current k-th
        value: only their lists can change. Ties go through the merge, so that (document, position) break them
        as in a full merge."""
        return (values.amax(0) >= self.state[site]["values"][:, -1]).nonzero().squeeze(1)

    def _fold(self, site: str, values: torch.Tensor, doc: torch.Tensor, pos: torch.Tensor, units: torch.Tensor
              ) -> None:
        """Merge documents' maxima of `units` (values, pos [docs, units]; doc [docs]) into those units' lists."""
        st = self.state[site]
        docs = doc.view(-1, 1).expand_as(pos).where(values > float("-inf"), -1)
        merged = self._merge({n: v[units] for n, v in st.items()}, {"values": values.T, "doc": docs.T, "pos": pos.T})
        for n, v in merged.items():
            st[n][units] = v

    def _merge(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The k best of both, ties broken by (document, position): the same result whatever the
        order documents arrive in (batches, shards), where activations are equal."""
        values = torch.cat([a["values"], b["values"]], dim=1)
        doc, pos = torch.cat([a["doc"], b["doc"]], 1), torch.cat([a["pos"], b["pos"]], 1)
        order = pos.argsort(dim=1, stable=True)  # lexicographic: value ↓, then doc ↑, then pos ↑
        order = order.gather(1, doc.gather(1, order).argsort(dim=1, stable=True))
        order = order.gather(1, values.gather(1, order).argsort(dim=1, descending=True, stable=True))
        idx = order[:, : self.k]
        return {"values": values.gather(1, idx), "doc": doc.gather(1, idx), "pos": pos.gather(1, idx)}


class UpperQuantile(Reducer):
    """Each unit's q-quantile over all counted tokens, exactly, in memory (1 − q) × tokens × width.

    Given the run's token count N up front (`tokens`; `count_tokens` gives it for a corpus),
    it keeps every unit's top ⌈(1 − q)·N⌉ + 1 activations: the q-quantile (nearest rank: the
    smallest value v with at least a share q of the tokens ≤ v) is always among them. For
    q = 0.99 that is 1 % of a full capture. (Without N no bounded memory is exact: a value
    dropped early can belong to the final tail.) State per site: `top` [width, m] (descending)
    and `tokens` [] (counted so far). MILAN's per-neuron highlight threshold.
    """

    kind = "quantile"

    def __init__(self, q: float = 0.99, tokens: int = 0) -> None:
        super().__init__()
        if not 0.0 < q < 1.0:
            raise InterpError(f"quantile q must lie in (0, 1), got {q}")
        if tokens <= 0:
            raise InterpError("UpperQuantile needs the run's token count (tokens > 0) to stay exact")
        self.q, self.tokens = q, int(tokens)
        self.keep = int(math.ceil((1 - q) * tokens)) + 1

    def settings(self) -> dict:
        return {"q": self.q, "tokens": self.tokens}

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        return {"top": torch.zeros(width, 0), "tokens": torch.zeros((), dtype=torch.int64)}

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        x, _ = _valid(acts, batch)
        self.state[site] = self._merge(self.state[site], {"top": x.T, "tokens": torch.tensor(x.shape[0])})

    def _merge(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        both = torch.cat([a["top"], b["top"].float()], dim=1)
        return {"top": both.topk(min(self.keep, both.shape[1]), dim=1).values, "tokens": a["tokens"] + b["tokens"]}

    def quantile(self, site: str) -> torch.Tensor:
        """[width]: each unit's q-quantile (nearest rank) over the tokens seen."""
        st = self.state[site]
        n = int(st["tokens"])
        if n == 0:
            raise InterpError(f"no tokens were counted at {site}")
        if n > self.tokens:
            raise InterpError(f"{site}: {n} tokens counted but the quantile was sized for {self.tokens}")
        rank = int(math.ceil(round(self.q * n, 9)))  # 1-based rank from the bottom (0.99 × 100 is 99.000…01)
        return st["top"][:, n - rank]  # the (n − rank + 1)-th largest


class _Growing(Reducer):
    """Reducers whose state is rows appended per token or word: merging concatenates."""

    def _merge(self, a, b):
        return {k: torch.cat([a[k], b[k]]) for k in a}


class WordPooled(_Growing):
    """Mean activation over the tokens of each word, kept per document in order.

    For frequency tagging (HFTP): one sample per word. State per site is
    `words` [total_words, width] plus `doc` [total_words] (document index)
    and `word` [total_words] (word number in that document). Memory grows
    with the corpus; pass `units` to keep only some columns.
    """

    kind = "words"

    def __init__(self, units: list[int] | None = None) -> None:
        super().__init__()
        self.units = units

    def settings(self) -> dict:
        return {"units": self.units}

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        w = len(self.units) if self.units is not None else width
        return {"words": torch.zeros(0, w), "doc": torch.zeros(0, dtype=torch.int64),
                "word": torch.zeros(0, dtype=torch.int64)}

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        if batch.word_ids is None:
            raise InterpError("WordPooled needs word ids: capture with words=True")
        acts = acts.flatten(2) if acts.dim() > 3 else acts
        if self.units is not None:
            acts = acts[..., self.units]
        keep = batch.mask & (batch.word_ids >= 0)
        x = acts[keep].float()
        rows = torch.arange(acts.shape[0]).unsqueeze(1).expand(keep.shape)[keep]
        words = batch.word_ids[keep]
        per = int(words.max()) + 1 if words.numel() else 1
        uniq, inv = torch.unique(rows * per + words, return_inverse=True)  # sorted: by row, then word
        sums = torch.zeros(uniq.numel(), x.shape[1]).index_add_(0, inv, x)
        counts = torch.bincount(inv, minlength=uniq.numel()).unsqueeze(1)
        st = self.state[site]
        st["words"] = torch.cat([st["words"], sums / counts])
        st["doc"] = torch.cat([st["doc"], batch.doc_index[uniq // per]])
        st["word"] = torch.cat([st["word"], uniq % per])

    def sequence(self, site: str, doc: int) -> torch.Tensor:
        """Word-pooled activations of one document, [n_words, width]."""
        st = self.state[site]
        sel = st["doc"] == doc
        order = st["word"][sel].argsort()
        return st["words"][sel][order]


class FullTensors(_Growing):
    """Every counted token's activation (only when asked: memory grows with the corpus).

    State per site: `acts` [total_tokens, width], `doc` and `pos` [total_tokens].
    """

    kind = "full"

    def _empty(self, width: int) -> dict[str, torch.Tensor]:
        return {"acts": torch.zeros(0, width), "doc": torch.zeros(0, dtype=torch.int64),
                "pos": torch.zeros(0, dtype=torch.int64)}

    def update(self, site: str, acts: torch.Tensor, batch: Batch) -> None:
        x, rows = _valid(acts, batch)
        st = self.state[site]
        st["acts"] = torch.cat([st["acts"], x.float()])
        st["doc"] = torch.cat([st["doc"], batch.doc_index[rows]])
        st["pos"] = torch.cat([st["pos"], batch.positions[batch.mask]])


REDUCERS: dict[str, type[Reducer]] = {
    r.kind: r for r in (ActivationFrequency, Moments, TopK, UpperQuantile, WordPooled, FullTensors)
}
