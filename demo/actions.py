"""What the browser demo does, without the browser: one function per button, plain values in and out.

Long steps show tqdm progress bars, which the app forwards to the page (`gr.Progress(track_tqdm=True)`).

Every function checks its inputs first and raises `DemoError` (an `InterpError`) with a message
a person can act on; `app.py` shows it and keeps serving. Models, LM-head atlases, language-
neuron results, MILAN exemplar indexes and neuron-card indexes are computed once per model and kept in memory.
Limits keep a public Space responsive: prompts ≤ 400 characters, ≤ 64 new tokens, bounded
strengths.

A public Space is used by strangers, so the demo reads nothing the server did not choose:
- models: only names on the allowlist, INTERP_DEMO_MODELS (comma-separated; default: the
  offline names, `interp.offline_names()`); a path or any other hub id is refused;
- atlases and recipes: only uploads (the app's file boxes), at most MAX_RECIPE_BYTES and
  MAX_ATLAS_BYTES, read by the public loaders (`interp.recipes.read_recipe` + `check_fits`,
  `atlases.load_atlas`), which check checksums and the model before anything is applied;
- recipes to download (the neuron-cards tab) are written by `interp.recipes.save_recipe` from the
  session's edits into a temporary folder the server chose; nothing is pickled.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import interp
from interp.errors import InterpError

MAX_PROMPT_CHARS = 400
MAX_NEW_TOKENS = 64
MAX_CLAMP = 200.0  # |clamp value|
MAX_SCALE = 50.0  # |ActAdd scale|, |axis strength|
# Uploads. A recipe is a few edits (FOXP2 on smollm2, 8 layers of [1536] vectors and low-rank directions:
# under 1 MB; even a rank-8 low-rank edit on all three MLP matrices of all 30 layers is ~6 MB); a brain-axes
# atlas holds per-layer adapters and per-word vectors, far below 64 MB for these models. The app's server
# refuses anything larger than MAX_ATLAS_BYTES before it is stored (`launch(max_file_size=…)`).
MAX_RECIPE_BYTES = 16 * 2**20
MAX_ATLAS_BYTES = 64 * 2**20
MAX_ATLAS_FILES = 8
MODELS_ENV = "INTERP_DEMO_MODELS"
GENERATION = {"repetition_penalty": 1.3}
_LOCK = threading.RLock()  # one computation at a time: the model is shared


class DemoError(InterpError):
    """Bad input in the demo: shown to the user as a message."""


def allowed_models() -> list[str]:
    """The model names the demo serves: INTERP_DEMO_MODELS (comma-separated), else the offline names."""
    names = [n.strip() for n in os.environ.get(MODELS_ENV, "").split(",") if n.strip()]
    return names or interp.offline_names()


def default_model() -> str:
    """INTERP_DEMO_MODEL if set (it must be allowed), else interp's default if allowed, else the first allowed."""
    allowed = allowed_models()
    chosen = os.environ.get("INTERP_DEMO_MODEL", "").strip()
    if chosen and chosen not in allowed:
        raise DemoError(f"INTERP_DEMO_MODEL={chosen!r} is not in {MODELS_ENV} ({', '.join(allowed)}).")
    return chosen or (interp.DEFAULT_MODEL if interp.DEFAULT_MODEL in allowed else allowed[0])


def check_model(name: str | None) -> str:
    """The allowlisted model name typed in the model box (empty: the default); a path or any other
    name, hub ids included, is a DemoError."""
    name = (name or "").strip()
    if not name:
        return default_model()
    allowed = allowed_models()
    if name not in allowed:
        shown = repr(name if len(name) <= 60 else name[:59] + "…")
        raise DemoError(f"Model {shown} is not offered here (no paths or other hub ids); choose one of: "
                        f"{', '.join(allowed)}.")
    return name


def demo_layers(model: interp.Model) -> list[int]:
    """Layers the atlas covers: INTERP_DEMO_LAYERS (e.g. 20-29; tests keep it small), else all."""
    spec = os.environ.get("INTERP_DEMO_LAYERS")
    return model.adapter.parse_layers(spec) if spec else list(range(model.adapter.n_layers))


def model_for(name: str | None) -> interp.Model:
    """The allowlisted model `name` (see `check_model`), loaded once."""
    return _load(check_model(name))


