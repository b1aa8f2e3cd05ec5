"""Neuron cards: one index that joins every analysis of a model's MLP neurons (issue 29).

The index is an atlas itself (method "neuron-cards": same files, checksums and atomic writes) with one site per
layer, `blocks.L.mlp.hook_post` (language neurons, measured at `mlp.hook_pre`, are the same neurons), and each
analysis's per-neuron fields under a prefix that names it; `W` is d_mlp, `G` the stats groups, `K` languages:

| analysis (atlas method) | tensors per layer | params |
|---|---|---|
| activation-statistics | `stats.frequency`, `stats.mean`, `stats.std` [G, W]; `stats.topk_values`, `stats.topk_doc`, `stats.topk_pos` [W, k] | `groups`; documents.jsonl |
| lm-head | `lm.{direction}.ids`, `lm.{direction}.probs` [W, k] | `directions`; vocab.json |
| language-neurons/* | `lang.class` [W] int8 (`LANGUAGE_CLASSES`), `lang.mask` [K, W] (the neuron's languages), `lang.rate` [K, W] (firing rate per language) | `langs` |
| hftp | `hftp.label` [W] int8 (`HFTP_LABELS`), `hftp.z.sentence`, `hftp.z.phrase` [W]; `hftp.spectrum` [F, W] float16 (experiment minus control amplitude, F = 2n + 1 bins of 1/(4n) cycles per word) where the atlas has spectra | `hftp_rates` |
| milan | — | `milan[layer][neuron] = {text, pmi}` |
| foxp2 | `foxp2.member` [W] int8 (`FOXP2_MEMBERS`: target-language / English neuron of the localisation), `foxp2.mean_diff` [W] | `foxp2_target` |
| shared-neurons | `shared.llm`, `shared.vlm`, `shared.shared` [W] bool (the up_proj unit = the MLP neuron, of the VLM's text backbone) | `shared_pair` |
| brain-axes (with adapters) | `brain.loading` [A, W]: per recovered axis, how far one unit of the neuron's activation moves the layer's adapter score, (coef / scale) · its write direction (needs the model) | `brain_axes` |

Absent analyses leave their fields out; nothing is filled in. Merging an atlas replaces only its analysis's
fields (`params["sources"]` records which atlas each came from), so adding one more atlas is incremental.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.errors import AtlasError
from interp.exemplars import token_context
from interp.language_id import LANGUAGE_NAMES

from .neuron_atlas import Atlas, load_atlas

METHOD = "neuron-cards"
LANGUAGE_CLASSES = ("", "specific", "related", "agnostic")  # lang.class codes
HFTP_LABELS = ("", "sentence-only", "phrase-only", "shared")  # hftp.label codes (the hftp atlas's own)
FOXP2_MEMBERS = ("", "target", "english", "both")  # foxp2.member codes: bit 1 target-language, bit 2 English
KINDS = {"activation-statistics": "stats", "lm-head": "lm", "hftp": "hftp", "milan": "milan", "foxp2": "foxp2",
         "shared-neurons": "shared", "brain-axes": "brain"}
_LAYER = re.compile(r"blocks\.(\d+)\.")


def _kind(method: str) -> str:
    if method.startswith("language-neurons"):
        return "lang"
    if method not in KINDS:
        raise AtlasError(f"an atlas of method {method!r} has no per-neuron fields for cards; cards join "
                         f"{', '.join([*KINDS, 'language-neurons'])}")
    return KINDS[method]


def _site(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def _layer(site: str) -> int | None:
    m = _LAYER.match(site)
    return int(m[1]) if m and site.endswith(("mlp.hook_post", "mlp.hook_pre")) else None


def _model_of(atlas: Atlas) -> str:
    """The language model an atlas describes (a brain-axes atlas describes recordings; its adapters, a model)."""
    if atlas.method == "brain-axes":
        if "adapters" not in atlas.params:
            raise AtlasError("this brain-axes atlas has no adapters (no axis was recovered), so nothing joins neurons")
        return atlas.params["adapters"]["model"]
    return atlas.model


def _brain_fields(atlas: Atlas, model) -> tuple[dict[str, torch.Tensor], dict]:
    """Each adapter layer's loadings [A, W]: (coef / scale) [A, d] @ the MLP write weights [d, W] of that layer."""
    if model is None:
        raise AtlasError("joining brain-axes adapters needs the model (their loading on each neuron's write "
                         "direction): give --model")
    adapters = atlas.params["adapters"]
    tensors = {}
    for layer in adapters["layers"]:
        get = lambda name: atlas.tensors[f"blocks.{layer}.{adapters['site']}/adapter.{name}"].double()  # noqa: E731,B023
        write = model.adapter.write_weights(int(layer)).detach().double()  # [d, W]
        tensors[f"{_site(int(layer))}/brain.loading"] = ((get("coef") / get("scale")) @ write).float()
    return tensors, {"brain_axes": [int(a) for a in adapters["axes"]]}


