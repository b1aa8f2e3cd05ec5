"""MILAN exemplars (Hernandez et al. 2022; METHODS.md §F step 1) and its applications.

For each neuron of the chosen sites:
- its top k = 15 documents by the neuron's maximum activation (`interp.TopK`);
- its 0.99-quantile over every token of the corpus, exactly (`interp.UpperQuantile`): the
  highlight threshold;
- each exemplar as a window of tokens around the maximum, the tokens above the threshold
  marked ("the [[perro]] grande").

`describe_neurons` runs the describer (`probes.milan.describe`) over many neurons with a progress
bar, writing each finished site to a JSON checkpoint so that a killed run resumes where it
stopped. `search` ranks described neurons by a query's embedding similarity (auditing: "which
neurons respond to person names?"); `steering.milan.delete_edits` turns the hits into edits.
Image exemplars (the vision tower of a VLM) are in `probes.milan.images`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

import interp
from interp.cache import write_text_atomic
from interp.corpora import Document
from interp.errors import InterpError
from interp.runs import stream

from .describe import Description, Describer, describer_identity, pmi_choice


@dataclass
class MilanSettings:
    """The paper's choices (k = 15, q = 0.99, λ = 0.2, beam 50, 15 tokens) and ours (window)."""

    k: int = 15  # exemplars per neuron
    quantile: float = 0.99  # highlight threshold per neuron
    window: int = 8  # tokens of context on each side of the maximum
    lam: float = 0.2
    beam: int = 50
    max_tokens: int = 15
    mode: str = "rerank"  # or "per_step"
    batch_size: int = 8
    max_length: int = 128


@dataclass
class Exemplar:
    doc: int
    value: float  # the neuron's maximum in this document
    tokens: list[str]  # the window's tokens
    marked: list[bool]  # activation > threshold

    def text(self, mark: str = "[[{}]]") -> str:
        """The window with each run of marked tokens wrapped (leading spaces stay outside the mark)."""
        out, run = [], []

        def close() -> None:
            if run:
                joined = "".join(run)
                lead = joined[:len(joined) - len(joined.lstrip())]
                out.append(lead + mark.format(joined.strip()))
                run.clear()

        for t, m in zip(self.tokens, self.marked):
            if m:
                run.append(t)
            else:
                close()
                out.append(t)
        close()
        return "".join(out).replace("\n", " ").strip()


@dataclass
class NeuronExemplars:
    site: str
    unit: int
    threshold: float
    exemplars: list[Exemplar]

    def texts(self) -> list[str]:
        return [e.text() for e in self.exemplars]


@dataclass
class ExemplarIndex:
    """Per site: top-k documents, positions and values [width, k] and the thresholds [width]."""

    docs: list[Document]
    topk: dict[str, dict[str, torch.Tensor]]
    thresholds: dict[str, torch.Tensor]


def index_exemplars(model: interp.Model, corpus: Sequence[Document | str], sites: Sequence[str],
                    settings: MilanSettings = MilanSettings(), *, progress: bool = False,
                    checkpoint=None) -> ExemplarIndex:
    """One pass over the corpus: each unit's top-k documents and its q-quantile at every site.

    Data-parallel under torch.distributed (complete on rank 0); `checkpoint`: an
    `interp.runs.Checkpoint` to save progress to and resume from."""
    docs = [d if isinstance(d, Document) else Document(d) for d in corpus]
    if not docs:
        raise InterpError("MILAN needs a non-empty corpus to find exemplars in")
    top, quant = interp.TopK(k=settings.k), interp.UpperQuantile(settings.quantile, counted_tokens(model, docs, settings))
    with interp.capture(model, list(sites), [top, quant]) as run:
        stream(run, docs, batch_size=settings.batch_size, max_length=settings.max_length, progress=progress,
               checkpoint=checkpoint)
    return ExemplarIndex(docs, {s: top.state[s] for s in sites}, {s: quant.quantile(s) for s in sites})


def counted_tokens(model: interp.Model, docs: Sequence[Document], settings: MilanSettings) -> int:
    """How many tokens a capture of `docs` counts (tokenized as capture does; prompts excluded)."""
    n = 0
    for s in range(0, len(docs), 64):
        chunk = docs[s:s + 64]
        n += interp.tokenize(model.tokenizer, [d.text for d in chunk], prompts=[d.prompt for d in chunk],
                             max_length=settings.max_length).n_tokens
    return n


@torch.inference_mode()
def exemplars_for(model: interp.Model, index: ExemplarIndex, site: str, units: Sequence[int],
                  settings: MilanSettings = MilanSettings()) -> list[NeuronExemplars]:
    """The highlighted exemplars of `units` at `site`: their top documents re-run once (shared across units)."""
    st = index.topk[site]
    width = st["values"].shape[0]
    bad = [u for u in units if not 0 <= u < width]
    if bad:
        raise InterpError(f"units {bad[:5]} are outside {site}'s width {width}")
    wanted = sorted({int(d) for u in units for d in st["doc"][u].tolist() if d >= 0})
    acts: dict[int, tuple[list[int], torch.Tensor]] = {}  # doc → (token ids, [seq, width] activations)
    for s in range(0, len(wanted), settings.batch_size):
        chunk = wanted[s:s + settings.batch_size]
        batch = interp.tokenize(model.tokenizer, [index.docs[d].text for d in chunk], max_length=settings.max_length)
        got = interp.run_with_cache(model, batch, [site])[site].float().flatten(2).cpu()
        for b, d in enumerate(chunk):
            real = batch.mask[b].cpu()
            acts[d] = (batch.input_ids[b][real].tolist(), got[b][real])
    tok = model.tokenizer
    out = []
    for u in units:
        thr = float(index.thresholds[site][u])
        exs = []
        for value, d, pos in zip(st["values"][u].tolist(), st["doc"][u].tolist(), st["pos"][u].tolist()):
            if d < 0:
                continue
            ids, a = acts[d]
            lo, hi = max(0, pos - settings.window), min(len(ids), pos + settings.window + 1)
            exs.append(Exemplar(d, value, [tok.decode([i]) for i in ids[lo:hi]],
                                [bool(x > thr) for x in a[lo:hi, u].tolist()]))
        out.append(NeuronExemplars(site, int(u), thr, exs))
    return out