@lru_cache(maxsize=2)
def _load(name: str) -> interp.Model:
    return interp.load_model(name, dtype="float32")


# ---------------------------------------------------------------------------- checks


def check_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise DemoError("Enter a prompt first.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DemoError(f"The prompt is {len(prompt)} characters; the demo takes at most {MAX_PROMPT_CHARS}.")
    return prompt


def check_number(value, what: str, bound: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{what} must be a number.") from None
    if not math.isfinite(x) or abs(x) > bound:
        raise DemoError(f"{what} must be between {-bound:g} and {bound:g} (got {value}).")
    return x


def check_tokens(n) -> int:
    n = int(check_number(n, "New tokens", MAX_NEW_TOKENS))
    if n < 1:
        raise DemoError(f"New tokens must be between 1 and {MAX_NEW_TOKENS}.")
    return n


def parse_neuron(text: str | None, model: interp.Model) -> tuple[int, int]:
    """'12:345' → (12, 345), checked against the model."""
    layer, sep, neuron = (text or "").strip().partition(":")
    if not sep or not layer.strip().isdigit() or not neuron.strip().isdigit():
        raise DemoError(f"Write the neuron as LAYER:NEURON, e.g. 12:345 (got {text!r}).")
    l, n = int(layer), int(neuron)
    if l >= model.adapter.n_layers or n >= model.adapter.d_mlp:
        raise DemoError(f"{l}:{n} is outside this model: layers 0..{model.adapter.n_layers - 1}, "
                        f"neurons 0..{model.adapter.d_mlp - 1}.")
    return l, n


# ---------------------------------------------------------------------------- uploads


def _size(path: Path) -> int:
    if not path.is_file():
        raise DemoError(f"The upload {path.name} is missing; upload it again.")
    return path.stat().st_size


def _refused(exc: InterpError, folder: Path, shown: str) -> DemoError:
    """A loader's error as a DemoError, naming the upload instead of the server's temporary path."""
    return DemoError(str(exc).replace(str(folder), shown))


def uploaded_recipe(upload: str | None, model: interp.Model) -> tuple[dict, list]:
    """(header, edits) of an uploaded recipe, after the size limit, the loader's checks (format,
    checksum) and a check that it fits `model`."""
    from interp.recipes import check_fits, read_recipe

    if not upload or not isinstance(upload, (str, os.PathLike)):
        raise DemoError("Upload a recipe (.safetensors) written by interp: a FOXP2, Dopamine or other recipe.")
    path = Path(upload)
    if _size(path) > MAX_RECIPE_BYTES:
        raise DemoError(f"The recipe {path.name} is larger than {MAX_RECIPE_BYTES // 2**20} MB; the demo takes "
                        f"smaller ones.")
    try:
        header, edits = read_recipe(path)  # read once: the edits and the writer's provenance
        check_fits(header, model, path.name)
    except InterpError as exc:
        raise _refused(exc, path, path.name) from None
    return header, edits


def uploaded_atlas(uploads, model_name: str):
    """The atlas made of uploaded files (atlas.json, tensors.safetensors, …), after the size limit and
    `atlases.load_atlas`'s checks (checksums, made for `model_name`). The files are copied into a
    private temporary folder, named by their file names, and removed after loading."""
    from atlases import load_atlas

    if not uploads or isinstance(uploads, (str, os.PathLike)):
        raise DemoError("Upload the files of a brain-axes atlas folder (atlas.json, tensors.safetensors, …; "
                        "interp analyze --probe brain-axes).")
    paths = [Path(u) for u in uploads]
    if len(paths) > MAX_ATLAS_FILES:
        raise DemoError(f"An atlas is at most {MAX_ATLAS_FILES} files; {len(paths)} were uploaded.")
    names = [p.name for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DemoError(f"{', '.join(twice)} uploaded twice: upload the files of one atlas.")
    if sum(_size(p) for p in paths) > MAX_ATLAS_BYTES:
        raise DemoError(f"The atlas's files are larger than {MAX_ATLAS_BYTES // 2**20} MB together; the demo "
                        f"takes smaller ones.")
    with tempfile.TemporaryDirectory(prefix="interp-demo-atlas-") as tmp:
        folder = Path(tmp) / "atlas"
        folder.mkdir()
        for p in paths:
            shutil.copyfile(p, folder / p.name)
        try:
            return load_atlas(folder, model=model_name)
        except InterpError as exc:
            raise _refused(exc, folder, "the uploaded atlas") from None


# ---------------------------------------------------------------------------- generation


@dataclass
class SideBySide:
    unsteered: str
    steered: str
    note: str


def compare(model: interp.Model, prompt: str, edits: Sequence, tokens: int, note: str) -> SideBySide:
    """Greedy continuations without and with `edits` (the model is left as it was)."""
    gen = {**GENERATION, "max_new_tokens": tokens}
    with _LOCK:
        plain = interp.generate(model, [prompt], [], **gen)[0]
        steered = interp.generate(model, [prompt], list(edits), **gen)[0]
    return SideBySide(plain, steered, note)


# ---------------------------------------------------------------------------- neuron atlas


@lru_cache(maxsize=2)
def _atlas(name: str, layers: tuple[int, ...]):
    from atlases import decoded_vocab, lm_head_atlas
    from probes.lm_head import LMHeadOptions, lm_head_map

    model = model_for(name)
    with _LOCK:
        lm_map = lm_head_map(model, list(layers), LMHeadOptions(directions=("write",), k=10), progress=True)
    return lm_head_atlas(lm_map, model=model.name, revision=model.revision,
                         vocab=decoded_vocab(model.tokenizer, lm_map.vocab))


def atlas_for(name: str):
    """The LM-head atlas of the model's MLP neurons (write direction), computed once."""
    model = model_for(name)
    return _atlas(name, tuple(demo_layers(model)))


def search_token(name: str, token: str, k: int = 10) -> list[list]:
    """Neurons whose write direction most raises `token`: rows [neuron, P(token), rank, top tokens]."""
    from atlases.lm_head import neurons_for, tokens_for

    if not (token or "").strip():
        raise DemoError("Enter a token, e.g. ' dog' (with its leading space).")
    atlas = atlas_for(name)
    try:
        hits = neurons_for(atlas, token, k=int(k))
    except InterpError as exc:
        raise DemoError(str(exc)) from None
    if not hits:
        raise DemoError(f"No neuron in layers {atlas.params['layers'][0]}–{atlas.params['layers'][-1]} has "
                        f"{token!r} among its top tokens.")
    return [[f"{h.layer}:{h.neuron}", round(h.prob, 4), h.rank,
             " ".join(repr(t.token) for t in tokens_for(atlas, h.layer, h.neuron, k=5))] for h in hits]


def neuron_tokens(name: str, neuron: str, k: int = 10) -> list[list]:
    """The neuron's top tokens: rows [token, probability, logit]."""
    from atlases.lm_head import tokens_for

    model = model_for(name)
    layer, n = parse_neuron(neuron, model)
    try:
        hits = tokens_for(atlas_for(name), layer, n, k=int(k))
    except InterpError as exc:
        raise DemoError(str(exc)) from None
    return [[repr(h.token), round(h.prob, 4), round(h.logit, 2)] for h in hits]


def clamp_generate(name: str, prompt: str, neuron: str, value, tokens) -> SideBySide:
    """Hold one MLP neuron at `value` at every position and generate beside the unsteered text."""
    return neuron_generate(name, prompt, neuron, "clamp", value, tokens)


NEURON_ACTIONS = ("clamp", "scale", "ablate")


def neuron_edit(model: interp.Model, layer: int, n: int, action: str, value=None) -> tuple[object, str]:
    """One MLP neuron's edit at every position, and a line saying what it does: clamp (hold it at `value`),
    scale (multiply it by `value`) or ablate (remove it: its unit direction projected out; `value` unused)."""
    from steering.clamps import concept_clamp, neuron_site

    site = neuron_site(layer)
    if action == "clamp":
        value = check_number(value, "Clamp value", MAX_CLAMP)
        return concept_clamp(layer, n, value), f"clamp {site}[{n}] = {value:g}"
    if action == "scale":
        value = check_number(value, "Scale factor", MAX_SCALE)
        return interp.Scale(site, [n], [value]), f"scale {site}[{n}] × {value:g}"
    if action == "ablate":
        import torch

        unit = torch.zeros(model.adapter.d_mlp)
        unit[n] = 1.0
        return interp.Ablate(site, unit), f"ablate {site}[{n}] (held at 0)"
    raise DemoError(f"Choose what to do with the neuron: {', '.join(NEURON_ACTIONS)}.")


def neuron_generate(name: str, prompt: str, neuron: str, action: str, value, tokens) -> SideBySide:
    """Clamp, scale or ablate one MLP neuron (`neuron_edit`) and generate beside the unsteered text."""
    prompt, tokens = check_prompt(prompt), check_tokens(tokens)
    model = model_for(name)
    layer, n = parse_neuron(neuron, model)
    edit, note = neuron_edit(model, layer, n, action, value)
    return compare(model, prompt, [edit], tokens, note)


# ---------------------------------------------------------------------------- neuron cards

CARD_SEARCHES = ("token", "words", "language", "label")
CARD_CORPUS_LENGTH = 64  # tokens per demo-corpus document for the cards' exemplars
CARD_EXEMPLARS = 8
MAX_RECIPE_EDITS = 64
RECIPE_NAME = "neuron-cards-recipe.safetensors"
_RECIPES: Path | None = None  # where recipe files for download are written (one sub-folder per file)


@lru_cache(maxsize=2)
def _card_stats(name: str, layers: tuple[int, ...]):
    """Activation statistics of the layers' MLP neurons on the demo corpus (the cards' rates and exemplars):
    `interp analyze --corpus demo --sites mlp.hook_post` at a short length (~20-40 s on a CPU)."""
    from atlases import Atlas
    from interp.corpora import demo_corpus
    from probes.stats import activation_statistics

    model = model_for(name)
    sites = [f"blocks.{layer}.mlp.hook_post" for layer in layers]
    with _LOCK:
        result = activation_statistics(model, demo_corpus(), sites, top_k=CARD_EXEMPLARS, batch_size=8,
                                       max_length=CARD_CORPUS_LENGTH, progress=True)
    return Atlas(model=model.name, revision=model.revision, sites=result.sites, method="activation-statistics",
                 tensors=result.tensors, params={**result.params, "corpus": "demo"}, documents=result.documents)


@lru_cache(maxsize=2)
def _cards(name: str, layers: tuple[int, ...]):
    """The demo's card index: the LM-head atlas (the atlas tab's) joined with the demo corpus's statistics."""
    from atlases.cards import CardIndex, merge

    index = merge(None, _atlas(name, layers), "the LM-head atlas")
    return CardIndex(merge(index, _card_stats(name, layers), "the demo corpus's statistics"))


@lru_cache(maxsize=2)
def _uploaded_cards(name: str, uploads: tuple[tuple[str, int, int], ...]):
    from atlases.cards import METHOD, CardIndex, merge

    atlas = uploaded_atlas([path for path, _, _ in uploads], name)
    try:
        if atlas.method == METHOD:
            return CardIndex(atlas)
        return CardIndex(merge(cards_for(name).atlas, atlas, "the uploaded atlas"))
    except InterpError as exc:
        raise DemoError(str(exc)) from None


def cards_for(name: str, uploads: Sequence[str] | None = None):
    """The card index: with `uploads`, an uploaded index (`interp atlas merge`) or one analysis's atlas (stats,
    lm-head, language neurons, HFTP, MILAN) joined with the demo's; else the demo's own, computed once."""
    model = model_for(name)
    if uploads:
        if isinstance(uploads, (str, os.PathLike)):
            uploads = [uploads]
        key = tuple((str(p), _size(Path(p)), Path(p).stat().st_mtime_ns) for p in uploads)
        return _uploaded_cards(check_model(name), key)
    return _cards(check_model(name), tuple(demo_layers(model)))


def _card_class(card) -> str:
    parts = []
    if card.language:
        parts.append(card.language + (f" ({', '.join(card.languages)})" if card.languages else ""))
    if card.hftp:
        parts.append(card.hftp)
    return "; ".join(parts)


def search_cards(name: str, by: str, query: str, layer=None, uploads=None, k: int = 20) -> list[list]:
    """Cards matching `query` read as a token (' dog'), words, a language ('es', 'Spanish') or a label
    (sentence-only, phrase-only, shared; specific, related, agnostic), optionally in one layer: rows
    [neuron, top write tokens, class, description], best first."""
    if by not in CARD_SEARCHES:
        raise DemoError(f"Search by one of: {', '.join(CARD_SEARCHES)}.")
    if not (query or "").strip():
        raise DemoError({"token": "Enter a token, e.g. ' dog' (with its leading space).",
                         "words": "Enter words, e.g. 'dog cat'.", "language": "Enter a language, e.g. es or Spanish.",
                         "label": "Enter a label: sentence-only, phrase-only, shared, specific, related or "
                                  "agnostic."}[by])
    query = query if by == "token" else query.strip()
    if layer is None or str(layer).strip() == "":
        layer = None
    elif not str(layer).strip().isdigit():
        raise DemoError(f"Layer must be a layer number, or empty for all layers (got {layer!r}).")
    else:
        layer = int(str(layer).strip())
    index = cards_for(name, uploads)
    kwargs = {"words": "text"}.get(by, by)
    try:
        found = index.search(**{kwargs: query}, layer=layer, k=int(k))
    except InterpError as exc:
        hint = " Upload that atlas in the index box to add it." if "merged in" in str(exc) else ""
        raise DemoError(str(exc) + hint) from None
    if not found:
        raise DemoError(f"No neuron in this index matches {query!r}" + (f" in layer {layer}." if layer is not None
                                                                           else "."))
    return [[f"{c.layer}:{c.neuron}", " ".join(repr(t) for t, _ in c.tokens.get("write", [])[:5]), _card_class(c),
             c.description or ""] for c in found]


def open_card(name: str, neuron: str, uploads=None):
    """The card (`atlases.cards.NeuronCard`) of a neuron given as LAYER:NEURON, exemplars highlighted."""
    model = model_for(name)
    layer, n = parse_neuron(neuron, model)
    try:
        return cards_for(name, uploads).card(layer, n, tokenizer=model.tokenizer)
    except InterpError as exc:
        raise DemoError(str(exc)) from None


def card_html(card) -> str:
    """A card as HTML (every value from the index escaped): rates, exemplars with the token the activation was
    read at marked, LM-head tokens, language, HFTP and description; absent analyses say so."""
    from html import escape

    e = lambda x: escape(str(x))  # noqa: E731
    out = [f"<h3>Neuron {card.layer}:{card.neuron} <small>blocks.{card.layer}.mlp.hook_post</small></h3>"]
    if card.frequency:
        rows = "".join(f"<tr><td>{e(g)}</td><td>{card.frequency[g]:.4f}</td><td>{card.mean.get(g, 0):.4f}</td>"
                       f"<td>{card.std.get(g, 0):.4f}</td></tr>" for g in card.frequency)
        out.append("<h4>Activation</h4><table><tr><th>group</th><th>firing rate</th><th>mean</th><th>std</th></tr>"
                   f"{rows}</table>")
    else:
        out.append("<p><i>No activation statistics in this index.</i></p>")
    if card.exemplars:
        items = []
        for x in card.exemplars:
            if "context" in x:
                left, tok, right = x["context"]
                text = f"…{e(left)}<mark><b>{e(tok)}</b></mark>{e(right)}…"
            else:
                text = e(x.get("text") or f"document {x['doc']}")
            items.append(f"<li><code>{x['value']:.3g}</code> {text}</li>")
        out.append(f"<h4>Top exemplars</h4><ol class='card-exemplars'>{''.join(items)}</ol>")
    for direction, toks in card.tokens.items():
        shown = ", ".join(f"<code>{e(repr(t))}</code> {p:.3f}" for t, p in toks)
        out.append(f"<h4>LM-head tokens ({e(direction)})</h4><p>{shown}</p>")
    if not card.tokens:
        out.append("<p><i>No LM-head atlas in this index.</i></p>")
    if card.language is not None:
        rates = ", ".join(f"{e(k)} {v:.4f}" for k, v in card.language_rates.items())
        out.append(f"<h4>Language</h4><p>{e(card.language or 'none')}"
                   f"{' — ' + e(', '.join(card.languages)) if card.languages else ''}; firing rates: {rates}</p>")
    if card.hftp is not None:
        z = ", ".join(f"{e(k)} z = {v:.2f}" for k, v in card.hftp_z.items())
        out.append(f"<h4>HFTP</h4><p>{e(card.hftp or 'none')} ({z})</p>")
    if card.description:
        pmi = f" (PMI {card.pmi:.2f})" if card.pmi is not None else ""
        out.append(f"<h4>Description</h4><p>{e(card.description)}{pmi}</p>")
    return "<div class='neuron-card'>" + "".join(out) + "</div>"


def _recipe_edits(model: interp.Model, recipe: dict) -> list:
    return [neuron_edit(model, layer, n, action, value)[0] for layer, n, action, value in recipe["edits"]]


def add_to_recipe(name: str, recipe: dict | None, neuron: str, action: str, value) -> tuple[dict, str, str]:
    """`recipe` (a session's {model, edits: [[layer, neuron, action, value]]}) with this neuron's edit added (an
    earlier edit of the same neuron is replaced), written as a recipe file (`interp.recipes.save_recipe`, the
    format `interp steer --recipe` and `interp serve` load): (new recipe, the file's path, a summary)."""
    from interp.recipes import save_recipe

    model = model_for(name)
    layer, n = parse_neuron(neuron, model)
    neuron_edit(model, layer, n, action, value)  # checks the action and the value
    value = None if action == "ablate" else float(value)
    recipe = recipe or {"model": model.name, "edits": []}
    if recipe["model"] != model.name:
        raise DemoError(f"This recipe holds edits of {recipe['model']}; clear it to collect edits of {model.name}.")
    edits = [e for e in recipe["edits"] if (e[0], e[1]) != (layer, n)] + [[layer, n, action, value]]
    if len(edits) > MAX_RECIPE_EDITS:
        raise DemoError(f"A recipe here holds at most {MAX_RECIPE_EDITS} edits; download it and clear it.")
    recipe = {"model": model.name, "edits": edits}
    global _RECIPES
    with _LOCK:
        if _RECIPES is None:
            _RECIPES = Path(tempfile.mkdtemp(prefix="interp-demo-recipes-"))
        path = Path(tempfile.mkdtemp(dir=_RECIPES)) / RECIPE_NAME
    lines = [f"{layer}:{n} {action}" + ("" if value is None else f" {value:g}") for layer, n, action, value in edits]
    save_recipe(path, _recipe_edits(model, recipe), model,
                {"writer": "interp demo: neuron cards", "edits": lines, "generation": dict(GENERATION)})
    return recipe, str(path), recipe_summary(recipe)


def recipe_summary(recipe: dict | None) -> str:
    if not recipe or not recipe["edits"]:
        return "The recipe is empty: open a card and press *Add to recipe*."
    lines = [f"- `{layer}:{n}` {action}" + ("" if value is None else f" {value:g}")
             for layer, n, action, value in recipe["edits"]]
    return (f"Recipe for {recipe['model']} ({len(lines)} edit(s)):\n" + "\n".join(lines) +
            f"\n\nApply it with `interp steer --model {recipe['model']} --recipe {RECIPE_NAME} --prompt '…' "
            f"--repetition-penalty {GENERATION['repetition_penalty']:g}` (the tab's setting) or load it in "
            f"`interp serve`.")


def recipe_generate(name: str, prompt: str, recipe: dict | None, tokens) -> SideBySide:
    """The whole session recipe's continuation beside the unsteered one."""
    prompt, tokens = check_prompt(prompt), check_tokens(tokens)
    model = model_for(name)
    if not recipe or not recipe["edits"]:
        raise DemoError("The recipe is empty: add an edit first.")
    if recipe["model"] != model.name:
        raise DemoError(f"This recipe holds edits of {recipe['model']}, not {model.name}.")
    return compare(model, prompt, _recipe_edits(model, recipe), tokens,
                   f"the recipe's {len(recipe['edits'])} edit(s): " +
                   "; ".join(f"{l}:{n} {a}" + ("" if v is None else f" {v:g}") for l, n, a, v in recipe["edits"]))


# ---------------------------------------------------------------------------- language neurons

LANGS = ("en", "es", "fr", "de")


@lru_cache(maxsize=2)
def _language_neurons(name: str, verses: int):
    from probes.language_counts import active_means, bible_texts, language_counts
    from probes.language_neurons import identify, layer_distribution, phases

    model = model_for(name)
    with _LOCK:
        counts, freq = language_counts(model, bible_texts(list(LANGS), limit=verses), batch_size=8, max_length=64,
                                       progress=True)
    result = identify(counts)
    return result, active_means(freq, list(LANGS)), layer_distribution(result), phases(result)


def language_neurons(name: str, verses) -> tuple[bytes, list[list]]:
    """Per-layer counts of language-specific neurons (plot) and per-language totals."""
    from atlases.language_report import distribution_png

    verses = int(check_number(verses, "Verses", 2000))
    if verses < 16:
        raise DemoError("Use at least 16 verses per language.")
    result, _, dist, ph = _language_neurons(name, verses)
    return distribution_png(dist, ph), [[l, n] for l, n in result.per_language().items()]


def steer_language(name: str, verses, lang: str, prompt: str, tokens) -> SideBySide:
    """Activate `lang`'s neurons at their mean active value (issue 5's steering) beside the unsteered text."""
    from steering.language import activate

    prompt, tokens = check_prompt(prompt), check_tokens(tokens)
    verses = int(check_number(verses, "Verses", 2000))
    if lang not in LANGS:
        raise DemoError(f"Choose one of {', '.join(LANGS)}.")
    result, means, _, _ = _language_neurons(name, verses)
    neurons = result.neurons(lang)
    if not any(len(v) for v in neurons.values()):
        raise DemoError(f"No {lang} neurons were found with {verses} verses; try more verses.")
    edits = activate(neurons, means[LANGS.index(lang)])
    return compare(model_for(name), prompt, edits, tokens,
                   f"{sum(len(v) for v in neurons.values())} {lang} neurons held at their mean active value")


# ---------------------------------------------------------------------------- steering playground

METHODS = ("ActAdd", "FOXP2", "Recipe file (FOXP2, Dopamine, …)", "Brain axis")
FOXP2_TARGETS = ("es", "fr", "de")
FOXP2_VERSES = 96  # parallel verses for FOXP2's directions and SAEs (the CLI's default)
FOXP2_SAE_STEPS = 100  # per window layer (the tests' setting: explained variance 0.66–0.76)


@lru_cache(maxsize=4)
def _foxp2_window(name: str, target: str, verses: int, sae_steps: int, window: tuple[int, ...] | None):
    """Neural FOXP2's localisation for English → target (minutes on a CPU the first time, then kept)."""
    from probes.foxp2 import Foxp2Settings, analyze
    from probes.language_counts import bible_texts
    from steering.foxp2 import window_from_analysis

    model = model_for(name)
    settings = Foxp2Settings(target=target, sae_steps=sae_steps, sae_lr=3e-3,
                             window=list(window) if window else None)
    with _LOCK:
        analysis = analyze(model, bible_texts(["en", target], limit=verses), settings)
    return window_from_analysis(analysis)


def steer(name: str, method: str, prompt: str, tokens, positive: str = "", negative: str = "", layer=None,
          scale=None, recipe: str | None = None, axis_atlas: Sequence[str] | None = None, axis=None,
          target: str = "es", foxp2_window: tuple[int, ...] | None = None) -> SideBySide:
    """The playground: one steering method's continuation beside the unsteered one. `scale` is ActAdd's
    scale, FOXP2's α or the brain axis's strength; `recipe` is an uploaded recipe file and `axis_atlas`
    the uploaded files of a brain-axes atlas; `foxp2_window` fixes FOXP2's layers (None: its spectra
    choose them)."""
    prompt, tokens = check_prompt(prompt), check_tokens(tokens)
    model = model_for(name)
    if method == "ActAdd":
        from steering.actadd import actadd

        pos = [t for t in (positive or "").splitlines() if t.strip()]
        neg = [t for t in (negative or "").splitlines() if t.strip()]
        if not pos or not neg:
            raise DemoError("ActAdd needs at least one positive and one negative text (one per line).")
        scale = check_number(scale, "Scale", MAX_SCALE)
        layer = int(check_number(layer, "Layer", model.adapter.n_layers - 1))
        site = f"blocks.{layer}.hook_resid_pre"
        with _LOCK:
            edits = actadd(model, pos, neg, site, scale, skip_first=True)
        return compare(model, prompt, edits, tokens, f"ActAdd {scale:g} × (positive − negative) at {site}")
    if method == "FOXP2":
        from steering.foxp2 import foxp2_edits

        if target not in FOXP2_TARGETS:
            raise DemoError(f"FOXP2: choose a target language: {', '.join(FOXP2_TARGETS)}.")
        alpha = check_number(scale, "Strength", 10)
        window = _foxp2_window(name, target, FOXP2_VERSES, FOXP2_SAE_STEPS, foxp2_window)
        edits = foxp2_edits(window, alpha=alpha, beta=1.0)
        return compare(model, prompt, edits, tokens, f"FOXP2 English → {target}, α = {alpha:g}, window "
                       f"{[w.layer for w in window]}, {sum(len(w.target_neurons) for w in window)} target neurons")
    if method.startswith("Recipe"):
        header, edits = uploaded_recipe(recipe, model)
        writer = header.get("provenance", {}).get("writer", "unknown writer")
        return compare(model, prompt, edits, tokens, f"recipe from {writer}: {len(edits)} edit(s)")
    if method == "Brain axis":
        from steering.axes import atlas_axis_edits

        atlas = uploaded_atlas(axis_atlas, model.name)
        strength = check_number(scale, "Strength", MAX_SCALE)
        axis = int(check_number(axis, "Axis", 1000))
        with _LOCK:
            try:
                edits, note = atlas_axis_edits(model, atlas, axis, strength, [prompt])
            except InterpError as exc:
                raise DemoError(str(exc)) from None
        return compare(model, prompt, edits, tokens, note)
    raise DemoError(f"Choose a method: {', '.join(METHODS)}.")


# ---------------------------------------------------------------------------- HFTP


def hftp_spectra(name: str, layers: str, streams) -> tuple[bytes, str]:
    """Frequency tagging at a small, quick setting: the spectra plot and the per-layer table."""
    from probes.hftp.plots import spectra_png
    from probes.hftp.run import HftpSettings, run_hftp

    model = model_for(name)
    streams = int(check_number(streams, "Streams", 100))
    if streams < 4 or streams % 2:
        raise DemoError("Streams must be an even number from 4 to 100.")
    try:
        sites = model.adapter.expand("mlp.hook_post", (layers or "").strip() or None)
    except InterpError as exc:
        raise DemoError(str(exc)) from None
    if len(sites) > 6:
        raise DemoError("Pick at most 6 layers, e.g. 5,10,15.")
    settings = HftpSettings(n_streams=streams, n_groups=2, n_sentences=24, n_perm=100)
    with _LOCK:
        result = run_hftp(model, settings, sites)
    return spectra_png(result, 4 * settings.n_sentences), result.table()


# ---------------------------------------------------------------------------- MILAN


@lru_cache(maxsize=4)
def _milan_index(name: str, layer: int):
    from interp.corpora import demo_corpus
    from probes.milan import MilanSettings, index_exemplars

    model = model_for(name)
    settings = MilanSettings(k=8, beam=8, max_tokens=8, max_length=64)
    with _LOCK:
        index = index_exemplars(model, demo_corpus(), [f"blocks.{layer}.mlp.hook_post"], settings, progress=True)
    return index, settings


@lru_cache(maxsize=4)
def _describer(name: str, window: int):
    """MILAN's learned captioner for this model's tokenizer, trained on exemplars of the same `window` as the
    described neurons' (trained once, ~2 min, then read from the cache)."""
    from probes.milan.annotations import AnnotationSettings
    from probes.milan.captioner import TrainedDescriber, trained_captioner

    return TrainedDescriber(trained_captioner(model_for(name).tokenizer, AnnotationSettings(window=window),
                                              progress=True))


def describe(name: str, neuron: str) -> tuple[str, list[list]]:
    """MILAN's description of one neuron from its top exemplars in the demo corpus, and the exemplars."""
    from probes.milan import describe_neurons, exemplars_for

    model = model_for(name)
    layer, n = parse_neuron(neuron, model)
    index, settings = _milan_index(name, layer)
    site = f"blocks.{layer}.mlp.hook_post"
    with _LOCK:
        d = describe_neurons(model, index, {site: [n]}, _describer(name, settings.window), settings)[site][n]
        ex = exemplars_for(model, index, site, [n], settings)[0]
    text = f"{d.text}  (PMI {d.pmi:.2f}; plain captioner: {d.argmax})"
    return text, [[t] for t in ex.texts()[:5]]