def _fields(atlas: Atlas, model=None) -> tuple[dict[str, torch.Tensor], dict]:
    """The per-neuron tensors (keyed `blocks.L.mlp.hook_post/<prefix>.<name>`) and params one atlas contributes."""
    kind = _kind(atlas.method)
    tensors: dict[str, torch.Tensor] = {}
    params: dict = {}
    if kind == "brain":
        return _brain_fields(atlas, model)
    if kind == "milan":
        described = atlas.params.get("descriptions", {})
        params["milan"] = {str(_layer(site)): {unit: {"text": d["text"], "pmi": d.get("pmi")} for unit, d in units.items()}
                           for site, units in described.items() if _layer(site) is not None}
        return tensors, params
    if kind == "shared":
        for key, t in atlas.tensors.items():
            m = re.fullmatch(r"blocks\.(\d+)\.up/(llm|vlm|shared)", key)
            if m:
                tensors[f"{_site(int(m[1]))}/shared.{m[2]}"] = t.bool()
        params["shared_pair"] = atlas.params.get("llm")
        return tensors, params
    for site in atlas.sites:
        layer = _layer(site)
        if layer is None:
            continue
        out = _site(layer) + "/"
        if kind == "stats":
            for name in ("frequency", "mean", "std", "topk_values", "topk_doc", "topk_pos"):
                tensors[out + f"stats.{name}"] = atlas.get(site, name)
            params["groups"] = atlas.params.get("groups")
            params["stats_max_length"] = atlas.params.get("max_length")  # how its exemplars were tokenized
        elif kind == "lm":
            for d in atlas.params.get("directions", []):
                tensors[out + f"lm.{d}.ids"] = atlas.get(site, f"{d}.top_ids")
                tensors[out + f"lm.{d}.probs"] = atlas.get(site, f"{d}.top_probs")
            params["directions"] = list(atlas.params.get("directions", []))
        elif kind == "lang":
            n_langs, agnostic = atlas.get(site, "n_langs"), atlas.get(site, "agnostic")
            k = len(atlas.params["langs"])
            cls = torch.zeros_like(n_langs, dtype=torch.int8)
            cls[n_langs == 1] = 1
            cls[(n_langs >= 2) & (n_langs <= k - 1)] = 2
            cls[agnostic] = 3
            tokens = torch.tensor(atlas.params["tokens_per_language"], dtype=torch.float32)  # [K], langs' order
            tensors[out + "lang.class"] = cls
            tensors[out + "lang.mask"] = atlas.get(site, "masks").bool()
            tensors[out + "lang.rate"] = atlas.get(site, "counts").float() / tokens.clamp(min=1).unsqueeze(1)
            params["langs"] = list(atlas.params["langs"])
        elif kind == "hftp":
            tensors[out + "hftp.label"] = atlas.get(site, "label").to(torch.int8)
            for name in ("z.sentence", "z.phrase"):
                tensors[out + f"hftp.{name}"] = atlas.get(site, name)
            if f"{site}/spectrum.experiment" in atlas.tensors:
                diff = atlas.get(site, "spectrum.experiment").float() - atlas.get(site, "spectrum.control").float()
                tensors[out + "hftp.spectrum"] = diff.to(torch.float16)
            params["hftp_rates"] = atlas.params.get("rates")
        elif kind == "foxp2":
            local = atlas.params["layers"].get(str(layer))
            if local is None:
                continue
            member = torch.zeros(atlas.get(site, "mean_diff").shape[-1], dtype=torch.int8)
            member[list(local["target_neurons"])] += 1
            member[list(local["english_neurons"])] += 2
            tensors[out + "foxp2.member"] = member
            tensors[out + "foxp2.mean_diff"] = atlas.get(site, "mean_diff").float()
            params["foxp2_target"] = atlas.params.get("target")
    return tensors, params


def _width(tensors: dict[str, torch.Tensor]) -> dict[int, int]:
    """d_mlp per layer as the fields show it (the last axis of every per-neuron tensor, the first of [W, k])."""
    widths: dict[int, int] = {}
    for key, t in tensors.items():
        site, name = key.rsplit("/", 1)
        layer = _layer(site)
        widths[layer] = t.shape[0] if name.startswith("stats.topk") or name.startswith("lm.") else t.shape[-1]
    return widths


