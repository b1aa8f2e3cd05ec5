"""LM-head decoding of neurons (Davies 2025; METHODS.md §B).

Each MLP neuron has a read direction (a row of up_proj / gate_proj, or c_fc)
and a write direction (a column of down_proj / c_proj), both in the residual
basis [d_model]. Projecting one through the unembedding gives a logit per
vocabulary token; its softmax says which tokens the neuron "means".

Every neuron of every layer is mapped by chunked matrix products
([chunk, d_model] @ [d_model, vocab]) that keep only what is needed per row:
the top-k tokens with logits and probabilities, and the row's log-sum-exp
(so p(token) of any neuron can be recomputed from its logit). Optionally, a
per-token index of the neurons that give that token the highest probability,
over all layers: the concept search of step 4 ("rank all neurons by p(token)").
Memory is bounded by the chunk: one [chunk, vocab] fp32 block at a time.
Per block, one fused pass (torch.compile) gives the log-sum-exp and the maxima
of 256-token sub-blocks, from which the top-k comes in two small stages: the
map runs close to the speed of the bare matrix products (benchmarks/lm_head.py).
Without the index, `concept_neurons` ranks all neurons by p(token) exactly from
the weights and the stored log-sum-exps.

Options (METHODS.md §B step 2): multiply w by the final norm's weight first
(`final_norm`), unit-normalise w first (`unit`; changes the ranking across
neurons, not a neuron's own top-k).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

import interp
from interp.errors import InterpError

DIRECTIONS = ("write", "up", "gate")  # "up"/"gate": the read direction (c_fc for ungated MLPs: "up")


@dataclass(frozen=True)
class LMHeadOptions:
    """How neurons are decoded."""

    directions: tuple[str, ...] = ("write", "up")
    final_norm: bool = True  # w ⊙ final-norm weight before W_U
    unit: bool = False  # w / ‖w‖ before W_U (after the norm weight)
    k: int = 10  # top tokens kept per neuron
    index_k: int = 0  # neurons kept per token in the concept index (0: none; it costs about one more map)
    chunk: int = 1024  # neurons per matrix product
    dtype: str = "float32"  # or "bfloat16": bf16 products (fp32 accumulation), candidates re-ranked exactly in fp32
    candidates: int = 0  # bfloat16: tokens per neuron re-ranked in fp32 (0: max(4k, 32))

    def __post_init__(self) -> None:
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise InterpError(f"lm-head directions must be among {', '.join(DIRECTIONS)}, got {list(self.directions)}")
        if self.k < 1 or self.index_k < 0 or self.chunk < 1:
            raise InterpError(f"lm-head needs k ≥ 1, index_k ≥ 0, chunk ≥ 1 (got {self.k}, {self.index_k}, {self.chunk})")
        if self.dtype not in ("float32", "bfloat16"):
            raise InterpError(f"lm-head dtype must be float32 or bfloat16, not {self.dtype!r}")
        if self.candidates and self.candidates < self.k:
            raise InterpError(f"lm-head candidates ({self.candidates}) must be at least k ({self.k})")

    @property
    def n_candidates(self) -> int:
        return self.candidates or max(4 * self.k, 32)


@dataclass
class LMHeadMap:
    """The decoded map of one model.

    Per direction d (keys `"{d}.{name}"`):
    `top_ids` [n_layers, d_mlp, k] int64, `top_logits` / `top_probs` [n_layers, d_mlp, k],
    `lse` [n_layers, d_mlp] (log-sum-exp of the neuron's logits, so p = exp(logit − lse)),
    in bfloat16 `recomputed` [n_layers, d_mlp] bool (neurons whose bf16 candidates could not be shown to hold
    the fp32 top-k, decoded again in fp32), and with an index: `index_neurons` [vocab, index_k] (flat neuron = layer · d_mlp + n,
    best first) and `index_probs` [vocab, index_k].
    """

    layers: list[int]
    d_mlp: int
    vocab: int
    options: LMHeadOptions
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, direction: str, name: str) -> torch.Tensor:
        key = f"{direction}.{name}"
        if key not in self.tensors:
            raise InterpError(f"this map has no {key!r}; directions: {', '.join(self.options.directions)}")
        return self.tensors[key]

    def params(self) -> dict:
        return {"layers": self.layers, "d_mlp": self.d_mlp, "vocab": self.vocab,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.options).items()}}


def neuron_directions(model: interp.Model, layer: int, direction: str) -> torch.Tensor:
    """The layer's neuron directions in the residual basis, [d_mlp, d_model]."""
    a = model.adapter
    if direction == "write":
        return a.write_weights(layer).T
    if direction not in ("up", "gate"):
        raise InterpError(f"unknown direction {direction!r}; one of {', '.join(DIRECTIONS)}")
    return a.read_weights(layer, direction)


def prepare(w: torch.Tensor, norm_weight: torch.Tensor | None, unit: bool) -> torch.Tensor:
    """Apply the options to directions [n, d_model] (fp32)."""
    w = w.float()
    if norm_weight is not None:
        w = w * norm_weight.float()
    if unit:
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return w


class _Index:
    """Running top-`k` neurons per token by log-probability, merged chunk by chunk: [vocab, k]."""

    def __init__(self, vocab: int, k: int, device) -> None:
        self.logp = torch.full((k, vocab), -torch.inf, device=device)
        self.neuron = torch.full((k, vocab), -1, dtype=torch.int64, device=device)

    def update(self, logp: torch.Tensor, first: int) -> None:
        """logp: [chunk, vocab] for flat neurons first … first + chunk − 1."""
        k = self.logp.shape[0]
        vals, rows = logp.topk(min(k, logp.shape[0]), dim=0)  # [k', vocab]
        both = torch.cat([self.logp, vals])
        ids = torch.cat([self.neuron, rows + first])
        self.logp, pick = both.topk(k, dim=0)
        self.neuron = ids.gather(0, pick)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.neuron.T.contiguous(), self.logp.exp().T.contiguous()


BLOCK = 64  # vocabulary block for the two-stage top-k (measured on smollm2, bf16 map of 8 layers: 1.85 s at 64,
            # 2.07 s at 256; fewer entries to gather and rank after the block maxima)
BF16_CHUNK = 256  # bfloat16: neurons per product at most (its logits stay in cache for the passes that follow;
                  # measured on smollm2, 8 layers: 2.42 s at 1024, 1.97 s at 256)


def _row_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over [n, vocab] (vocab a multiple of BLOCK): per-block maxima [n, vocab/BLOCK] and log-sum-exp [n],
    in fp32 whatever the logits' dtype (a bf16 block is upcast inside the fused pass)."""
    n = logits.shape[0]
    logits = logits.float()
    block_max = logits.view(n, -1, BLOCK).amax(-1)
    m = block_max.amax(-1, keepdim=True)
    return block_max, (logits - m).exp().sum(-1).log() + m[:, 0]


_compiled_row_stats = None


def row_stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_row_stats` through torch.compile (one fused pass; eager if compiling is not possible here)."""
    global _compiled_row_stats
    if _compiled_row_stats is None:
        try:
            fn = torch.compile(_row_stats, dynamic=None)
            fn(torch.zeros(2, BLOCK, device=logits.device))  # compile now, so a failure falls back here
            _compiled_row_stats = fn
        except Exception as exc:  # no C++ compiler / Triton: the eager version computes the same numbers
            reason = (str(exc).strip().splitlines() or [""])[0][:200]  # compiler errors run to many lines
            warnings.warn(f"LM-head decoding: torch.compile failed here ({type(exc).__name__}: {reason}); "
                          "falling back to eager torch for the block statistics (same numbers, slower)",
                          RuntimeWarning, stacklevel=2)
            _compiled_row_stats = _row_stats
    return _compiled_row_stats(logits)


def block_topk(logits: torch.Tensor, block_max: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per row of [n, vocab] in two stages: the k blocks with the largest maxima hold every top-k entry.

    (If a block outside them held a top-k entry e, k other blocks would each hold an
    entry ≥ their max ≥ e's block max ≥ e: k entries above e, a contradiction.) The
    final top-k runs over k · BLOCK entries instead of the whole vocabulary.
    Returns (values [n, k], ids [n, k]), largest first.
    """
    n = logits.shape[0]
    if k >= block_max.shape[1]:  # a small vocabulary: nothing to gain
        return logits.topk(k, dim=-1)
    blocks = block_max.topk(k, dim=-1).indices  # [n, k]
    picked = logits.view(n, -1, BLOCK).gather(1, blocks[:, :, None].expand(n, k, BLOCK)).reshape(n, k * BLOCK)
    values, j = picked.topk(k, dim=-1)
    return values, blocks.gather(1, j // BLOCK) * BLOCK + j % BLOCK


class _Decoder:
    """Chunked W @ W_Uᵀ into one reused buffer, padded to whole vocabulary blocks (pad logits = −inf)."""

    def __init__(self, unembed_t: torch.Tensor, chunk: int, dtype: torch.dtype = torch.float32) -> None:
        d_model, self.vocab = unembed_t.shape
        padded = -(-self.vocab // BLOCK) * BLOCK
        self.unembed_t = torch.zeros(d_model, padded, device=unembed_t.device, dtype=dtype)
        self.unembed_t[:, : self.vocab] = unembed_t
        self.buffer = torch.empty(chunk, padded, device=unembed_t.device, dtype=dtype)

    def logits(self, w: torch.Tensor) -> torch.Tensor:
        """[n, d_model] -> [n, padded vocab] (a view of the buffer, valid until the next call)."""
        out = self.buffer[: w.shape[0]]
        torch.mm(w.to(out.dtype), self.unembed_t, out=out)
        if out.shape[1] > self.vocab:
            out[:, self.vocab:] = -torch.inf
        return out


class _Rerank:
    """bfloat16 decoding made exact: each neuron's top `c` tokens by its bf16 logits are scored again in fp32.

    A bf16 logit differs from the fp32 one by at most  e(w) = ‖w − w̃‖·max‖ũ‖ + ‖w̃‖·max‖u − ũ‖ (rounding the
    inputs; Cauchy–Schwarz) + d·2⁻²⁴·‖w̃‖·max‖ũ‖ (fp32 accumulation) + 2⁻⁸·|logit| (rounding the output). A token
    outside the candidates has a bf16 logit ≤ the c-th candidate's, so when the fp32 k-th best candidate beats that
    by more than e(w), the candidates hold the fp32 top-k: the neuron is *covered*. Neurons that are not covered
    are decoded again in fp32 (`recomputed`). The log-sum-exp swaps the candidates' bf16 terms for fp32 ones.
    """

    def __init__(self, unembed: torch.Tensor, c: int) -> None:
        self.unembed = unembed  # [vocab, d_model] fp32
        rounded = unembed.bfloat16().float()
        self.u_max = float(rounded.norm(dim=-1).max())
        self.u_err = float((unembed - rounded).norm(dim=-1).max())
        self.c = c

    def bound(self, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """e(w) [n] for fp32 directions w [n, d_model], output magnitudes `scale` [n]."""
        rounded = w.bfloat16().float()
        w_err, w_norm = (w - rounded).norm(dim=-1), rounded.norm(dim=-1)
        accumulate = w.shape[1] * 2.0 ** -24 * w_norm * self.u_max
        return (w_err * self.u_max + w_norm * self.u_err + accumulate) * 1.001 + 2.0 ** -8 * scale + 1e-6

    def top(self, w: torch.Tensor, logits: torch.Tensor, block_max: torch.Tensor, lse: torch.Tensor, k: int):
        """(top logits [n, k] fp32, ids [n, k], lse [n] fp32, covered [n] bool) from bf16 `logits` of w [n, d]."""
        cand_bf, cand = block_topk(logits, block_max, self.c)  # [n, c], largest first
        rows = self.unembed.index_select(0, cand.reshape(-1)).view(*cand.shape, -1)  # [n, c, d] (3× faster than [])
        exact = torch.bmm(rows, w[:, :, None]).squeeze(-1)  # [n, c] fp32 logits of the candidates
        values, j = exact.topk(k, dim=-1)
        ids = cand.gather(1, j)
        floor = cand_bf[:, -1].float()  # every other token's bf16 logit is at most this
        covered = values[:, -1] > floor + self.bound(w, torch.maximum(floor.abs(), values[:, -1].abs()))
        m = block_max.amax(-1)
        inside_bf = (cand_bf.float() - m[:, None]).exp().sum(-1)
        inside = (exact - m[:, None]).exp().sum(-1)
        rest = ((lse - m).exp() - inside_bf).clamp(min=0)
        return values, ids, m + (rest + inside).log(), covered


@torch.inference_mode()
def lm_head_map(model: interp.Model, layers: Sequence[int] | None = None, options: LMHeadOptions | None = None,
                *, progress: bool = False) -> LMHeadMap:
    """Decode every neuron of `layers` (default all) in every direction of `options`."""
    opts = options or LMHeadOptions()
    a = model.adapter
    layers = list(range(a.n_layers)) if layers is None else [int(l) for l in layers]
    for l in layers:
        a.layer(l)  # range check, one clear error
    unembed = a.unembed().detach().float()  # [vocab, d_model]
    vocab = unembed.shape[0]
    k = min(opts.k, vocab)
    low = opts.dtype == "bfloat16"
    step = min(opts.chunk, BF16_CHUNK) if low else opts.chunk
    dec = _Decoder(unembed.T, min(step, a.d_mlp), torch.bfloat16 if low else torch.float32)
    exact = None  # bfloat16: an fp32 decoder, made when a neuron is not covered
    rerank = _Rerank(unembed, min(opts.n_candidates, vocab)) if low else None
    norm_weight = a.final_norm_weight().detach() if opts.final_norm else None
    out = LMHeadMap(layers=layers, d_mlp=a.d_mlp, vocab=vocab, options=opts)
    bar = _progress(len(opts.directions) * len(layers) * a.d_mlp, progress)
    for d in opts.directions:
        shape = (len(layers), a.d_mlp)
        top_ids = torch.empty(*shape, k, dtype=torch.int64)
        top_logits = torch.empty(*shape, k)
        lse_all = torch.empty(*shape)
        recomputed = torch.zeros(*shape, dtype=torch.bool)
        index = _Index(vocab, min(opts.index_k, len(layers) * a.d_mlp), dec.buffer.device) if opts.index_k else None
        for i, l in enumerate(layers):
            w = prepare(neuron_directions(model, l, d).detach(), norm_weight, opts.unit)
            for s in range(0, a.d_mlp, step):
                ws = w[s:s + step]
                logits = dec.logits(ws)
                n = logits.shape[0]
                block_max, lse = row_stats(logits)
                if low:
                    tl, ti, lse, covered = rerank.top(ws, logits, block_max, lse, k)
                    if not covered.all():  # decode these neurons again in fp32
                        exact = exact or _Decoder(unembed.T, min(step, a.d_mlp))
                        redo = (~covered).nonzero().squeeze(-1)
                        exact_logits = exact.logits(ws[redo])
                        bm, lse[redo] = row_stats(exact_logits)
                        tl[redo], ti[redo] = block_topk(exact_logits, bm, k)
                        recomputed[i, s + redo.cpu()] = True
                else:
                    tl, ti = block_topk(logits, block_max, k)
                top_logits[i, s:s + n], top_ids[i, s:s + n], lse_all[i, s:s + n] = tl.cpu(), ti.cpu(), lse.cpu()
                if index is not None:  # bfloat16: the index ranks by the bf16 logits
                    index.update(logits[:, :vocab].float().sub_(lse[:, None]), i * a.d_mlp + s)
                bar.update(n)
        out.tensors[f"{d}.top_ids"] = top_ids
        out.tensors[f"{d}.top_logits"] = top_logits
        out.tensors[f"{d}.top_probs"] = (top_logits - lse_all[..., None]).exp()
        out.tensors[f"{d}.lse"] = lse_all
        if low:
            out.tensors[f"{d}.recomputed"] = recomputed
        if index is not None:
            neurons, probs = index.result()
            out.tensors[f"{d}.index_neurons"], out.tensors[f"{d}.index_probs"] = neurons.cpu(), probs.cpu()
    bar.close()
    return out


@torch.inference_mode()
def concept_neurons(model: interp.Model, token_ids: Sequence[int], lse: torch.Tensor, layers: Sequence[int], *,
                    direction: str = "write", final_norm: bool = True, unit: bool = False,
                    k: int = 20) -> list[tuple[int, int, float]]:
    """All neurons of `layers` ranked by p(token) = exp(w · u_token − lse), exactly (METHODS.md §B step 4).

    `lse` [len(layers), d_mlp] is the map's log-sum-exp for `direction` (decoded with
    the same options), so this is one [d_mlp, d_model] @ [d_model, n_ids] product per
    layer, not a second pass over the vocabulary. p is summed over `token_ids`.
    Returns [(layer, neuron, p)], best first.
    """
    a = model.adapter
    if lse.shape != (len(layers), a.d_mlp):
        raise InterpError(f"lse has shape {tuple(lse.shape)}; expected ({len(layers)}, {a.d_mlp}) for these layers")
    u = a.unembed().detach().float()[list(token_ids)].T  # [d_model, n_ids]
    norm_weight = a.final_norm_weight().detach() if final_norm else None
    probs = torch.cat([(prepare(neuron_directions(model, l, direction).detach(), norm_weight, unit) @ u
                        - lse[i, :, None].to(u.device)).exp().sum(-1).cpu() for i, l in enumerate(layers)])
    p, flat = probs.topk(min(k, probs.numel()))
    return [(layers[f // a.d_mlp], f % a.d_mlp, float(v)) for f, v in zip(flat.tolist(), p.tolist())]


def map_concept_neurons(model: interp.Model, lm_map: LMHeadMap, token_ids: Sequence[int], *,
                        direction: str = "write", k: int = 20) -> list[tuple[int, int, float]]:
    """`concept_neurons` over a map's layers, with the map's options."""
    o = lm_map.options
    return concept_neurons(model, token_ids, lm_map.get(direction, "lse"), lm_map.layers, direction=direction,
                           final_norm=o.final_norm, unit=o.unit, k=k)


def brute_force_top(model: interp.Model, layer: int, neuron: int, direction: str = "write", *,
                    final_norm: bool = True, unit: bool = False, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """One neuron the slow, obvious way: softmax(W_U @ w), top-k → (ids [k], probs [k]). For checks."""
    a = model.adapter
    w = neuron_directions(model, layer, direction)[neuron].detach().float()
    if final_norm:
        w = w * a.final_norm_weight().detach().float()
    if unit:
        w = w / w.norm()
    probs = torch.softmax(a.unembed().detach().float() @ w, dim=-1)
    p, ids = probs.topk(k)
    return ids, p


def _progress(total: int, on: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="lm-head map", unit="neuron", disable=not on)
