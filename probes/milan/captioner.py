"""MILAN's learned captioner for text neurons: p(d | E) and p(d) from one small trained network.

MILAN (Hernandez et al. 2022) does not prompt a language model: it trains a captioner on
annotated neurons (an image encoder and an LSTM decoder) and a language model of the annotations
for the prior. This is that design for text neurons, trained on `probes.milan.annotations`:

- encoder: every exemplar (a marked text window) → two sentence embeddings from the packaged
  all-MiniLM-L6-v2 (`probes.milan.eval.embed`): of its marked tokens and of the whole window;
  their mean over the exemplars is the neuron's code [768];
- decoder: a GRU over description words, started from the code. With a learned *null* code
  instead (used for a random `prior_share` of the training neurons) the same decoder is the
  prior p(d), a language model of the annotations alone — one network, as the captioner LM and
  its exemplar-free prompt are for `LMDescriber`.

`TrainedDescriber` implements `probes.milan.describe.Describer` (beam-search candidates, exact whole-
description scores, both PMI modes), so `pmi_choice` uses it exactly as it uses an LM. Trained
weights save as safetensors with the vocabulary and settings in its JSON metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from interp.errors import InterpError

from .annotations import AnnotatedNeuron, AnnotationSettings, synthetic_neurons

MARK = re.compile(r"\[\[(.*?)\]\]")
END, START = "<end>", "<start>"
FORMAT = "interp.milan_captioner/1"


@dataclass
class CaptionerSettings:
    hidden: int = 256
    embedding: int = 64
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    prior_share: float = 0.2  # training neurons shown with the null code: the decoder learns p(d) from them
    seed: int = 0


def words(description: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", description.lower())


def encode(exemplars: Sequence[str]) -> torch.Tensor:
    """[768]: the mean over exemplars of (marked tokens, whole window) MiniLM embeddings."""
    return encode_many([exemplars])[0]


def encode_many(neurons: Sequence[Sequence[str]], *, progress: bool = False, chunk: int = 64) -> torch.Tensor:
    """[n, 768]: `encode` of many neurons' exemplar lists, embedded in large batches."""
    from tqdm.auto import tqdm

    from .eval import embed

    if any(not exs for exs in neurons):
        raise InterpError("the captioner needs at least one exemplar per neuron")
    out = []
    for s in tqdm(range(0, len(neurons), chunk), disable=not progress, desc="encoding exemplars", unit="chunk"):
        group = neurons[s:s + chunk]
        marked = [" ".join(m.strip() for m in MARK.findall(e)) or e for exs in group for e in exs]
        plain = [MARK.sub(r"\1", e) for exs in group for e in exs]
        both = embed([*marked, *plain])
        mk, pl = both[:len(marked)], both[len(marked):]
        start = 0
        for exs in group:
            out.append(torch.cat([mk[start:start + len(exs)].mean(0), pl[start:start + len(exs)].mean(0)]))
            start += len(exs)
    return torch.stack(out)


