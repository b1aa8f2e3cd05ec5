"""Synthetic atlases in each analyzer's own format (keys as probes/stats.py, atlases/lm_head_store.py,
cli/language.py, cli/hftp.py, cli/milan.py, cli/foxp2.py and cli/shared_neurons.py write them), for the neuron-card
tests: model "m", layers 3 and 7, 12 neurons each."""

from __future__ import annotations

import torch

from atlases import Atlas

LAYERS, W, K, G = (3, 7), 12, 4, 2
VOCAB = [f"tok{i}" for i in range(50)]


def stats_atlas(g) -> Atlas:
    t = {}
    for layer in LAYERS:
        s = f"blocks.{layer}.mlp.hook_post"
        t[f"{s}/counts"] = torch.randint(0, 9, (G, W), generator=g)
        t[f"{s}/tokens"] = torch.tensor([40, 30])
        t[f"{s}/frequency"] = t[f"{s}/counts"] / t[f"{s}/tokens"].unsqueeze(1)
        t[f"{s}/mean"], t[f"{s}/std"], t[f"{s}/mean_abs"] = (torch.rand(G, W, generator=g) for _ in range(3))
        t[f"{s}/topk_values"] = torch.rand(W, 3, generator=g).sort(1, descending=True).values
        t[f"{s}/topk_doc"] = torch.randint(0, 5, (W, 3), generator=g)
        t[f"{s}/topk_doc"][0, 2] = -1  # unfilled
        t[f"{s}/topk_pos"] = torch.randint(0, 6, (W, 3), generator=g)
    docs = [{"index": i, "text": f"document {i}", "group": "en"} for i in range(5)]
    return Atlas("m", [f"blocks.{layer}.mlp.hook_post" for layer in LAYERS], "activation-statistics", t,
                 {"groups": ["en", "fr"]}, documents=docs)


def lm_atlas(g, model="m") -> Atlas:
    t = {}
    for layer in LAYERS:
        for d in ("write", "up"):
            t[f"blocks.{layer}.mlp.hook_post/{d}.top_ids"] = torch.randint(0, len(VOCAB), (W, 4), generator=g)
            t[f"blocks.{layer}.mlp.hook_post/{d}.top_probs"] = torch.rand(W, 4, generator=g)
    return Atlas(model, [f"blocks.{layer}.mlp.hook_post" for layer in LAYERS], "lm-head", t,
                 {"directions": ["write", "up"], "d_mlp": W}, vocab=VOCAB)


def lang_atlas(g) -> Atlas:
    t = {}
    for layer in LAYERS:
        s = f"blocks.{layer}.mlp.hook_pre"
        t[f"{s}/counts"] = torch.randint(0, 20, (K, W), generator=g)
        t[f"{s}/masks"] = torch.rand(K, W, generator=g) < torch.tensor([0.0, 0.3, 0.6, 1.0]).repeat(3)[:W]
        n = t[f"{s}/masks"].sum(0)
        t[f"{s}/n_langs"] = torch.where(n > 0, n, -1)
        t[f"{s}/agnostic"] = n == K
    return Atlas("m", [f"blocks.{layer}.mlp.hook_pre" for layer in LAYERS], "language-neurons/zhang2025", t,
                 {"langs": ["en", "es", "fr", "zh"], "tokens_per_language": [100, 50, 80, 20]})


def hftp_atlas(g) -> Atlas:
    t = {}
    for layer in LAYERS:
        s = f"blocks.{layer}.mlp.hook_post"
        t[f"{s}/label"] = torch.randint(0, 4, (W,), generator=g).to(torch.int8)
        t[f"{s}/z.sentence"], t[f"{s}/z.phrase"] = torch.randn(W, generator=g), torch.randn(W, generator=g)
        for cond in ("experiment", "control"):
            t[f"{s}/spectrum.{cond}"] = torch.rand(9, W, generator=g).half()  # 4n = 16 words: 9 bins
    return Atlas("m", [f"blocks.{layer}.mlp.hook_post" for layer in LAYERS], "hftp", t,
                 {"rates": {"sentence": 0.25, "phrase": 0.5}})


def foxp2_atlas(g) -> Atlas:
    s = "blocks.7.mlp.hook_post"  # a window of one layer
    t = {f"{s}/directions": torch.randn(W, 2, generator=g), f"{s}/mean_diff": torch.randn(W, generator=g)}
    return Atlas("m", [s], "foxp2", t, {"target": "es", "window": [7],
                                        "layers": {"7": {"target_neurons": [1, 4], "english_neurons": [4, 9]}}})


def shared_atlas(g) -> Atlas:
    t = {f"blocks.{layer}.{module}/{name}": (torch.rand(W if module == "up" else 5, generator=g) < 0.4).to(torch.int8)
         for layer in LAYERS for module in ("q", "up") for name in ("llm", "vlm", "shared")}
    return Atlas("m", sorted({k.split("/")[0] for k in t}), "shared-neurons", t, {"vlm": "m", "llm": "m-llm"})


def milan_atlas() -> Atlas:
    return Atlas("m", ["blocks.7.mlp.hook_post"], "milan", {"blocks.7.mlp.hook_post/threshold": torch.zeros(W)},
                 {"descriptions": {"blocks.7.mlp.hook_post": {"5": {"text": "names of cities", "pmi": 1.5,
                                                                     "argmax": "names"}}}})


def all_atlases(seed: int = 0) -> dict[str, Atlas]:
    """One atlas of each kind, keyed by the index's field prefix."""
    g = torch.Generator().manual_seed(seed)
    return {"stats": stats_atlas(g), "lm": lm_atlas(g), "lang": lang_atlas(g), "hftp": hftp_atlas(g),
            "milan": milan_atlas(), "foxp2": foxp2_atlas(g), "shared": shared_atlas(g)}


D_MODEL = 6


def brain_atlas(g) -> Atlas:
    """A brain-axes atlas (model "meg") with adapters fitted on "m" at layer 7: axes 2 and 5 of the recordings."""
    s = "blocks.7.hook_resid_post"
    t = {"meg/scores": torch.zeros(3, 2), f"{s}/adapter.coef": torch.randn(2, D_MODEL, generator=g),
         f"{s}/adapter.scale": torch.rand(D_MODEL, generator=g) + 0.5, f"{s}/adapter.mean": torch.zeros(D_MODEL),
         f"{s}/adapter.intercept": torch.zeros(2)}
    return Atlas("meg", ["meg", s], "brain-axes", t, {"adapters": {"model": "m", "axes": [2, 5], "site": "hook_resid_post",
                                                                    "layers": {"7": {"alpha": 1.0}}}})


class StandIn:
    """What merging brain-axes adapters reads of a model: its name and each layer's MLP write weights [d, W]."""

    def __init__(self, name: str = "m", seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.name, self.weights = name, {layer: torch.randn(D_MODEL, W, generator=g) for layer in LAYERS}
        self.adapter = self

    def write_weights(self, layer: int) -> torch.Tensor:
        return self.weights[layer]