# ------------------------------------------------------------------------------ describing many
def read_checkpoint(checkpoint: str | Path, settings: MilanSettings) -> dict | None:
    """A describing checkpoint's content ({"settings", "describer", "descriptions"}), None when there is
    none; refused (InterpError) when it is not one or records no or other settings. Cheap, so a resume
    can be refused before the exemplar pass and before a describer is built or trained."""
    if not Path(checkpoint).exists():
        return None
    try:
        saved = json.loads(Path(checkpoint).read_text())
        saved["descriptions"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InterpError(f"{checkpoint}: not a MILAN checkpoint ({e})") from e
    # both must be recorded: a checkpoint of unknown settings or describer is not resumed
    if not saved.get("settings"):
        raise InterpError(f"{checkpoint} records no MILAN settings, so it cannot be resumed safely; delete it")
    if saved["settings"] != json.loads(json.dumps(asdict(settings))):
        raise InterpError(f"{checkpoint} was written with other MILAN settings; resume with the same ones "
                          "or delete it")
    return saved


def describe_neurons(model: interp.Model, index: ExemplarIndex, units: dict[str, Sequence[int]],
                     describer: Describer, settings: MilanSettings = MilanSettings(), *,
                     checkpoint: str | Path | None = None, progress: bool = True) -> dict[str, dict[int, Description]]:
    """Describe `units` {site: [unit, …]}; with `checkpoint` (a JSON file), every finished chunk of
    neurons is saved atomically and neurons already in it are not described again (resume)."""
    done: dict[str, dict[str, dict]] = {}
    saved = read_checkpoint(checkpoint, settings) if checkpoint is not None else None
    if saved is not None:
        done = saved["descriptions"]
        if not saved.get("describer"):
            raise InterpError(f"{checkpoint} records no describer, so it cannot be resumed safely; delete it")
        if saved["describer"] != describer_identity(describer):
            raise InterpError(f"{checkpoint} was written by another describer ({saved['describer']}); resume "
                              "with it or delete the checkpoint")
    total = sum(len(v) for v in units.values())
    bar = tqdm(total=total, disable=not progress, desc="describing neurons", unit="neuron")
    out: dict[str, dict[int, Description]] = {}
    for site, us in units.items():
        mine = out.setdefault(site, {})
        for u, rec in done.get(site, {}).items():
            mine[int(u)] = Description.from_json(rec)
        todo = [u for u in us if int(u) not in mine]
        bar.update(len(us) - len(todo))
        for s in range(0, len(todo), 16):  # exemplars for 16 neurons per re-run of their documents
            for ne in exemplars_for(model, index, site, todo[s:s + 16], settings):
                mine[ne.unit] = pmi_choice(describer, ne.texts(), lam=settings.lam, beam=settings.beam,
                                           max_tokens=settings.max_tokens, mode=settings.mode)
                bar.update(1)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, out, settings, describer_identity(describer))
    bar.close()
    return out


def _save_checkpoint(path: str | Path, out: dict[str, dict[int, Description]], settings: MilanSettings,
                     describer: str) -> None:
    body = {"settings": asdict(settings), "describer": describer,
            "descriptions": {s: {str(u): d.to_json() for u, d in ds.items()} for s, ds in out.items()}}
    write_text_atomic(path, json.dumps(body))


# ------------------------------------------------------------------------------ auditing
@dataclass
class Hit:
    site: str
    unit: int
    description: str
    similarity: float


def search(descriptions: dict[str, dict[int, Description | str]], query: str, *, top: int = 10,
           similarity: "Callable[[list[str], list[str]], torch.Tensor] | None" = None) -> list[Hit]:
    """Described neurons ranked by the similarity of their description to `query` (auditing)."""
    if not query.strip():
        raise InterpError("the search query is empty")
    flat = [(s, u, d if isinstance(d, str) else d.text) for s, ds in descriptions.items() for u, d in ds.items()]
    if not flat:
        raise InterpError("no described neurons to search")
    if similarity is None:
        from .eval import embedding_similarity as similarity
    sims = similarity([query] * len(flat), [t for _, _, t in flat])
    order = sims.argsort(descending=True)[:top].tolist()
    return [Hit(flat[i][0], flat[i][1], flat[i][2], float(sims[i])) for i in order]


def audit(describer: Describer, exemplars: Sequence[NeuronExemplars], query: str, *, lam: float = 0.2,
          top: int = 10) -> list[Hit]:
    """Neurons ranked by how well `query` describes their exemplars: PMI(query) = log p(query | E) − λ log p(query).

    Auditing inside MILAN's own model: the captioner scores the query as a description of each
    neuron, so no generated description has to happen to use the query's words. (The λ term is
    the same for every neuron; it keeps the score on the PMI scale.)
    """
    if not query.strip():
        raise InterpError("the audit query is empty")
    if not exemplars:
        raise InterpError("no neurons to audit")
    prior = float(describer.logprobs(None, [query])[0]) if lam else 0.0
    scored = [(float(describer.logprobs(ne.texts(), [query])[0]) - lam * prior, ne) for ne in exemplars]
    scored.sort(key=lambda x: -x[0])
    return [Hit(ne.site, ne.unit, query, s) for s, ne in scored[:top]]