class Captioner(nn.Module):
    """GRU decoder over description words, started from a neuron's code (or the null code)."""

    def __init__(self, vocab: Sequence[str], settings: CaptionerSettings, code_width: int = 768) -> None:
        super().__init__()
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.settings = settings
        self.null = nn.Parameter(torch.zeros(code_width))
        self.start = nn.Linear(code_width, settings.hidden)
        self.embed = nn.Embedding(len(self.vocab), settings.embedding)
        self.gru = nn.GRU(settings.embedding, settings.hidden, batch_first=True)
        self.out = nn.Linear(settings.hidden, len(self.vocab))

    def h0(self, codes: torch.Tensor | None, n: int = 1) -> torch.Tensor:
        """[1, n, hidden] from codes [n, 768] (None: the null code, the prior)."""
        c = self.null.expand(n, -1) if codes is None else codes
        return torch.tanh(self.start(c))[None]

    def step(self, tokens: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of the next word [n, vocab] after `tokens` [n, t] from state h; the new state."""
        y, h = self.gru(self.embed(tokens), h)
        return torch.log_softmax(self.out(y[:, -1]), -1), h

    def digest(self) -> str:
        """16 hex digits of a hash of the vocabulary, settings and weights: which captioner this is."""
        h = hashlib.sha256(json.dumps([self.vocab, asdict(self.settings)]).encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def ids(self, description: str) -> list[int] | None:
        """START, the words, END; None when a word is not in the vocabulary."""
        ws = words(description)
        if any(w not in self.index for w in ws):
            return None
        return [self.index[START], *(self.index[w] for w in ws), self.index[END]]

    def sequence_logprob(self, codes: torch.Tensor | None, seqs: list[list[int]]) -> torch.Tensor:
        """[n]: log p(words and END) of each id sequence (START first) under its code."""
        n, width = len(seqs), max(map(len, seqs))
        batch = torch.full((n, width), self.index[END])
        for i, s in enumerate(seqs):
            batch[i, :len(s)] = torch.tensor(s)
        y, _ = self.gru(self.embed(batch[:, :-1]), self.h0(codes, n))
        logp = torch.log_softmax(self.out(y), -1).gather(-1, batch[:, 1:, None])[..., 0]
        mask = torch.arange(width - 1)[None] < torch.tensor([len(s) - 1 for s in seqs])[:, None]
        return (logp * mask).sum(1)


def train_captioner(neurons: Sequence[AnnotatedNeuron], settings: CaptionerSettings = CaptionerSettings(),
                    *, codes: torch.Tensor | None = None) -> Captioner:
    """Fit the captioner by maximum likelihood on every (neuron, annotation) pair; `codes` [n, 768]
    (the neurons' encodings) when already computed."""
    if not neurons:
        raise InterpError("no annotated neurons to train the captioner on")
    torch.manual_seed(settings.seed)
    codes = encode_many([n.exemplars for n in neurons]) if codes is None else codes
    vocab = [START, END, *sorted({w for n in neurons for a in n.annotations for w in words(a)})]
    model = Captioner(vocab, settings, codes.shape[1])
    pairs = [(i, model.ids(a)) for i, n in enumerate(neurons) for a in n.annotations]
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    for _ in range(settings.steps):
        pick = torch.randint(len(pairs), (settings.batch_size,), generator=g).tolist()
        seqs = [pairs[i][1] for i in pick]
        c = codes[[pairs[i][0] for i in pick]]
        prior = torch.rand(len(pick), generator=g) < settings.prior_share
        c = torch.where(prior[:, None], model.null.expand_as(c), c)
        loss = -model.sequence_logprob(c, seqs).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# A test-size captioner (a fifth of the synthetic neurons, 300 steps; ~1 min to train instead of ~4):
# `trained_captioner(tok, *TEST_SIZE)`, for tests and notebooks at their small size. The default is the one
# `benchmarks/milan_known_roles.py` judges.
TEST_SIZE = (AnnotationSettings(per_category=4, verses=400), CaptionerSettings(steps=300))


def trained_captioner(tokenizer, annotations: AnnotationSettings = AnnotationSettings(),
                      settings: CaptionerSettings = CaptionerSettings(), *, progress: bool = False) -> Captioner:
    """The captioner trained on synthetic neurons tokenized by `tokenizer`, from the interp cache
    (`captioner_file`: trained and saved on first use, ~4 min on one CPU core with the default
    settings, ~1 min when another captioner's cached exemplar codes serve)."""
    return load_captioner(captioner_file(tokenizer, annotations, settings, progress=progress))


def captioner_file(tokenizer, annotations: AnnotationSettings = AnnotationSettings(),
                   settings: CaptionerSettings = CaptionerSettings(), *, progress: bool = False) -> Path:
    """The cached captioner's file (`captioners/<key>.safetensors`, what `--describer FILE` takes),
    trained and saved first if missing.
    The key hashes the settings and the tokenizer's vocabulary. Training runs on one thread,
    whatever the machine's count, so that every machine (with the same torch build) trains the
    same captioner: sums split over other thread counts round differently, and 1500 Adam steps
    turn that into different weights and some different descriptions (measured)."""
    from interp.cache import build_lock, cache_dir

    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    key = hashlib.sha256(json.dumps([FORMAT, "one thread", asdict(annotations), asdict(settings), vocab]).encode())
    path = cache_dir() / "captioners" / f"{key.hexdigest()[:16]}.safetensors"
    if not path.exists():
        with build_lock(path):
            if not path.exists():
                with _one_thread():
                    neurons = synthetic_neurons(tokenizer, annotations)
                    codes = _cached_codes([n.exemplars for n in neurons], progress=progress)
                    save_captioner(train_captioner(neurons, settings, codes=codes), path)
    return path


def _cached_codes(neurons: Sequence[Sequence[str]], *, progress: bool = False) -> torch.Tensor:
    """`encode_many(neurons)` [n, 768], from the interp cache (`captioners/codes-<key>.safetensors`,
    the key a hash of the exemplars): captioners that differ only in their annotations (how vague
    the annotators are, the training seed) share the MiniLM pass, most of a captioner's cost."""
    from safetensors.torch import load_file, save_file

    from interp.cache import atomic_path, build_lock, cache_dir

    key = hashlib.sha256(json.dumps([FORMAT, "codes", [list(exs) for exs in neurons]]).encode()).hexdigest()[:16]
    path = cache_dir() / "captioners" / f"codes-{key}.safetensors"
    with build_lock(path):
        if path.exists():
            try:
                codes = load_file(str(path))["codes"]
                if codes.shape[0] == len(neurons):
                    return codes
            except Exception:  # a corrupt entry is rebuilt
                pass
        codes = encode_many(neurons, progress=progress)
        with atomic_path(path) as tmp:
            save_file({"codes": codes.contiguous()}, str(tmp))
    return codes


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def save_captioner(model: Captioner, path: str | Path) -> Path:
    """Atomic safetensors file; vocabulary and settings in its metadata."""
    from safetensors.torch import save_file

    from interp.cache import atomic_path

    path = Path(path)
    meta = {"format": FORMAT, "vocab": json.dumps(model.vocab),
            "settings": json.dumps(asdict(model.settings)), "code_width": str(model.null.numel())}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    return path


def load_captioner(path: str | Path) -> Captioner:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise InterpError(f"{path} is not a MILAN captioner")
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = Captioner(json.loads(meta["vocab"]), CaptionerSettings(**json.loads(meta["settings"])),
                          int(meta["code_width"]))
        model.load_state_dict(state)
    except InterpError:
        raise
    except Exception as e:  # a corrupt or foreign file: one line, no traceback
        raise InterpError(f"{path}: cannot read a MILAN captioner ({type(e).__name__}: {e})") from e
    return model.eval()


class TrainedDescriber:
    """`Describer` over a trained `Captioner`: beam search on words, exact whole-description scores."""

    def __init__(self, model: Captioner) -> None:
        self.model = model
        self.identity = f"captioner {model.digest()}"
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None

    def _code(self, exemplars: Sequence[str] | None) -> torch.Tensor | None:
        if exemplars is None:
            return None
        key = tuple(exemplars)
        if self._last is None or self._last[0] != key:
            self._last = (key, encode(exemplars)[None])
        return self._last[1]

    @torch.inference_mode()
    def logprobs(self, exemplars: Sequence[str] | None, descriptions: Sequence[str]) -> torch.Tensor:
        """[n]: log p(d | E) (or log p(d) when `exemplars` is None); −inf for out-of-vocabulary words."""
        code = self._code(exemplars)
        ids = [self.model.ids(d) for d in descriptions]
        known = [i for i, s in enumerate(ids) if s is not None]
        out = torch.full((len(descriptions),), -torch.inf)
        if known:
            seqs = [ids[i] for i in known]
            c = None if code is None else code.expand(len(seqs), -1)
            out[known] = self.model.sequence_logprob(c, seqs)
        return out

    @torch.inference_mode()
    def candidates(self, exemplars: Sequence[str], *, beam: int, max_tokens: int, lam: float,
                   mode: str) -> list[str]:
        """Beam search under log p(d | E) (mode "rerank") or log p(d | E) − λ log p(d) per word ("per_step")."""
        m = self.model
        end, start = m.index[END], m.index[START]
        h = m.h0(self._code(exemplars))
        hp = m.h0(None) if mode == "per_step" else None
        beams = [([start], 0.0, h, hp)]
        done: list[tuple[list[int], float]] = []
        for _ in range(max_tokens):
            grown = []
            for seq, score, h, hp in beams:
                tok = torch.tensor([[seq[-1]]])
                logp, h2 = m.step(tok, h)
                step = logp[0]
                hp2 = None
                if hp is not None:
                    prior, hp2 = m.step(tok, hp)
                    step = step - lam * prior[0]
                top = step.topk(min(beam, step.numel()))
                grown += [(seq + [int(i)], score + float(v), h2, hp2) for v, i in zip(top.values, top.indices)]
            grown.sort(key=lambda b: -b[1])
            beams = []
            for b in grown[:beam]:
                if b[0][-1] == end:
                    done.append((b[0], b[1]))
                else:
                    beams.append(b)
            if not beams:
                break
        texts = [" ".join(m.vocab[i] for i in seq[1:-1]) for seq, _ in sorted(done, key=lambda d: -d[1])]
        return list(dict.fromkeys(t for t in texts if t))[:beam]
