"""Adapters from a language model's hidden states to brain-atlas axes (Andric 2025; METHODS.md §G step 4).

1. `word_type_states`: the words the recordings heard go through the model in order (in
   chunks of `chunk` words); each word's hidden state at a site is the mean over its
   tokens; states are averaged per word type (the atlas's word keys) → [V, d_model].
2. `fit_adapters`: per layer, standardised states → axis scores by ridge with α chosen by
   cross-validation over {0.1, 1, 10, 100, 1000} (scikit-learn RidgeCV) on 80 % of the
   words; R² per axis on the held-out 20 % (split by word type), and the same fit on
   shuffled training labels as the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

import interp
from interp.batching import pool_words
from interp.errors import InterpError

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


@torch.inference_mode()
def word_type_states(model: interp.Model, words: Sequence[str], keys: Sequence[str], layers: Sequence[int], *,
                     site: str = "hook_resid_post", chunk: int = 48, batch_size: int = 4) -> dict[int, np.ndarray]:
    """{layer: [len(keys), d]} mean hidden state of each word type (`keys[i]` ← the words whose key it is).

    words: the heard word stream, in order; a word's key is `atlases.words.normalise(word)`.
    Types in `keys` that never occur get NaN rows."""
    from interp.lexicon import normalise

    index = {k: i for i, k in enumerate(keys)}
    sites = {l: f"blocks.{l}.{site}" for l in layers}
    sums = {l: None for l in layers}
    counts = np.zeros(len(keys))
    chunks = [list(words[i:i + chunk]) for i in range(0, len(words), chunk)]
    for b in range(0, len(chunks), batch_size):
        group = chunks[b:b + batch_size]
        texts = [" ".join(c) for c in group]
        batch = interp.tokenize(model.tokenizer, texts, words=True, max_length=16 * chunk)
        cache = interp.run_with_cache(model, batch, list(sites.values()))
        for i, c in enumerate(group):
            ids = batch.word_ids[i]
            n_words = int(ids.max()) + 1
            if n_words != len(c):
                raise InterpError(f"tokenisation lost words in chunk {b + i} ({n_words} of {len(c)})")
            rows = np.array([index.get(normalise(w), -1) for w in c])
            counts[rows[rows >= 0]] += 1
            for l, name in sites.items():
                acts = cache[name][i].float().cpu()
                pooled = pool_words(acts, ids, n_words)
                if sums[l] is None:
                    sums[l] = np.zeros((len(keys), acts.shape[-1]))
                np.add.at(sums[l], rows[rows >= 0], pooled.numpy()[rows >= 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return {l: sums[l] / counts[:, None] for l in layers}


@dataclass
class AxisAdapter:
    """score = ((h − mean) / scale) @ coef.T + intercept, h a hidden state [d]; coef [K, d]."""

    layer: int
    site: str
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    alpha: float

    def predict(self, states: np.ndarray) -> np.ndarray:
        """[n, d] → axis scores [n, K]."""
        return ((states - self.mean) / self.scale) @ self.coef.T + self.intercept

    def direction(self, axis: int, *, public_code: bool = False) -> np.ndarray:
        """The unit hidden-state direction that raises axis `axis` fastest: coef / scale, normalised.

        public_code: coef × scale instead, as the paper's public code does ("× scaler scale")."""
        v = self.coef[axis] * self.scale if public_code else self.coef[axis] / self.scale
        return v / np.linalg.norm(v)


@dataclass
class AdapterReport:
    """Per layer: the adapter, held-out R² per axis, and the shuffled-label baseline R²."""

    adapters: dict[int, AxisAdapter]
    r2: dict[int, np.ndarray]  # layer → [K]
    r2_shuffled: dict[int, np.ndarray]  # layer → [K], mean over shuffles
    n_train: int
    n_test: int
    axes: list[int] = field(default_factory=list)

    def table(self) -> str:
        head = f"{'layer':>5s} " + " ".join(f"{'axis ' + str(a):>16s}" for a in self.axes)
        rows = [head, f"{'':5s} " + " ".join(f"{'R²':>7s} {'shuffled':>8s}" for _ in self.axes)]
        for l in self.adapters:
            rows.append(f"{l:5d} " + " ".join(f"{self.r2[l][k]:7.3f} {self.r2_shuffled[l][k]:8.3f}"
                                             for k in range(len(self.axes))))
        rows.append(f"{self.n_train} training words, {self.n_test} held-out words (split by word type)")
        return "\n".join(rows)


