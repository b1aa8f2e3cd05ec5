"""Neurons a VLM shares with its LLM (Cui et al. 2026; METHODS.md §C steps 1–3).

Per sample (one forward pass, batch 1) and text-backbone layer, a score for every unit of
six modules (Llama/Qwen-style layers with separate projections):

- "up": the FFN neurons, s_i = Σ_t |up_proj(x)_{t,i}| (rows of up_proj and gate_proj,
  columns of down_proj);
- "q", "k": each query / key dimension (h, j): the summed squared change of the attention
  probabilities Σ (softmax(S − q_j k_jᵀ/√d) − softmax(S))² when that dimension's term is
  removed from QKᵀ (causal; on the projections before rotary embedding, so that a
  dimension is one row of q_proj / k_proj). A key dimension of a grouped (GQA) head sums
  the change over the query heads that read it;
- "v": Σ_t |v_proj(x)_{t,i}|; "o": Σ_t |z_{t,i}|, z the per-head attention output (o_proj's
  input, its columns).

The top `ratio` of each module in each layer is kept per sample and intersected across
samples → one set per model. Shared = LLM set ∩ VLM set; overlap = |∩| / |VLM set|,
against the overlap two random sets of the same sizes would have (|LLM set| / width).

Quirks of the public code, each behind a switch (off = fixed): `swap_ratios` (the FFN and
attention keep counts swapped in its Llama paths), `pool_layers` (indices pooled across
layers before intersecting), `gqa_quirk` (k/v units chosen in query space and mapped to
k_proj / v_proj rows by i // 4, see `kv_rows`; `beta_quirk` is SNRF's, steering/snrf.py).

With `gqa_quirk` the k and v sets are made as the public code makes them: its key score is
its query score (the same vector, one entry per query-head dimension h·d_head + j) and its
value score is its o score (Σ_t |z|), so the k and v sets live in query space (the q and o
sets); they are intersected across samples (and between the two models, `shared_sets`) in
query space and only then mapped to rows with i // 4 — whatever the group size — dropping
rows past k_proj's width. The right row of query dimension (h, j) is (h // group)·d_head + j.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

import interp
from interp.errors import InterpError
from interp.paper import PaperSettings, differs

MODULES = ("q", "k", "v", "o", "up")
ATTENTION = ("q", "k", "v", "o")


class SharedNeuronsError(InterpError):
    """Models or inputs the shared-neuron probe cannot use."""


@dataclass
class SharedSettings(PaperSettings):
    ratio_ffn: float = 0.3  # the paper: 0.3 for Llama-family models, 0.1 for Qwen
    ratio_attn: float = 0.3
    modules: tuple[str, ...] = MODULES
    swap_ratios: bool = differs(  # public-code quirk: FFN and attention keep counts swapped
        False, paper=True, why="a bug in the public code's Llama paths (the paper's numbers were made with it)",
        effect="none at equal ratios (the default 0.3 / 0.3: identical sets on the reduced VLM testbed); with FFN "
        "0.3 / attention 0.1 it keeps 0.1 of the FFN (shared FFN units 5,570 → 1,802 over 30 layers) and 0.3 of "
        "attention (shared q units 1,249 → 3,457) (reduced testbed, 30 samples)")
    pool_layers: bool = differs(  # public-code quirk: pool indices across layers before intersecting
        False, paper=True, why="the public code pools indices across layers before intersecting; the method "
        "intersects per layer",
        effect="reduced VLM testbed, 30 samples: the pooled sets hold nearly every unit (575 of 576 q units a "
        "layer), so the models share every kept unit (overlap 1.00, random sets also 1.00; intersected per layer, "
        "module means 0.74–0.93 against 0.21–0.28); SNRF β = 0.5 on them: image products 16 % against 12 % (base "
        "9 %; 100 questions)")
    gqa_quirk: bool = differs(  # public-code quirk: k/v units in query space, mapped to rows by i // 4
        False, paper=True, why="the public code picks k/v units by query dimension i = h·d_head + j and maps them "
        "to k_proj / v_proj rows by i // 4 whatever the group size; the row that dimension reads is "
        "(h // group)·d_head + j",
        effect="reduced VLM testbed (9 query heads, 3 kv heads, 30 samples): shared k rows 1,206 → 2,428 and v "
        "rows 714 → 1,778 over 30 layers; overlap k 0.96, v 0.89 against random sets 0.49, 0.46 (fixed: 0.93, "
        "0.77 against 0.28, 0.21); rows 144–191 of each layer's 192 can never be chosen; SNRF β = 0.5: the same "
        "held-out accuracy (products 12 %, 100 questions)")


def kv_rows(mask: torch.Tensor, n_heads: int, n_kv: int, d_head: int, quirk: bool = False) -> torch.Tensor:
    """A set of query-space units (bool [n_heads·d_head]) → the k_proj / v_proj rows they read (bool
    [n_kv·d_head]): (h // group)·d_head + j for unit h·d_head + j, or with `quirk` the public code's i // 4
    (rows past the width dropped, as it drops them)."""
    width = n_kv * d_head
    if mask.numel() != n_heads * d_head:
        raise SharedNeuronsError(f"a query-space set has {n_heads * d_head} units, not {mask.numel()}")
    if quirk:
        return _rows_by_4(mask, width)
    idx = mask.nonzero().flatten()
    out = torch.zeros(width, dtype=torch.bool)
    out[(idx // d_head) // (n_heads // n_kv) * d_head + idx % d_head] = True
    return out


def _rows_by_4(mask: torch.Tensor, width: int) -> torch.Tensor:
    rows = mask.nonzero().flatten() // 4
    out = torch.zeros(width, dtype=torch.bool)
    out[rows[rows < width]] = True
    return out


QUIRK_SOURCES = {"k": "q", "v": "o"}  # gqa_quirk: the public code's k score is its q score, its v score its o score


def _layout(model: interp.Model) -> dict[str, int]:
    a = model.adapter
    attn = a.attn(0)
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(attn, name):
            raise SharedNeuronsError(f"{model.name}: attention without separate {name} ({a.family.name}); the "
                                     "shared-neuron probe supports Llama/Qwen/Gemma-style layers")
    n_kv = attn.k_proj.out_features // a.d_head
    return {"q": a.n_heads * a.d_head, "k": n_kv * a.d_head, "v": n_kv * a.d_head, "o": a.n_heads * a.d_head,
            "up": a.d_mlp, "n_kv": n_kv}


def _qk_scores(q: torch.Tensor, k: torch.Tensor, n_heads: int, n_kv: int, d_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, H·d], k [T, KV·d] → per-dimension attention-probability change: q [H·d], k [KV·d]."""
    T = q.shape[0]
    qh = q.view(T, n_heads, d_head).transpose(0, 1)  # [H, T, d]
    kh = k.view(T, n_kv, d_head).transpose(0, 1).repeat_interleave(n_heads // n_kv, dim=0)  # [H, T, d]
    scale = 1.0 / math.sqrt(d_head)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    scores = (qh @ kh.transpose(1, 2)) * scale  # [H, T, T]
    probs = scores.masked_fill(~causal, -torch.inf).softmax(-1)
    terms = torch.einsum("hqd,hkd->hdqk", qh, kh) * scale  # [H, d, T, T]: dimension j's term
    removed = (scores[:, None] - terms).masked_fill(~causal, -torch.inf).softmax(-1)
    change = ((removed - probs[:, None]) ** 2).sum((-1, -2))  # [H, d]
    per_kv = change.view(n_kv, n_heads // n_kv, d_head).sum(1)  # [KV, d]
    return change.reshape(-1), per_kv.reshape(-1)


@torch.inference_mode()
def sample_scores(model: interp.Model, inputs: Mapping[str, torch.Tensor],
                  layers: Sequence[int] | None = None) -> dict[str, dict[int, torch.Tensor]]:
    """{module: {layer: scores [width]}} for one sample (forward kwargs with batch size 1)."""
    a = model.adapter
    layout = _layout(model)
    layers = list(range(a.n_layers)) if layers is None else list(layers)
    grabbed: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def keep(key, pre=False):
        if pre:
            return lambda mod, args: grabbed.__setitem__(key, args[0][0].detach().float())
        return lambda mod, args, out: grabbed.__setitem__(key, out[0].detach().float())

    try:
        for l in layers:
            attn, mlp = a.attn(l), a.mlp(l)
            handles += [attn.q_proj.register_forward_hook(keep(("q", l))),
                        attn.k_proj.register_forward_hook(keep(("k", l))),
                        attn.v_proj.register_forward_hook(keep(("v", l))),
                        attn.o_proj.register_forward_pre_hook(keep(("o", l), pre=True)),
                        getattr(mlp, a.family.up).register_forward_hook(keep(("up", l)))]
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        if batch["input_ids"].shape[0] != 1:
            raise SharedNeuronsError("score one sample at a time (batch size 1)")
        model.hf(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, dict[int, torch.Tensor]] = {m: {} for m in MODULES}
    for l in layers:
        out["up"][l] = grabbed[("up", l)].abs().sum(0)[-a.d_mlp:]
        out["v"][l] = grabbed[("v", l)].abs().sum(0)
        out["o"][l] = grabbed[("o", l)].abs().sum(0)
        out["q"][l], out["k"][l] = _qk_scores(grabbed[("q", l)], grabbed[("k", l)], a.n_heads, layout["n_kv"], a.d_head)
    return out


def text_inputs(model: interp.Model, prompts: Sequence[str], max_length: int = 256) -> list[dict]:
    """Forward kwargs, one prompt each (≤ `max_length` tokens)."""
    return [dict(model.tokenizer(p, return_tensors="pt", truncation=True, max_length=max_length)) for p in prompts]


# where a prompt gets its image when it does not name the processor's image token itself
IMAGE_PLACEHOLDERS = {"llava": "<image>\n", "llava_next": "<image>\n",
                      "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
                      "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>"}


class _QwenImageTokens:
    """Qwen2-VL's processor for images alone, from the folder's own image processor and tokenizer: transformers'
    Qwen2VLProcessor also builds a video processor, which needs torchvision (absent here). Each image token is
    expanded to the image's (t·h·w) / merge_size² patches, as Qwen2VLProcessor does."""

    image_token = "<|image_pad|>"

    def __init__(self, image_processor, tokenizer):
        self.image_processor, self.tokenizer = image_processor, tokenizer

    def __call__(self, text: str, images, return_tensors: str = "pt") -> dict:
        pixels = dict(self.image_processor(images=[images], return_tensors=return_tensors))
        n = int(pixels["image_grid_thw"][0].prod()) // self.image_processor.merge_size ** 2
        if text.count(self.image_token) != 1:
            raise SharedNeuronsError(f"a Qwen2-VL prompt takes one image here: one {self.image_token}")
        tokens = dict(self.tokenizer(text.replace(self.image_token, self.image_token * n),
                                     return_tensors=return_tensors))
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        tokens["mm_token_type_ids"] = (tokens["input_ids"] == image_id).to(torch.int32)  # 1: image, 0: text (M-RoPE)
        return {**tokens, **pixels}


def image_processor_for(model: interp.Model):
    """The VLM's own processor (`transformers.AutoProcessor` of its folder) for Llava and Qwen2-VL families."""
    from transformers import AutoImageProcessor, AutoProcessor

    kind = getattr(model.hf.config, "model_type", "")
    if kind not in IMAGE_PLACEHOLDERS:
        raise SharedNeuronsError(f"{model.name}: images go to Llava and Qwen2-VL models here "
                                 f"({', '.join(IMAGE_PLACEHOLDERS)}), not {kind or type(model.hf).__name__}")
    folder = str(model.source).removeprefix("hub:")
    try:
        return AutoProcessor.from_pretrained(folder)
    except Exception as exc:  # transformers raises many kinds here (missing files, missing backends)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        if kind.startswith("qwen2"):
            try:
                return _QwenImageTokens(AutoImageProcessor.from_pretrained(folder), model.tokenizer)
            except Exception:
                pass
        raise SharedNeuronsError(f"{model.name}: no image processor in {folder} ({first})") from None


def image_inputs(model: interp.Model, prompts: Sequence[str], images: Sequence, processor=None) -> list[dict]:
    """Forward kwargs for a VLM, one (prompt, image) pair each (PIL images), through the model's own processor
    (a prompt without the image token gets the image first: `IMAGE_PLACEHOLDERS`). Not truncated: cutting the
    text would cut the image's tokens too."""
    if len(prompts) != len(images):
        raise SharedNeuronsError(f"{len(prompts)} prompts for {len(images)} images")
    processor = processor or image_processor_for(model)
    token = getattr(processor, "image_token", None) or IMAGE_PLACEHOLDERS[model.hf.config.model_type].strip()
    place = IMAGE_PLACEHOLDERS[model.hf.config.model_type]
    dtype = next(model.hf.parameters()).dtype
    out = []
    for prompt, image in zip(prompts, images):
        text = prompt if token in prompt else place + prompt
        batch = dict(processor(text=text, images=image, return_tensors="pt"))
        out.append({k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()})
    return out


@dataclass
class NeuronSets:
    """Per module and layer, the units kept in every sample: {module: {layer: bool [width]}}."""

    model: str
    sets: dict[str, dict[int, torch.Tensor]]
    n_samples: int
    # gqa_quirk: the k / v sets in query space before the i // 4 mapping ({module: {layer: bool [H·d_head]}}),
    # which `shared_sets` intersects before mapping (as the public code does); empty without the quirk
    query_space: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    kv_width: int = 0

    def indices(self, module: str, layer: int) -> torch.Tensor:
        return self.sets[module][layer].nonzero().flatten()


def neuron_sets(model: interp.Model, samples: Sequence[Mapping[str, torch.Tensor]],
                settings: SharedSettings | None = None, layers: Sequence[int] | None = None,
                progress: bool = False) -> NeuronSets:
    """The top-`ratio` units of each module per layer, intersected across `samples`."""
    from tqdm.auto import tqdm

    settings = settings or SharedSettings()
    if not samples:
        raise SharedNeuronsError("no samples")
    ffn, attn = settings.ratio_ffn, settings.ratio_attn
    if settings.swap_ratios:
        ffn, attn = attn, ffn
    if not (0 < ffn <= 1 and 0 < attn <= 1):
        raise SharedNeuronsError("keep ratios must be in (0, 1]")
    quirk = settings.gqa_quirk and any(m in settings.modules for m in QUIRK_SOURCES)
    wanted = set(settings.modules) | ({QUIRK_SOURCES[m] for m in QUIRK_SOURCES if m in settings.modules} if quirk
                                      else set())
    sets: dict[str, dict[int, torch.Tensor]] = {}
    for sample in tqdm(samples, desc=f"scoring {model.name}", disable=not progress):
        for module, by_layer in sample_scores(model, sample, layers).items():
            if module not in wanted or (quirk and module in QUIRK_SOURCES):
                continue
            ratio = ffn if module == "up" else attn
            for l, s in by_layer.items():
                top = torch.zeros_like(s, dtype=torch.bool)
                top[s.topk(max(1, int(round(ratio * s.numel())))).indices] = True
                prev = sets.setdefault(module, {}).get(l)
                sets[module][l] = top if prev is None else prev & top
    if settings.pool_layers:
        for module, by_layer in sets.items():
            pooled = torch.stack(list(by_layer.values())).any(0)
            sets[module] = {l: pooled.clone() for l in by_layer}
    if not quirk:
        return NeuronSets(model.name, sets, len(samples))
    a, n_kv = model.adapter, _layout(model)["n_kv"]
    query_space = {m: {l: mask.clone() for l, mask in sets[src].items()}
                   for m, src in QUIRK_SOURCES.items() if m in settings.modules}
    for m, by_layer in query_space.items():
        sets[m] = {l: kv_rows(mask, a.n_heads, n_kv, a.d_head, quirk=True) for l, mask in by_layer.items()}
    sets = {m: by_layer for m, by_layer in sets.items() if m in settings.modules}
    return NeuronSets(model.name, sets, len(samples), query_space, n_kv * a.d_head)


@dataclass
class Overlap:
    """Per module: per-layer counts and overlaps of two models' sets."""

    module: str
    layers: list[int]
    n_llm: list[int]
    n_vlm: list[int]
    n_shared: list[int]
    width: int
    random_overlap: list[float] = field(default_factory=list)  # a random set of |LLM| units vs the VLM set

    @property
    def overlap(self) -> list[float]:
        return [s / v if v else 0.0 for s, v in zip(self.n_shared, self.n_vlm)]

    @property
    def expected(self) -> list[float]:
        """The overlap two random sets of the same sizes have on average: |LLM set| / width."""
        return [n / self.width for n in self.n_llm]


def overlap(llm: NeuronSets, vlm: NeuronSets, seed: int = 0) -> dict[str, Overlap]:
    """{module: Overlap} of the LLM's and the VLM's sets, layer by layer."""
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for module in vlm.sets:
        if module not in llm.sets:
            continue
        layers = sorted(set(vlm.sets[module]) & set(llm.sets[module]))
        o = Overlap(module, layers, [], [], [], int(next(iter(vlm.sets[module].values())).numel()))
        for l in layers:
            a, b = llm.sets[module][l], vlm.sets[module][l]
            if a.numel() != b.numel():
                raise SharedNeuronsError(f"{module} layer {l}: the models differ in width ({a.numel()} vs {b.numel()})")
            o.n_llm.append(int(a.sum()))
            o.n_vlm.append(int(b.sum()))
            o.n_shared.append(int((a & b).sum()))
            rand = torch.zeros_like(a)
            rand[torch.randperm(a.numel(), generator=rng)[: int(a.sum())]] = True
            o.random_overlap.append(float((rand & b).sum()) / max(int(b.sum()), 1))
        out[module] = o
    return out


def shared_sets(llm: NeuronSets, vlm: NeuronSets) -> dict[str, dict[int, torch.Tensor]]:
    """{module: {layer: bool [width]}}: LLM set ∩ VLM set (gqa_quirk: k / v intersected in query space, then
    mapped by i // 4, as the public code does)."""
    out = {m: {l: llm.sets[m][l] & vlm.sets[m][l] for l in vlm.sets[m] if l in llm.sets.get(m, {})}
           for m in vlm.sets if m in llm.sets}
    for m in set(vlm.query_space) & set(llm.query_space):
        for l in out.get(m, {}):
            out[m][l] = _rows_by_4(llm.query_space[m][l] & vlm.query_space[m][l], vlm.kv_width)
    return out


def overlap_table(overlaps: Mapping[str, Overlap]) -> str:
    mods = list(overlaps)
    rows = [f"{'layer':>5s} " + " ".join(f"{m + ' shared/VLM':>16s} {'random':>7s}" for m in mods)]
    for i, l in enumerate(next(iter(overlaps.values())).layers):
        rows.append(f"{l:5d} " + " ".join(f"{overlaps[m].n_shared[i]:6d}/{overlaps[m].n_vlm[i]:<5d}"
                                          f"{overlaps[m].overlap[i]:5.2f} {overlaps[m].random_overlap[i]:7.2f}"
                                          for m in mods))
    rows.append("mean  " + " ".join(f"{np.mean(overlaps[m].overlap):16.2f} {np.mean(overlaps[m].random_overlap):7.2f}"
                                   for m in mods))
    return "\n".join(rows)


def overlap_png(overlaps: Mapping[str, Overlap]) -> bytes:
    """Per module: overlap per layer against the random-set overlap."""
    from interp.plotting import png, subplots

    fig, axes = subplots(nrows=1, ncols=len(overlaps), figsize=(3.2 * len(overlaps), 3), dpi=100, squeeze=False)
    for ax, (m, o) in zip(axes[0], overlaps.items()):
        ax.plot(o.layers, o.overlap, marker="o", ms=3, label="LLM ∩ VLM")
        ax.plot(o.layers, o.random_overlap, color="gray", linestyle="--", label="random sets")
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("overlap / |VLM set|")
    axes[0][0].legend(fontsize=7)
    return png(fig)
