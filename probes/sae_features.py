"""Sparse autoencoders on residual activations with SAE-Lens, and language selectivity of their features
(Neural FOXP2 step 1, METHODS.md §D).

- `residual_activations`: token activations at `blocks.L.hook_resid_post` over texts, [n_tokens, d_model].
- `train_sae`: a TopK SAE (SAE-Lens `TopKTrainingSAE`, trained by its `SAETrainer` on an
  in-memory, seeded stream of those activations); reproducible for a seed; returns the SAE
  and its explained variance on held-out activations.
- `feature_lift`: each feature's decoder direction through final norm + W_U; softmax mass on the
  target language's tokens minus that on English tokens.
- `trace_neurons`: a feature's strongest MLP neurons of the same layer — neurons whose write
  direction, weighted by their mean activation on the language, best aligns with the feature's
  decoder direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

import interp
from interp.errors import InterpError


@torch.inference_mode()
def residual_activations(model: interp.Model, texts: Sequence[str], layer: int, *, batch_size: int = 8,
                         max_length: int = 128) -> torch.Tensor:
    """Activations of every real token at `blocks.{layer}.hook_resid_post`: [n_tokens, d_model] float32."""
    site = f"blocks.{layer}.hook_resid_post"
    rows = []
    for s in range(0, len(texts), batch_size):
        batch = interp.tokenize(model.tokenizer, list(texts[s:s + batch_size]), max_length=max_length)
        x = interp.run_with_cache(model, batch, [site])[site].float()
        rows.append(x[batch.attention_mask.bool()])
    if not rows:
        raise InterpError("no texts to take activations from")
    return torch.cat(rows)


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
              batch_size: int = 256, lr: float = 1e-3, seed: int = 0, held_out: float = 0.1) -> TrainedSAE:
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
    trainer.fit()
    sae.eval()
    return TrainedSAE(sae, explained_variance(sae, test), layer, seed)


def feature_lift(model: interp.Model, decoder: torch.Tensor, target_ids: torch.Tensor,
                 english_ids: torch.Tensor) -> torch.Tensor:
    """M_T(j) − M_EN(j) per feature [d_sae]: softmax mass of W_U · (g ⊙ w_dec_j) on each token set."""
    a = model.adapter
    w = decoder.float() * a.final_norm_weight().detach().float()
    probs = torch.softmax(w @ a.unembed().detach().float().T, dim=-1)  # [d_sae, vocab]
    return probs[:, target_ids].sum(-1) - probs[:, english_ids].sum(-1)


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
