"""SNRF: shared-neuron low-rank fusion of an LLM's skill into a VLM (Cui et al. 2026; METHODS.md §C steps 4–5),
and activation amplification of the shared neurons.

SNRF, per text-backbone layer and module: ΔW = W_LLM − W_VLM, its truncated SVD of rank r
(fp32) ΔW_r = U_r Σ_r V_rᵀ, and W_VLM[S, :] += β ΔW_r[S, :] for q, k, v, up (rows: the
shared units of that module; gate_proj takes the up set's rows only when `gate=True`, off
as in the paper), W_VLM[:, S] += β ΔW_r[:, S] for o (the shared o units) and down (the
shared FFN neurons). As data: `LowRank(module, A = β U_r Σ_r, B = V_rᵀ, rows|cols = S)`
edits, applied at run time by the engine (reversible), or merged into the weights
(`merge`, `save_merged`: a new model folder).

Controls: the same with random units of the same counts (`random_like`), and the full
delta (every row, `full_delta_edits`). Public-code quirk behind a switch: `beta_quirk`
(its β was never applied, i.e. β = 1).

Amplification (`amplify`): `Scale` edits multiplying the shared FFN neurons
(`mlp.hook_post`) and shared o units (`attn.hook_z`) by α.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

import interp
from interp.errors import InterpError
from interp.paper import PaperSettings, differs

ROW_MODULES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "up": "up_proj"}
COL_MODULES = {"o": "o_proj", "down": "down_proj"}


class SnrfError(InterpError):
    """Models that do not pair up, or shared sets that do not fit them."""


@dataclass
class SnrfSettings(PaperSettings):
    rank: int | None = 4  # None: the full ΔW (no truncation)
    beta: float = 0.5
    modules: tuple[str, ...] = ("q", "k", "v", "o", "up", "down")
    gate: bool = False  # also gate_proj's rows with the up set (the paper leaves gate untouched)
    beta_quirk: bool = differs(  # public-code quirk: β never applied (β = 1)
        False, paper=True, why="the public code never applies β (a bug; the paper's numbers were made with it)",
        effect="β 0.5 → 1: image products 8.5 % → 15.0 % on the full VLM testbed (README's SNRF table, 200 "
        "questions), 12 % → 14 % on the reduced one (100 questions); recognition unchanged, sums −1 to −1.5 "
        "points")


def _module(model: interp.Model, layer: int, key: str) -> torch.nn.Linear:
    from interp.engine import resolve_module

    return resolve_module(model, _block_path(model, layer, key))


def _block_path(model: interp.Model, layer: int, key: str) -> str:
    f = model.adapter.family
    name = {"up": f"{f.mlp}.up_proj", "down": f"{f.mlp}.down_proj", "gate": f"{f.mlp}.gate_proj",
            "q": f"{f.attn}.q_proj", "k": f"{f.attn}.k_proj", "v": f"{f.attn}.v_proj", "o": f"{f.attn}.o_proj"}[key]
    return f"blocks.{layer}.{name}"


def low_rank(delta: torch.Tensor, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW [out, in] → (A [out, r], B [r, in]) with A B the best rank-r approximation (fp32 SVD)."""
    delta = delta.float()
    if rank is None:
        return delta, torch.eye(delta.shape[1])
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.numel())
    return u[:, :r] * s[:r], vh[:r]


def _units(shared: Mapping[str, Mapping[int, torch.Tensor]], key: str, layer: int) -> torch.Tensor | None:
    """Indices of the shared units a module's rows/cols use (down and gate: the FFN set "up")."""
    source = {"down": "up", "gate": "up"}.get(key, key)
    mask = shared.get(source, {}).get(layer)
    return None if mask is None else mask.nonzero().flatten()


