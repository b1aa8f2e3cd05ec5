"""A neuron-card index as a self-contained static site (issue 29): `write_site(index, out, model=None)`.

The site opens from the file system (browsers refuse `fetch()` there) and from a Space's static folder, so every
data file is a script that hands its JSON to the page (`CARDS.got(name, data)`), loaded by a `<script>` tag when
first needed; the first paint waits only for `data/meta.js`:

| file | holds | loaded |
|---|---|---|
| `index.html` | the page: search box, layer strip, result list, card (inline CSS and JS) | at once |
| `data/meta.js` | model, layers, widths, groups, languages, labels; per-layer summaries for the strip | at once |
| `data/layer-L.js` | every card of layer L, columnar (`[field][neuron]`) | when a card or list of L opens |
| `data/vocab.js` | the token strings | at the first card or token search |
| `data/tokens-S.js` | token id → neurons whose write list has it, best first (ids ≡ S mod `SHARDS`) | by search |
| `data/lists.js` | neurons per language (class, rate) and per label; words of MILAN descriptions → neurons | by search |
| `data/docs.js` | the exemplars' documents as token strings (with a model's tokenizer) or texts | at the first card |

With the model (its tokenizer and MLP write weights), exemplars are split into tokens so the page highlights the
one the activation was read at, and each card links its neighbours: the `NEIGHBOURS` neurons of the same layer
whose write directions (columns of down_proj) have the highest cosine with its own. Searches rank as
`CardIndex.search` does (token: the token's probability in the write list; words: one point per word found in a
description or as a write token; language: specific neurons first, then by rate; labels: HFTP labels and
language classes).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from interp.cache import atomic_path
from interp.errors import AtlasError
from interp.language_id import LANGUAGE_NAMES

from .cards import FOXP2_MEMBERS, HFTP_LABELS, LANGUAGE_CLASSES, CardIndex

SHARDS = 32  # token-search shards: a search loads the shards of its token ids only
NEIGHBOURS = 5
EXEMPLARS = 5
SPARK_BINS = 64  # HFTP sparkline points (max-pooled), each a digit 0-9


@dataclass
class SiteSummary:
    """What `write_site` wrote: the folder, its size in bytes, its files, and how many cards."""

    folder: Path
    bytes: int
    files: int
    cards: int


def _round(t: torch.Tensor, digits: int = 4) -> list:
    scale = 10.0 ** digits
    return (torch.round(t.double() * scale) / scale).tolist()


def _script(name: str, data) -> str:
    return f"CARDS.got({json.dumps(name)},{json.dumps(data, ensure_ascii=False, separators=(',', ':'))});\n"


def _spark(spectrum: torch.Tensor) -> list[str]:
    """[F, W] amplitudes → per neuron a string of SPARK_BINS digits (max-pooled bins scaled to its own maximum)."""
    f, w = spectrum.shape
    pool = max(1, -(-f // SPARK_BINS))
    pad = torch.nn.functional.pad(spectrum.float().T, (0, pool * -(-f // pool) - f), value=float("-inf"))
    pooled = pad.reshape(w, -1, pool).amax(2)  # [W, bins]
    lo, hi = pooled.amin(1, keepdim=True), pooled.amax(1, keepdim=True)
    digits = ((pooled - lo) / (hi - lo).clamp(min=1e-12) * 9).round().to(torch.int64)
    table = "0123456789"
    return ["".join(table[d] for d in row) for row in digits.tolist()]


def _neighbours(write: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """write [d_model, W] → the k most similar other columns by cosine: (ids [W, k], cosines [W, k])."""
    unit = torch.nn.functional.normalize(write.float(), dim=0)
    sim = unit.T @ unit
    sim.fill_diagonal_(-2.0)
    top = sim.topk(min(k, sim.shape[0] - 1), dim=1)
    return top.indices, top.values


def _layer_data(index: CardIndex, layer: int, write: torch.Tensor | None) -> dict:
    """Every card of one layer, columnar: lists over neurons (or [row][neuron] for per-group / per-language)."""
    get = lambda name: index._get(layer, name)  # noqa: E731
    p = index.atlas.params
    d: dict = {"layer": layer, "width": int(p["widths"][str(layer)])}
    if get("stats.frequency") is not None:
        d["freq"], d["mean"], d["std"] = (_round(get(f"stats.{n}")) for n in ("frequency", "mean", "std"))
        k = min(EXEMPLARS, get("stats.topk_doc").shape[1])
        d["ex"] = torch.stack([get("stats.topk_doc")[:, :k].float(), get("stats.topk_pos")[:, :k].float(),
                               get("stats.topk_values")[:, :k].float()], 2).tolist()
        d["ex"] = [[[int(doc), int(pos), round(v, 3)] for doc, pos, v in row if doc >= 0] for row in d["ex"]]
    lm = {}
    for direction in p.get("directions", []):
        if get(f"lm.{direction}.ids") is not None:
            lm[direction] = {"ids": get(f"lm.{direction}.ids").tolist(), "p": _round(get(f"lm.{direction}.probs"))}
    if lm:
        d["lm"] = lm
    if get("lang.class") is not None:
        d["lang"] = {"class": get("lang.class").tolist(), "rate": _round(get("lang.rate")),
                     "mask": get("lang.mask").to(torch.int8).tolist()}
    if get("hftp.label") is not None:
        d["hftp"] = {"label": get("hftp.label").tolist(), "z": [_round(get(f"hftp.z.{n}"), 2)
                                                                  for n in ("sentence", "phrase")]}
        if get("hftp.spectrum") is not None:
            d["hftp"]["spark"] = _spark(get("hftp.spectrum"))
            d["hftp"]["bins"] = get("hftp.spectrum").shape[0]
    if get("foxp2.member") is not None:
        d["foxp2"] = {"member": get("foxp2.member").tolist(), "diff": _round(get("foxp2.mean_diff"), 3)}
    if get("shared.shared") is not None:
        d["shared"] = [get(f"shared.{n}").to(torch.int8).tolist() for n in ("llm", "vlm", "shared")]
    if get("brain.loading") is not None:
        d["brain"] = _round(get("brain.loading"))
    described = p.get("milan", {}).get(str(layer), {})
    if described:
        d["milan"] = {unit: [v["text"], v.get("pmi")] for unit, v in described.items()}
    if write is not None:
        ids, cos = _neighbours(write, NEIGHBOURS)
        d["near"] = {"ids": ids.tolist(), "cos": _round(cos, 3)}
    return d


def _strip(index: CardIndex, layer: int) -> dict:
    """One cell of the layer strip: mean firing rate and counts of each label at this layer."""
    get = lambda name: index._get(layer, name)  # noqa: E731
    cell: dict = {"layer": layer}
    if get("stats.frequency") is not None:
        cell["rate"] = round(float(get("stats.frequency").float().mean()), 5)
    if get("lang.class") is not None:
        cls = get("lang.class")
        cell.update({name: int((cls == i).sum()) for i, name in enumerate(LANGUAGE_CLASSES) if name})
    if get("hftp.label") is not None:
        cell["syntax"] = int((get("hftp.label") > 0).sum())
    cell["described"] = len(index.atlas.params.get("milan", {}).get(str(layer), {}))
    return cell


def _token_shards(index: CardIndex) -> list[dict[int, list]]:
    """Token id → [[layer, neuron, p]] over the write lists, best first, split by id mod SHARDS."""
    found: dict[int, list] = defaultdict(list)
    for layer in index.layers():
        ids, probs = index._get(layer, "lm.write.ids"), index._get(layer, "lm.write.probs")
        if ids is None:
            continue
        flat_ids, flat_p = ids.reshape(-1).tolist(), _round(probs.reshape(-1), 5)
        k = ids.shape[1]
        for j, (tok, prob) in enumerate(zip(flat_ids, flat_p)):
            found[tok].append([layer, j // k, prob])
    shards: list[dict[int, list]] = [{} for _ in range(SHARDS)]
    for tok, hits in found.items():
        best: dict[tuple[int, int], float] = {}
        for layer, n, prob in hits:
            best[(layer, n)] = max(prob, best.get((layer, n), 0.0))
        shards[tok % SHARDS][tok] = [[layer, n, q] for (layer, n), q in sorted(best.items(), key=lambda kv: -kv[1])]
    return shards


def _lists(index: CardIndex) -> dict:
    """Neurons per language ([[layer, neuron, class, rate]]), per label ([[layer, neuron]]), and description words
    → [[layer, neuron, pmi]]."""
    p = index.atlas.params
    langs: dict[str, list] = {lang: [] for lang in p.get("langs", [])}
    labels: dict[str, list] = defaultdict(list)
    words: dict[str, list] = defaultdict(list)
    for layer in index.layers():
        mask, cls, rate = (index._get(layer, n) for n in ("lang.mask", "lang.class", "lang.rate"))
        if mask is not None:
            for i, lang in enumerate(p["langs"]):
                for n in mask[i].nonzero().squeeze(1).tolist():
                    langs[lang].append([layer, n, int(cls[n]), round(float(rate[i, n]), 5)])
            for code, name in enumerate(LANGUAGE_CLASSES):
                if name:
                    labels[name] += [[layer, n] for n in (cls == code).nonzero().squeeze(1).tolist()]
        hftp = index._get(layer, "hftp.label")
        if hftp is not None:
            for code, name in enumerate(HFTP_LABELS):
                if name:
                    labels[name] += [[layer, n] for n in (hftp == code).nonzero().squeeze(1).tolist()]
        for unit, d in p.get("milan", {}).get(str(layer), {}).items():
            for word in sorted(set(re.findall(r"\w+", d["text"].lower()))):
                words[word].append([layer, int(unit), d.get("pmi") or 0.0])
    return {"langs": langs, "labels": dict(labels), "words": dict(words)}


def _documents(index: CardIndex, tokenizer) -> dict[int, list[str] | str]:
    """Each exemplar document as its token strings (tokenized as capture did), or its text without a tokenizer."""
    max_length = index.atlas.params.get("stats_max_length") or 512
    docs = {}
    for d in index.atlas.documents or []:
        if tokenizer is None:
            docs[d["index"]] = d["text"]
            continue
        ids = tokenizer(d["text"], truncation=True, max_length=max_length)["input_ids"]
        docs[d["index"]] = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)
    return docs


def _meta(index: CardIndex, with_model: bool) -> dict:
    p = index.atlas.params
    langs = p.get("langs", [])
    return {"model": index.atlas.model, "layers": index.layers(), "widths": p["widths"],
            "groups": p.get("groups") or [], "directions": p.get("directions", []), "langs": langs,
            "lang_names": {code: LANGUAGE_NAMES.get(code, code) for code in langs},
            "classes": list(LANGUAGE_CLASSES), "hftp_labels": list(HFTP_LABELS), "foxp2": list(FOXP2_MEMBERS),
            "foxp2_target": p.get("foxp2_target"), "hftp_rates": p.get("hftp_rates") or {},
            "brain_axes": p.get("brain_axes") or [], "sources": sorted(p.get("sources", {})), "shards": SHARDS, "neighbours": with_model,
            "tokenized": with_model, "strip": [_strip(index, layer) for layer in index.layers()]}


def write_site(index: CardIndex, out: str | Path, model=None) -> SiteSummary:
    """Write the static site for `index` into the folder `out` (replaced atomically). `model` (an `interp.Model`
    of the index's model) adds token-split exemplars and write-direction neighbours."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "index.html").exists())):
        raise AtlasError(f"{out} exists and is not a cards site; choose another --out")
    if model is not None and model.name != index.atlas.model:
        raise AtlasError(f"the model is {model.name!r} but the index is of {index.atlas.model!r}")
    page = resources.files("atlases").joinpath("cards_site.html").read_text(encoding="utf-8")
    with atomic_path(out, directory=True) as tmp:
        data = tmp / "data"
        data.mkdir()
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (data / "meta.js").write_text(_script("meta", _meta(index, model is not None)), encoding="utf-8")
        for layer in index.layers():
            write = model.adapter.write_weights(layer).detach() if model is not None else None
            (data / f"layer-{layer}.js").write_text(_script(f"layer-{layer}", _layer_data(index, layer, write)),
                                                    encoding="utf-8")
        (data / "vocab.js").write_text(_script("vocab", index.atlas.vocab or []), encoding="utf-8")
        for s, shard in enumerate(_token_shards(index)):
            (data / f"tokens-{s}.js").write_text(_script(f"tokens-{s}", shard), encoding="utf-8")
        (data / "lists.js").write_text(_script("lists", _lists(index)), encoding="utf-8")
        tokenizer = model.tokenizer if model is not None else None
        (data / "docs.js").write_text(_script("docs", _documents(index, tokenizer)), encoding="utf-8")
    files = [f for f in out.rglob("*") if f.is_file()]
    cards = sum(int(w) for w in index.atlas.params["widths"].values())
    return SiteSummary(out, sum(f.stat().st_size for f in files), len(files), cards)