def _r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return 1 - ((y - pred) ** 2).sum(0) / np.maximum(((y - y.mean(0)) ** 2).sum(0), 1e-30)


def fit_adapters(states: dict[int, np.ndarray], scores: np.ndarray, *, site: str = "hook_resid_post",
                 axes: Sequence[int] | None = None, test_fraction: float = 0.2, n_shuffles: int = 5,
                 alphas: Sequence[float] = ALPHAS, seed: int = 0) -> AdapterReport:
    """Adapters per layer from word-type states {layer: [V, d]} to axis scores [V, K] (rows with NaN states dropped)."""
    from sklearn.linear_model import RidgeCV

    axes = list(range(scores.shape[1])) if axes is None else list(axes)
    if not axes:
        raise InterpError("no axes to fit (the atlas recovered none)")
    y_all = scores[:, axes]
    ok = np.all([np.isfinite(s).all(1) for s in states.values()], axis=0)
    idx = np.flatnonzero(ok)
    if len(idx) < 10:
        raise InterpError(f"only {len(idx)} words have hidden states; need at least 10")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(idx)
    n_test = max(2, int(round(test_fraction * len(perm))))
    test, train = perm[:n_test], perm[n_test:]
    adapters, r2, r2_shuffled = {}, {}, {}
    for layer, h in states.items():
        mean, scale = h[train].mean(0), h[train].std(0)
        scale[scale == 0] = 1.0
        x = (h - mean) / scale
        fit = RidgeCV(alphas=list(alphas)).fit(x[train], y_all[train])
        adapters[layer] = AxisAdapter(layer, site, mean, scale, np.atleast_2d(fit.coef_), np.atleast_1d(fit.intercept_),
                                      float(fit.alpha_))
        r2[layer] = _r2(y_all[test], adapters[layer].predict(h[test]))
        base = []
        for _ in range(n_shuffles):
            shuffled = RidgeCV(alphas=list(alphas)).fit(x[train], y_all[rng.permutation(train)])
            base.append(_r2(y_all[test], shuffled.predict(x[test])))
        r2_shuffled[layer] = np.mean(base, axis=0)
    return AdapterReport(adapters, r2, r2_shuffled, len(train), len(test), axes)


def adapter_tensors(report: AdapterReport) -> dict[str, torch.Tensor]:
    """The adapters as atlas tensors: {"blocks.{l}.{site}/adapter.{coef,intercept,mean,scale}": …}."""
    out = {}
    for layer, a in report.adapters.items():
        for name in ("coef", "intercept", "mean", "scale"):
            out[f"blocks.{layer}.{a.site}/adapter.{name}"] = torch.from_numpy(
                np.ascontiguousarray(getattr(a, name), dtype=np.float32))
    return out


def adapter_params(report: AdapterReport, model_name: str) -> dict:
    """JSON-ready adapter summary for atlas params: model, axes, site, per-layer α / R² / shuffled R²."""
    layers = {str(l): {"alpha": a.alpha, "r2": report.r2[l].tolist(), "r2_shuffled": report.r2_shuffled[l].tolist()}
              for l, a in report.adapters.items()}
    return {"model": model_name, "axes": [int(a) for a in report.axes],
            "site": next(iter(report.adapters.values())).site, "layers": layers,
            "n_train": report.n_train, "n_test": report.n_test}


def load_adapter(tensors: dict[str, torch.Tensor], params: dict, layer: int) -> AxisAdapter:
    """One layer's adapter back from atlas tensors and `adapter_params`."""
    info = params["layers"].get(str(layer))
    if info is None:
        raise InterpError(f"the atlas has no adapter at layer {layer}; it has layers {', '.join(params['layers'])}")
    site = params["site"]
    get = lambda n: tensors[f"blocks.{layer}.{site}/adapter.{n}"].numpy().astype(np.float64)  # noqa: E731
    return AxisAdapter(layer, site, get("mean"), get("scale"), get("coef"), get("intercept"), float(info["alpha"]))