def merge(index: Atlas | None, atlas: Atlas, source: str = "", model=None) -> Atlas:
    """`index` with `atlas`'s analysis joined in (its earlier fields replaced); AtlasError, in one line, for an
    atlas of another model or shape. `model` (an `interp.Model`) is needed for brain-axes adapters only."""
    kind = _kind(atlas.method)
    described = _model_of(atlas)
    if model is not None and kind == "brain" and model.name != described:
        raise AtlasError(f"the adapters of {source or 'the atlas'} were fitted on {described!r}, not {model.name!r}")
    if index is None:
        index = Atlas(model=described, revision=atlas.revision, sites=[], method=METHOD, tensors={},
                      params={"sources": {}, "widths": {}})
    elif index.method != METHOD:
        raise AtlasError(f"{source or 'the index'} is a {index.method!r} atlas, not a neuron-card index")
    if described != index.model:
        raise AtlasError(f"{source or 'the atlas'} was made for model {described!r}; this index is of {index.model!r}")
    tensors, params = _fields(atlas, model)
    widths = {int(k): v for k, v in index.params["widths"].items()}
    for layer, w in _width(tensors).items():
        if widths.get(layer, w) != w:
            raise AtlasError(f"{source or 'the atlas'} has {w} neurons at layer {layer}; this index has {widths[layer]}")
        widths[layer] = w
    prefix = f"{kind}."
    kept = {k: v for k, v in index.tensors.items() if not k.rsplit("/", 1)[1].startswith(prefix)}
    merged_params = {k: v for k, v in index.params.items() if k not in params}
    merged_params.update(params)
    merged_params["widths"] = {str(k): widths[k] for k in sorted(widths)}
    merged_params["sources"] = {**index.params.get("sources", {}),
                                kind: {"method": atlas.method, "created": atlas.meta.get("created"), "path": source}}
    documents, vocab = index.documents, index.vocab
    if kind == "stats":
        documents = atlas.documents
    if kind == "lm":
        vocab = atlas.vocab
    return Atlas(model=index.model, revision=index.revision or atlas.revision,
                 sites=[_site(layer) for layer in sorted(widths)], method=METHOD, tensors={**kept, **tensors},
                 params=merged_params, documents=documents, vocab=vocab)


def merge_atlases(out: str | Path, folders: list[str | Path], model=None) -> Path:
    """Join the atlases in `folders` into the index at `out` (made if absent), written atomically once; `model`
    for brain-axes adapters."""
    out = Path(out)
    index = load_atlas(out) if (out / "atlas.json").exists() else None
    for folder in folders:
        index = merge(index, load_atlas(folder), str(folder), model)
    if index is None:
        raise AtlasError("nothing to merge: give at least one atlas")
    return index.save(out)


@dataclass
class NeuronCard:
    """Everything the index knows of one neuron; a field is None / empty where its analysis is absent."""

    layer: int
    neuron: int
    frequency: dict[str, float] = field(default_factory=dict)  # group → firing rate
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    exemplars: list[dict] = field(default_factory=list)  # {doc, pos, value, text[, context]}, best first
    tokens: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # direction → [(token, prob)]
    language: str | None = None  # specific / related / agnostic ("" : none of them)
    languages: list[str] = field(default_factory=list)  # the languages it belongs to (specific: one)
    language_rates: dict[str, float] = field(default_factory=dict)
    hftp: str | None = None  # sentence-only / phrase-only / shared ("" : none)
    hftp_z: dict[str, float] = field(default_factory=dict)
    hftp_spectrum: list[float] = field(default_factory=list)  # experiment − control amplitude per frequency bin
    description: str | None = None
    pmi: float | None = None
    foxp2: str | None = None  # target / english / both ("" : not localised; None: no foxp2 atlas at this layer)
    foxp2_mean_diff: float | None = None  # target − English mean activation
    shared: dict[str, bool] = field(default_factory=dict)  # llm / vlm / shared: in that model's task set
    brain: dict[int, float] = field(default_factory=dict)  # recovered MEG axis → adapter loading of the neuron


