"""FOXP2 step 1 pieces: a seeded SAE-Lens TopK SAE on smollm2 residual activations, feature lift, neuron tracing."""

from __future__ import annotations

import pytest
import torch

from interp.corpora import language_token_sets
from probes.language_counts import bible_texts
from probes.sae_features import feature_lift, residual_activations, trace_neurons, train_sae

LAYER = 10


@pytest.fixture(scope="module")
def acts(smollm2):
    t = bible_texts(["en", "es"], limit=48)
    es, en = residual_activations(smollm2, t["es"], LAYER), residual_activations(smollm2, t["en"], LAYER)
    mixed = torch.cat([es, en])
    return es, en, mixed[torch.randperm(mixed.shape[0], generator=torch.Generator().manual_seed(0))]


@pytest.mark.slow
def test_sae_is_seeded_and_reconstructs(acts) -> None:
    _, _, mixed = acts
    a = train_sae(mixed, LAYER, steps=120, seed=3)
    b = train_sae(mixed, LAYER, steps=120, seed=3)
    c = train_sae(mixed, LAYER, steps=120, seed=4)
    print(f"\nexplained variance on held-out tokens: {a.explained_variance:.3f}")
    assert torch.equal(a.decoder, b.decoder) and not torch.equal(a.decoder, c.decoder)
    assert a.explained_variance > 0.5
    assert a.decoder.shape == (4 * 576, 576)


@pytest.mark.slow
def test_spanish_features_lift_spanish_tokens_and_trace_to_neurons(smollm2, acts) -> None:
    es, en, mixed = acts
    trained = train_sae(mixed, LAYER, steps=120, seed=0)
    sets = language_token_sets(smollm2.tokenizer, ["es", "en"])
    lift = feature_lift(smollm2, trained.decoder, sets["es"], sets["en"])
    # the features most used on Spanish tokens (vs English) lift Spanish tokens more than those used on English
    use = trained.encode(es).mean(0) - trained.encode(en).mean(0)
    es_feats, en_feats = use.topk(20).indices, (-use).topk(20).indices
    print(f"\nlift: Spanish-used features {lift[es_feats].mean():+.4f}, English-used {lift[en_feats].mean():+.4f}")
    assert lift[es_feats].mean() > lift[en_feats].mean()
    neurons = trace_neurons(smollm2, LAYER, trained.decoder[es_feats[:3]], torch.ones(smollm2.adapter.d_mlp), top=5)
    assert 5 <= len(neurons) <= 15 and all(0 <= n < smollm2.adapter.d_mlp for n in neurons)
    w = smollm2.adapter.write_weights(LAYER).detach().float()
    best = int((trained.decoder[es_feats[0]] @ w).argmax())
    assert neurons[0] == best  # the first neuron is the first feature's best-aligned one


@pytest.mark.slow
def test_a_saved_sae_loads_back_through_sae_lens(acts, tmp_path) -> None:
    from probes.sae_features import explained_variance, load_sae, save_sae

    _, _, mixed = acts
    trained = train_sae(mixed, LAYER, steps=60, seed=1)
    loaded = load_sae(save_sae(trained, tmp_path / "sae"), LAYER, mixed[:500])
    assert torch.allclose(loaded.decoder, trained.decoder)
    assert torch.allclose(loaded.encode(mixed[:50]), trained.encode(mixed[:50]), atol=1e-5)
    assert abs(loaded.explained_variance - explained_variance(trained.sae, mixed[:500])) < 1e-5
    with pytest.raises(Exception, match="not an SAE-Lens SAE folder"):
        load_sae(tmp_path, LAYER, mixed[:10])
