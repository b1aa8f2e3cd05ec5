"""Sparse autoencoders on residual activations with SAE-Lens, and language selectivity of their features
(Neural FOXP2 step 1, METHODS.md §D).

- `token_activations` / `residual_activations`: every token's activations at some sites (the
  residual stream `blocks.L.hook_resid_post`), [n_tokens, width], all sites in one pass.
- `train_sae`: a TopK SAE (SAE-Lens `TopKTrainingSAE`, trained by its `SAETrainer` on an
  in-memory, seeded stream of those activations); reproducible for a seed; returns the SAE
  and its explained variance on held-out activations.
- `feature_lift`: each feature's decoder direction through the final norm + W_U; softmax mass on the
  target language's tokens minus (or log-ratio against) that on English tokens.
- `trace_neurons`: a feature's strongest MLP neurons of the same layer — neurons whose write
  direction, weighted by their mean activation on the language, best aligns with the feature's
  decoder direction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from unittest import mock
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

import interp
from interp.batching import without_first
from interp.errors import InterpError


@torch.inference_mode()
def token_activations(model: interp.Model, texts: Sequence[str], sites: Sequence[str], *, skip_first: bool = True,
                      batch_size: int = 8, max_length: int = 128) -> dict[str, torch.Tensor]:
    """{site: [n_tokens, width] float32}: every real token's activations, all sites in one pass per batch.

    skip_first drops each text's first token, the attention sink: its residual norm is orders of
    magnitude above the rest and would dominate both an SAE's loss and its explained variance.
    """
    if not texts:
        raise InterpError("no texts to take activations from")
    rows: dict[str, list] = {site: [] for site in sites}
    for s in range(0, len(texts), batch_size):
        batch = interp.tokenize(model.tokenizer, list(texts[s:s + batch_size]), max_length=max_length)
        cache = interp.run_with_cache(model, batch, list(sites))
        real = (without_first(batch.attention_mask) if skip_first else batch.attention_mask).bool()
        for site in sites:
            rows[site].append(cache[site].float().flatten(2)[real].cpu())
    return {site: torch.cat(v) for site, v in rows.items()}


def residual_activations(model: interp.Model, texts: Sequence[str], layers: int | Sequence[int],
                         **kwargs) -> torch.Tensor | dict[int, torch.Tensor]:
    """`token_activations` at `blocks.L.hook_resid_post`: [n_tokens, d_model] for one layer,
    {layer: [n_tokens, d_model]} for a list."""
    one = isinstance(layers, int)
    layers = [layers] if one else list(layers)
    acts = token_activations(model, texts, [f"blocks.{l}.hook_resid_post" for l in layers], **kwargs)
    out = {l: acts[f"blocks.{l}.hook_resid_post"] for l in layers}
    return out[layers[0]] if one else out


class _Stream(Iterator[torch.Tensor]):
    """Batches drawn with replacement from an activation matrix, from a seeded generator."""

    def __init__(self, acts: torch.Tensor, batch: int, seed: int) -> None:
        self.acts, self.batch = acts, batch
        self.g = torch.Generator().manual_seed(seed)

    def __next__(self) -> torch.Tensor:
        return self.acts[torch.randint(self.acts.shape[0], (self.batch,), generator=self.g)]


@dataclass
class TrainedSAE:
    sae: object  # sae_lens TopKTrainingSAE
    explained_variance: float  # on held-out activations
    layer: int
    seed: int

    @property
    def decoder(self) -> torch.Tensor:
        """[d_sae, d_model]."""
        return self.sae.W_dec.detach()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.sae.encode(x)


def explained_variance(sae, x: torch.Tensor) -> float:
    """1 − ‖x − x̂‖² / ‖x − x̄‖² over rows of x."""
    with torch.no_grad():
        recon = sae.decode(sae.encode(x))
    return float(1 - (x - recon).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def train_sae(acts: torch.Tensor, layer: int, *, expansion: int = 4, k: int = 32, steps: int = 400,
              batch_size: int = 256, lr: float = 1e-3, seed: int = 0, held_out: float = 0.1,
              progress: bool = False) -> TrainedSAE:
    """Train a TopK SAE (SAE-Lens) on activations [n, d_model]; the last `held_out` share scores it."""
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    n = acts.shape[0]
    cut = max(1, int(n * (1 - held_out)))
    train, test = acts[:cut], acts[cut:] if cut < n else acts[:1]
    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=expansion * acts.shape[1], k=k,
                                                device="cpu", dtype="float32"))
    cfg = SAETrainerConfig(total_training_samples=steps * batch_size, train_batch_size_samples=batch_size, lr=lr,
                           lr_end=lr, device="cpu", n_checkpoints=0, save_final_checkpoint=False,
                           logger=LoggingConfig(log_to_wandb=False), n_batches_for_norm_estimate=8)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=_Stream(train, batch_size, seed))
    # SAE-Lens's trainer always draws a progress bar; it has no switch, so hand it a quiet tqdm
    with mock.patch("sae_lens.training.sae_trainer.tqdm", functools.partial(tqdm, disable=not progress)):
        trainer.fit()
    sae.eval()
    return TrainedSAE(sae, explained_variance(sae, test), layer, seed)


LIFTS = ("difference", "log_ratio")


def save_sae(trained: TrainedSAE, folder: str | Path) -> Path:
    """Write the SAE in SAE-Lens's format (safetensors weights + JSON config) to `folder`; it loads back
    as SAE-Lens's inference SAE with the same encoder and decoder (no decoder-norm folding, which
    would change which features win the top k)."""
    trained.sae.save_model(folder)
    return Path(folder)


def load_sae(folder: str | Path, layer: int, held_out: torch.Tensor) -> TrainedSAE:
    """An SAE-Lens SAE from disk (any architecture SAE-Lens reads), scored on `held_out` [n, d_model]."""
    from sae_lens import SAE

    if not (Path(folder) / "cfg.json").is_file():
        raise InterpError(f"{folder} is not an SAE-Lens SAE folder (no cfg.json)")
    sae = SAE.load_from_disk(str(folder), device="cpu")
    if sae.cfg.d_in != held_out.shape[1]:
        raise InterpError(f"the SAE in {folder} reads d_in = {sae.cfg.d_in}, but layer {layer} has width "
                          f"{held_out.shape[1]}")
    sae.eval()
    return TrainedSAE(sae, explained_variance(sae, held_out.to(sae.W_dec.dtype)), layer, seed=-1)


def feature_lift(model: interp.Model, decoder: torch.Tensor, target_ids: torch.Tensor,
                 english_ids: torch.Tensor, *, kind: str = "difference", chunk: int = 256) -> torch.Tensor:
    """Each feature's lift toward the target language [d_sae].

    The decoder direction goes through the model's own final norm (which also undoes its
    arbitrary scale) and W_U; M = softmax mass on a token set. kind "difference": M_T − M_EN;
    "log_ratio": log M_T − log M_EN.
    """
    if kind not in LIFTS:
        raise InterpError(f"feature lift kind must be one of {', '.join(LIFTS)}, not {kind!r}")
    a = model.adapter
    U = a.unembed().detach()
    W = U.float()
    out = []
    with torch.no_grad():
        for rows in decoder.split(chunk):  # [chunk, vocab] at a time: a 262k vocabulary is 1 GiB per 1k rows
            normed = a.final_norm(rows.to(model.device, U.dtype)).float()
            probs = torch.softmax(normed @ W.T, dim=-1)
            m_t, m_en = probs[:, target_ids].sum(-1), probs[:, english_ids].sum(-1)
            out.append(m_t - m_en if kind == "difference" else m_t.clamp(min=1e-30).log() - m_en.clamp(min=1e-30).log())
    return torch.cat(out).cpu()


def trace_neurons(model: interp.Model, layer: int, directions: torch.Tensor, mean_activation: torch.Tensor,
                  *, top: int = 16) -> list[int]:
    """MLP neurons of `layer` whose contribution (mean activation × write direction) aligns best with
    any of `directions` [f, d_model]: the union of each direction's `top` neurons, strongest first."""
    write = model.adapter.write_weights(layer).detach().float()  # [d_model, d_mlp]
    contrib = (directions.float() @ write) * mean_activation.float()[None, :]  # [f, d_mlp]
    picked: list[int] = []
    for row in contrib:
        for n in row.topk(top).indices.tolist():
            if n not in picked:
                picked.append(n)
    return picked