class CardIndex:
    """A neuron-card index: `card(layer, neuron)`."""

    def __init__(self, atlas: Atlas):
        if atlas.method != METHOD:
            raise AtlasError(f"a {atlas.method!r} atlas is not a neuron-card index (interp atlas merge makes one)")
        self.atlas = atlas
        self._texts = {d["index"]: d["text"] for d in atlas.documents or []}  # the stats exemplars' documents

    @classmethod
    def load(cls, folder: str | Path) -> "CardIndex":
        return cls(load_atlas(folder))

    def _get(self, layer: int, name: str) -> torch.Tensor | None:
        return self.atlas.tensors.get(f"{_site(layer)}/{name}")

    def card(self, layer: int, neuron: int, tokenizer=None) -> NeuronCard:
        """The neuron's card; with the model's `tokenizer`, each exemplar also gets its highlighted context
        (`context`: left, token, right — the token the activation was read at)."""
        width = self.atlas.params["widths"].get(str(layer))
        if width is None or not 0 <= neuron < width:
            raise AtlasError(f"no neuron {layer}:{neuron} in this index (layers "
                             f"{', '.join(self.atlas.params['widths'])}, {width or 0} neurons there)")
        c = NeuronCard(layer, neuron)
        p = self.atlas.params
        get = lambda name: self._get(layer, name)  # noqa: E731
        if get("stats.frequency") is not None:
            for attr in ("frequency", "mean", "std"):
                setattr(c, attr, {g: float(v) for g, v in zip(p["groups"], get(f"stats.{attr}")[:, neuron])})
            for v, d, pos in zip(get("stats.topk_values")[neuron], get("stats.topk_doc")[neuron],
                                 get("stats.topk_pos")[neuron]):
                if int(d) >= 0:
                    e = {"doc": int(d), "pos": int(pos), "value": float(v), "text": self._texts.get(int(d))}
                    if tokenizer is not None and e["text"] is not None:
                        e["context"] = token_context(tokenizer, e["text"], e["pos"],
                                                     max_length=p.get("stats_max_length") or 512)
                    c.exemplars.append(e)
        for d in p.get("directions", []):
            ids, probs = get(f"lm.{d}.ids"), get(f"lm.{d}.probs")
            if ids is not None:
                c.tokens[d] = [(self.atlas.vocab[int(i)], float(q)) for i, q in zip(ids[neuron], probs[neuron])]
        if get("lang.class") is not None:
            c.language = LANGUAGE_CLASSES[int(get("lang.class")[neuron])]
            c.language_rates = {lang: float(r) for lang, r in zip(p["langs"], get("lang.rate")[:, neuron])}
            c.languages = [lang for lang, m in zip(p["langs"], get("lang.mask")[:, neuron]) if m]
        if get("hftp.label") is not None:
            c.hftp = HFTP_LABELS[int(get("hftp.label")[neuron])]
            c.hftp_z = {n: float(get(f"hftp.z.{n}")[neuron]) for n in ("sentence", "phrase")}
            if get("hftp.spectrum") is not None:
                c.hftp_spectrum = get("hftp.spectrum")[:, neuron].float().tolist()
        if get("foxp2.member") is not None:
            c.foxp2 = FOXP2_MEMBERS[int(get("foxp2.member")[neuron])]
            c.foxp2_mean_diff = float(get("foxp2.mean_diff")[neuron])
        if get("shared.shared") is not None:
            c.shared = {n: bool(get(f"shared.{n}")[neuron]) for n in ("llm", "vlm", "shared")}
        if get("brain.loading") is not None:
            c.brain = {axis: float(v) for axis, v in zip(p["brain_axes"], get("brain.loading")[:, neuron])}
        described = p.get("milan", {}).get(str(layer), {}).get(str(neuron))
        if described is not None:
            c.description, c.pmi = described["text"], described.get("pmi")
        return c

    # ------------------------------------------------------------ search
    def layers(self) -> list[int]:
        return sorted(int(k) for k in self.atlas.params["widths"])

    def search(self, *, text: str | None = None, token: str | None = None, language: str | None = None,
               label: str | None = None, layer: int | None = None, k: int = 20) -> list[NeuronCard]:
        """The k best cards matching every criterion given, best first.

        token: neurons whose LM-head write direction ranks that exact token (its leading space included) in
        their top list, by its probability; text: words found in MILAN descriptions and write tokens (each
        word a point, ties by PMI / probability); language: a code or English name (`es`, `Spanish`) —
        neurons of that language, specific ones first, by their rate in it; label: an HFTP label
        (sentence-only, phrase-only, shared) or a language class (specific, related, agnostic)."""
        layers = self.layers() if layer is None else [layer]
        if layer is not None and str(layer) not in self.atlas.params["widths"]:
            raise AtlasError(f"no layer {layer} in this index (layers {', '.join(map(str, self.layers()))})")
        scores: dict[tuple[int, int], float] | None = None

        def narrow(found: dict[tuple[int, int], float]) -> None:
            nonlocal scores
            scores = found if scores is None else {key: s + found[key] for key, s in scores.items() if key in found}

        if token is not None:
            narrow(self._by_token(token, layers))
        if text is not None:
            narrow(self._by_text(text, layers))
        if language is not None:
            narrow(self._by_language(language, layers))
        if label is not None:
            narrow(self._by_label(label, layers))
        if scores is None:
            raise AtlasError("search needs at least one of text, token, language or label")
        best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [self.card(layer_, neuron) for (layer_, neuron), _ in best]

    def _need(self, name: str, analysis: str) -> None:
        if not any(key.endswith("/" + name) for key in self.atlas.tensors):
            raise AtlasError(f"this index has no {analysis} atlas merged in (interp atlas merge INDEX ATLAS)")

    def _by_token(self, token: str, layers: list[int]) -> dict[tuple[int, int], float]:
        self._need("lm.write.ids", "lm-head (write direction)")
        ids = [i for i, s in enumerate(self.atlas.vocab or []) if s == token]
        if not ids:
            raise AtlasError(f"{token!r} is not a token of this model's vocabulary (mind the leading space)")
        found: dict[tuple[int, int], float] = {}
        for layer in layers:
            top, probs = self._get(layer, "lm.write.ids"), self._get(layer, "lm.write.probs")
            if top is None:
                continue
            hit = torch.isin(top, torch.tensor(ids))
            for n, j in hit.nonzero().tolist():
                found[(layer, n)] = max(found.get((layer, n), 0.0), float(probs[n, j]))
        return found

    def _by_text(self, text: str, layers: list[int]) -> dict[tuple[int, int], float]:
        words = re.findall(r"\w+", text.lower())
        if not words:
            raise AtlasError(f"no words to search for in {text!r}")
        found: dict[tuple[int, int], float] = defaultdict(float)
        milan = self.atlas.params.get("milan", {})
        wanted = torch.tensor([i for i, s in enumerate(self.atlas.vocab or []) if s.strip().lower() in words] or [-1])
        for layer in layers:
            for unit, d in milan.get(str(layer), {}).items():
                have = set(re.findall(r"\w+", d["text"].lower()))
                hits = sum(w in have for w in words)
                if hits:
                    found[(layer, int(unit))] += hits + 1e-3 * float(d.get("pmi") or 0.0)
            top, probs = self._get(layer, "lm.write.ids"), self._get(layer, "lm.write.probs")
            if top is None:
                continue
            hit = torch.isin(top, wanted)
            for n, j in hit.nonzero().tolist():
                found[(layer, n)] += 1 + 1e-3 * float(probs[n, j])
        return dict(found)

    def _by_language(self, language: str, layers: list[int]) -> dict[tuple[int, int], float]:
        self._need("lang.mask", "language-neurons")
        langs = self.atlas.params["langs"]
        names = {v.lower(): k for k, v in LANGUAGE_NAMES.items()}
        code = language if language in langs else names.get(language.lower())
        if code not in langs:
            raise AtlasError(f"language {language!r} is not among this index's ({', '.join(langs)})")
        i = langs.index(code)
        found = {}
        for layer in layers:
            mask, cls, rate = (self._get(layer, n) for n in ("lang.mask", "lang.class", "lang.rate"))
            if mask is None:
                continue
            for n in mask[i].nonzero().squeeze(1).tolist():
                found[(layer, n)] = (1.0 if int(cls[n]) == 1 else 0.0) + float(rate[i, n]) / 2
        return found

    def _by_label(self, label: str, layers: list[int]) -> dict[tuple[int, int], float]:
        if label in HFTP_LABELS[1:]:
            name, code = "hftp.label", HFTP_LABELS.index(label)
            self._need(name, "hftp")
        elif label in LANGUAGE_CLASSES[1:]:
            name, code = "lang.class", LANGUAGE_CLASSES.index(label)
            self._need(name, "language-neurons")
        else:
            raise AtlasError(f"unknown label {label!r}: one of {', '.join(HFTP_LABELS[1:] + LANGUAGE_CLASSES[1:])}")
        found = {}
        for layer in layers:
            t = self._get(layer, name)
            if t is not None:
                found.update({(layer, n): 0.0 for n in (t == code).nonzero().squeeze(1).tolist()})
        return found