def snrf_edits(vlm: interp.Model, llm: interp.Model, shared: Mapping[str, Mapping[int, torch.Tensor]],
               settings: SnrfSettings | None = None, layers: Sequence[int] | None = None) -> list[interp.LowRank]:
    """LowRank edits on the VLM's text backbone: β · rank-r(W_LLM − W_VLM) on the shared rows/columns
    (none for modules whose weights are equal)."""
    settings = settings or SnrfSettings()
    if vlm.adapter.n_layers != llm.adapter.n_layers:
        raise SnrfError(f"the text backbones differ in depth ({vlm.adapter.n_layers} vs {llm.adapter.n_layers} layers)")
    beta = 1.0 if settings.beta_quirk else settings.beta
    keys = list(settings.modules) + (["gate"] if settings.gate else [])
    layers = range(vlm.adapter.n_layers) if layers is None else layers
    edits = []
    for l in layers:
        for key in keys:
            units = _units(shared, key, l)
            if units is None or units.numel() == 0:
                continue
            w_vlm, w_llm = _module(vlm, l, key).weight, _module(llm, l, key).weight
            if w_vlm.shape != w_llm.shape:
                raise SnrfError(f"layer {l} {key}: weights differ in shape {tuple(w_vlm.shape)} vs {tuple(w_llm.shape)}")
            if torch.equal(w_vlm, w_llm):
                continue  # ΔW = 0: nothing to fuse (and no hook to pay for)
            a, b = low_rank(w_llm.detach() - w_vlm.detach(), settings.rank)
            where = {"cols": units} if key in COL_MODULES else {"rows": units}
            edits.append(interp.LowRank(_block_path(vlm, l, key), beta * a, b, **where))
    return edits


def full_delta_edits(vlm: interp.Model, llm: interp.Model, settings: SnrfSettings | None = None) -> list[interp.LowRank]:
    """The same rank-r β·ΔW on every row / column (no shared-neuron restriction)."""
    settings = settings or SnrfSettings()
    widths = {"q": vlm.adapter.attn(0).q_proj.out_features, "k": vlm.adapter.attn(0).k_proj.out_features,
              "v": vlm.adapter.attn(0).v_proj.out_features, "o": vlm.adapter.attn(0).o_proj.in_features,
              "up": vlm.adapter.d_mlp}
    everything = {m: {l: torch.ones(w, dtype=torch.bool) for l in range(vlm.adapter.n_layers)}
                  for m, w in widths.items()}
    return snrf_edits(vlm, llm, everything, settings)


def random_like(shared: Mapping[str, Mapping[int, torch.Tensor]], seed: int = 0) -> dict[str, dict[int, torch.Tensor]]:
    """Random units, the same count per module and layer as `shared`."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, dict[int, torch.Tensor]] = {}
    for m, by_layer in shared.items():
        for l, mask in by_layer.items():
            rand = torch.zeros_like(mask)
            rand[torch.randperm(mask.numel(), generator=g)[: int(mask.sum())]] = True
            out.setdefault(m, {})[l] = rand
    return out


@torch.no_grad()
def merge(model: interp.Model, edits: Sequence[interp.LowRank]) -> None:
    """Add each edit's ΔW to its module's weight, in place (permanent; the runtime edit is the reversible form)."""
    from interp.engine import resolve_module

    for e in edits:
        w = resolve_module(model, e.module).weight
        w += e.delta().to(w)


def save_merged(model: interp.Model, edits: Sequence[interp.LowRank], folder: str | Path) -> Path:
    """A new model folder: `model` with `edits` merged (the model in memory is left unchanged)."""
    import copy

    from interp.cache import atomic_path

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise SnrfError(f"{folder} exists and is not empty; choose a new folder for the merged model")
    merged = interp.Model(hf=copy.deepcopy(model.hf), tokenizer=model.tokenizer, adapter=None, name=model.name,
                          source=model.source)
    merged.adapter = interp.adapters.adapter_for(merged.hf)
    merge(merged, edits)
    with atomic_path(folder, directory=True) as tmp:
        merged.hf.save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
    return folder


def amplify(shared: Mapping[str, Mapping[int, torch.Tensor]], alpha: float) -> list[interp.Scale]:
    """Scale edits: shared FFN neurons (mlp.hook_post) and shared o units (attn.hook_z) × α."""
    edits = []
    for module, site in (("up", "mlp.hook_post"), ("o", "attn.hook_z")):
        for l, mask in shared.get(module, {}).items():
            idx = mask.nonzero().flatten()
            if idx.numel():
                edits.append(interp.Scale(f"blocks.{l}.{site}", idx, float(alpha)))
    return edits
