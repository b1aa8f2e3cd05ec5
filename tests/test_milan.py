"""MILAN (issue 10): exact thresholds, highlighted exemplars, the describer's exact scores, PMI decoding."""

from __future__ import annotations

import json
import math

import pytest
import torch

import interp
from interp.batching import Batch
from interp.corpora import Document
from probes.milan import Exemplar, MilanSettings, describe_neurons, exemplars_for, index_exemplars
from probes.milan.describe import LMDescriber, PromptTemplate, pmi_choice


# ------------------------------------------------------------------ the streaming quantile
def _feed(reducer: interp.UpperQuantile, x: torch.Tensor, chunks: int) -> None:
    """Feed rows of x [n, width] as `chunks` batches of one document each."""
    reducer.bind("s", x.shape[1], ["all"])
    for part in x.chunk(chunks):
        reducer.update("s", part[None], _one_document(part.shape[0]))


def _one_document(n: int) -> Batch:
    ones = torch.ones(1, n, dtype=torch.long)
    return Batch(input_ids=ones, attention_mask=ones, mask=ones.bool(), positions=torch.arange(n)[None],
                 doc_index=torch.zeros(1, dtype=torch.long), group_index=torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("n, q", [(1000, 0.99), (997, 0.99), (100, 0.99), (50, 0.9), (7, 0.5)])
def test_upper_quantile_is_the_exact_nearest_rank_quantile(n, q) -> None:
    x = torch.randn(n, 12, generator=torch.Generator().manual_seed(n))
    r = interp.UpperQuantile(q, tokens=n)
    _feed(r, x, chunks=min(n, 9))
    rank = math.ceil(round(q * n, 9))
    expected = x.sort(0).values[rank - 1]  # the smallest v with at least q·n values ≤ v
    assert torch.equal(r.quantile("s"), expected)
    assert r.state["s"]["top"].shape[1] <= math.ceil((1 - q) * n) + 1  # memory: the tail only


def test_upper_quantile_merges_and_round_trips(tmp_path) -> None:
    x = torch.randn(400, 5, generator=torch.Generator().manual_seed(1))
    whole, a, b = (interp.UpperQuantile(0.95, tokens=400) for _ in range(3))
    _feed(whole, x, 4)
    _feed(a, x[:150], 2)
    _feed(b, x[150:], 3)
    a.merge(b)
    assert torch.equal(a.quantile("s"), whole.quantile("s"))
    a.save(tmp_path / "q.safetensors")
    back = interp.Reducer.load(tmp_path / "q.safetensors")
    assert isinstance(back, interp.UpperQuantile) and torch.equal(back.quantile("s"), whole.quantile("s"))
    for bad in ({"q": 1.0, "tokens": 10}, {"q": 0.9, "tokens": 0}):
        with pytest.raises(interp.InterpError):
            interp.UpperQuantile(**bad)


# ------------------------------------------------------------------ exemplars
def test_exemplar_text_marks_runs_and_keeps_spaces_outside() -> None:
    e = Exemplar(0, 1.0, ["The", " big", " dog", " ran", "."], [False, True, True, False, True])
    assert e.text() == "The [[big dog]] ran[[.]]"
    assert Exemplar(0, 1.0, ["a", "\n", "b"], [False, False, False]).text() == "a b"


def test_exemplars_are_each_units_top_documents_highlighted_above_its_quantile(smollm2) -> None:
    docs = [Document(t) for t in ("The cat sat on the mat.", "Numbers like 3, 4 and 5 are small.",
                                  "Paris is the capital of France.", "She wrote a long letter to her friend.",
                                  "Water boils at one hundred degrees.", "The dog barked at the moon all night.")]
    site, units = "blocks.5.mlp.hook_post", [3, 100, 1000]
    s = MilanSettings(k=3, quantile=0.9, window=3)
    index = index_exemplars(smollm2, docs, [site], s)
    full = interp.FullTensors()
    with interp.capture(smollm2, [site], [full]) as run:
        run.feed(docs, progress=False, max_length=s.max_length)
    acts, doc_of = full.state[site]["acts"], full.state[site]["doc"]
    n = acts.shape[0]
    exact = acts.sort(0).values[math.ceil(round(0.9 * n, 9)) - 1]
    torch.testing.assert_close(index.thresholds[site], exact, rtol=0, atol=1e-5)
    for ne in exemplars_for(smollm2, index, site, units, s):
        per_doc = torch.stack([acts[doc_of == d, ne.unit].max() for d in range(len(docs))])
        top = per_doc.topk(3)
        assert [e.doc for e in ne.exemplars] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([e.value for e in ne.exemplars]), top.values, atol=1e-4, rtol=1e-4)
        for e in ne.exemplars:
            assert any(e.marked)  # the maximum itself is above the 0.9-quantile
            assert len(e.tokens) <= 2 * s.window + 1 and "[[" in e.text()
    with pytest.raises(interp.InterpError):
        exemplars_for(smollm2, index, site, [5000], s)


# ------------------------------------------------------------------ the describer
EXEMPLARS = ["o comeréis de todas [[las]] cosas que están en [[las]] aguas", "y [[el]] cisne, y el pelícano",
             "Pero [[esto]] comeréis de todos"]


@pytest.fixture(scope="module")
def describer(smollm2) -> LMDescriber:
    return LMDescriber(smollm2)


@pytest.mark.slow
def test_description_scores_equal_a_plain_teacher_forced_pass(smollm2, describer) -> None:
    """The shared-prefix scoring (one prompt pass, a cache copied per candidate) is exact."""
    cands = ["Spanish words", "numbers", "the article"]
    fast = describer.logprobs(EXEMPLARS, cands)
    prior = describer.logprobs(None, cands)
    for prompt, got in ((describer.template.captioner(EXEMPLARS), fast), (describer.template.prior(), prior)):
        for d, lp in zip(cands, got.tolist()):
            p_ids = smollm2.tokenizer(prompt)["input_ids"]
            d_ids = describer._description_ids(d)
            ids = torch.tensor([p_ids + d_ids])
            with torch.no_grad():
                logp = torch.log_softmax(smollm2.hf(input_ids=ids).logits[0].float(), -1)
            slow = sum(float(logp[len(p_ids) - 1 + i, t]) for i, t in enumerate(d_ids))
            assert lp == pytest.approx(slow, abs=2e-3)
    assert not torch.allclose(fast, prior)  # the exemplars matter


def test_lambda_zero_is_exactly_the_plain_captioner_argmax(describer) -> None:
    plain = pmi_choice(describer, EXEMPLARS, lam=0.0, beam=8, max_tokens=8)
    cap = describer.logprobs(EXEMPLARS, plain.candidates)
    assert plain.text == plain.candidates[int(cap.argmax())] == plain.argmax
    assert plain.pmi == pytest.approx(float(cap.max()), abs=1e-5)
    pmi = pmi_choice(describer, EXEMPLARS, lam=0.2, beam=8, max_tokens=8)
    score = torch.tensor(pmi.captioner) - 0.2 * torch.tensor(pmi.prior)
    assert pmi.text == pmi.candidates[int(score.argmax())]
    assert pmi.candidates == plain.candidates  # rerank: the same beam, another choice rule


@pytest.mark.slow
def test_per_step_pmi_beam_search_maximises_the_same_objective(describer) -> None:
    """Per-step subtraction sums to log p(d|E) − λ log p(d) (chain rule), so the beam's best is the PMI argmax."""
    d = pmi_choice(describer, EXEMPLARS, lam=0.5, beam=8, max_tokens=8, mode="per_step")
    assert d.text == d.candidates[0]  # the beam's own best is also the best by exact rescoring
    assert d.candidates != pmi_choice(describer, EXEMPLARS, lam=0.0, beam=8, max_tokens=8).candidates
    with pytest.raises(interp.InterpError):
        pmi_choice(describer, EXEMPLARS, mode="greedy")
    with pytest.raises(interp.InterpError):
        pmi_choice(describer, [])


def test_resume_takes_the_checkpoint_of_the_same_describer_and_refuses_another(smollm2, describer, tmp_path) -> None:
    docs = [Document(t) for t in ("The cat sat on the mat.", "Water boils at one hundred degrees.")]
    site, s = "blocks.5.mlp.hook_post", MilanSettings(k=2, window=3, beam=2, max_tokens=3)
    index = index_exemplars(smollm2, docs, [site], s)
    ckpt = tmp_path / "milan-checkpoint.json"
    first = describe_neurons(smollm2, index, {site: [7]}, describer, s, checkpoint=ckpt, progress=False)
    assert json.loads(ckpt.read_text())["describer"] == describer.identity
    again = describe_neurons(smollm2, index, {site: [7]}, _Refusing(describer), s, checkpoint=ckpt, progress=False)
    assert again[site][7] == first[site][7]  # taken from the checkpoint, not described again
    other = LMDescriber(smollm2, PromptTemplate(header="Describe the neuron.\n\n"))
    assert other.identity != describer.identity
    dtype = torch.bfloat16 if smollm2.dtype != torch.bfloat16 else torch.float32
    assert LMDescriber(interp.load_model("smollm2-135m", dtype=dtype)).identity != describer.identity
    with pytest.raises(interp.InterpError, match="another describer"):
        describe_neurons(smollm2, index, {site: [7, 8]}, other, s, checkpoint=ckpt, progress=False)


class _Refusing:
    """The same describer's identity, but it fails if asked to describe anything."""

    def __init__(self, inner: LMDescriber) -> None:
        self.identity = inner.identity

    def candidates(self, *args, **kwargs):
        raise AssertionError("described a neuron the checkpoint holds")

    logprobs = candidates


# ------------------------------------------------------------------ auditing and editing
def test_search_ranks_neurons_by_description_and_deletion_zeroes_exactly_the_hits(smollm2) -> None:
    from probes.milan import search
    from steering.milan import delete_edits

    site = "blocks.4.mlp.hook_post"
    described = {site: {7: "first names of people", 9: "numbers", 11: "commas", 13: "names of persons",
                        15: "cooking and food"}}
    hits = search(described, "person names", top=5)
    assert {h.unit for h in hits[:2]} == {7, 13}  # the real MiniLM ranks the two name descriptions first
    assert hits[0].similarity > hits[-1].similarity
    edits = delete_edits(hits[:2])
    plain = interp.run_with_cache(smollm2, "Alice met Bob in Paris.", [site])[site]
    with interp.edit(smollm2, edits):
        deleted = interp.run_with_cache(smollm2, "Alice met Bob in Paris.", [site])[site]
    assert torch.all(deleted[..., [7, 13]] == 0) and plain[..., [7, 13]].abs().sum() > 0
    keep = [u for u in range(plain.shape[-1]) if u not in (7, 13)]
    # nothing at this site reads its own layer's MLP output (attention of layer 4 reads resid_pre), so the rest
    # of the site is untouched
    torch.testing.assert_close(deleted[..., keep], plain[..., keep])
    with pytest.raises(interp.InterpError):
        search(described, "  ")
    with pytest.raises(interp.InterpError):
        delete_edits(hits, min_similarity=2.0)


def test_agreement_scores_identical_descriptions_highest() -> None:
    from probes.milan.eval import agreement_table, bleu, rouge_l

    assert bleu("spanish words", "spanish words") == pytest.approx(1.0) and rouge_l("a b", "a b") == 1.0
    assert rouge_l("dogs", "numbers") == 0.0
    rows, text = agreement_table({"same": (["Spanish words", "dogs"], ["Spanish words", "dogs"]),
                                  "near": (["text in Spanish", "puppies"], ["Spanish words", "dogs"]),
                                  "off": (["commas", "numbers"], ["Spanish words", "dogs"])})
    same, near, off = rows
    assert same.similarity == pytest.approx(1.0, abs=1e-5) and same.agree == 1.0
    assert same.similarity > near.similarity > off.similarity and near.agree > off.agree
    assert "ROUGE-L" in text.splitlines()[0] and len(text.splitlines()) == 4


# ------------------------------------------------------------------ image exemplars (the testbed VLM's vision tower)
@pytest.mark.slow
def test_vision_exemplars_are_top_images_with_patches_above_the_exact_quantile() -> None:
    from testbeds import vlm as tb
    from probes.milan.images import image_exemplars, masked_png

    with tb._num_threads(1):  # a first build runs on one thread (see testbeds.vlm)
        paths = tb.build_testbed(reduced=True)
    vlm = interp.load_model(paths.vlm)
    images = tb.digit_images(range(120))
    module = "model.vision_tower.encoder.layers.1.mlp.fc1"
    units = [0, 7, 200]
    got = image_exemplars(vlm.hf, module, images, units, k=5, quantile=0.95)
    acts = []
    h = vlm.hf.get_submodule(module).register_forward_hook(lambda m, i, o: acts.append(o))
    with torch.no_grad():
        vlm.hf.model.vision_tower(pixel_values=images)
    h.remove()
    a = acts[0]  # [images, patches, width]
    flat = a.reshape(-1, a.shape[-1])
    thr = flat.sort(0).values[math.ceil(round(0.95 * flat.shape[0], 9)) - 1]
    for ne in got:
        assert ne.threshold == pytest.approx(float(thr[ne.unit]))
        best = a[:, :, ne.unit].amax(1).topk(5)
        assert [e.image for e in ne.exemplars] == best.indices.tolist()
        for e in ne.exemplars:
            grid = e.mask.shape[0]
            assert torch.equal(e.mask, (a[e.image, :, ne.unit] > thr[ne.unit]).reshape(grid, grid)) and e.mask.any()
    assert masked_png(images, got[0]).startswith(b"\x89PNG")
    with pytest.raises(interp.InterpError):
        image_exemplars(vlm.hf, "model.no_such_module", images, units)


# ------------------------------------------------------------------ auditing a model with planted name neurons
NAMES = ["Alice", "Bob", "Maria", "John", "Emma", "David", "Sophie", "Peter", "Laura", "James", "Anna", "Thomas"]
THINGS = ["the table", "a river", "the weather", "my garden", "the train", "a window", "the market", "the kitchen"]
VERBS = ["looked at", "walked to", "talked about", "cleaned", "painted", "visited"]
PLANTED = [5, 77, 900]


def _sentences(seed: int, n: int = 60) -> list[str]:
    """Half the sentences name two people, half name nobody."""
    import random

    r = random.Random(seed)
    return [f"{r.choice(NAMES)} {r.choice(VERBS)} {r.choice(THINGS)} with {r.choice(NAMES)} yesterday." if i % 2 == 0
            else f"Someone {r.choice(VERBS)} {r.choice(THINGS)} near {r.choice(THINGS)} today." for i in range(n)]


@pytest.fixture(scope="module")
def planted():
    """smollm2 with three layer-3 MLP neurons rewired to fire on people's names: their gate and up rows
    set to the direction separating name tokens from other tokens at the MLP's input."""
    model = interp.load_model("smollm2-135m")  # a private copy: its weights are changed
    layer = model.hf.model.layers[3]
    names, others = [], []
    with torch.no_grad():
        for text in _sentences(0, 20):
            batch = interp.tokenize(model.tokenizer, [text])
            x = layer.post_attention_layernorm(interp.run_with_cache(model, batch, ["blocks.3.hook_resid_mid"])
                                               ["blocks.3.hook_resid_mid"][0])
            for k, t in enumerate(batch.input_ids[0].tolist()):
                (names if model.tokenizer.decode([t]).strip() in NAMES else others).append(x[k])
        v = torch.stack(names).mean(0) - torch.stack(others).mean(0)
        for j in PLANTED:
            layer.mlp.gate_proj.weight[j] = 4 * v / v.norm()
            layer.mlp.up_proj.weight[j] = 4 * v / v.norm()
    return model


@pytest.mark.slow
def test_auditing_finds_the_planted_name_neurons(planted) -> None:
    import random

    from probes.milan import audit

    site = "blocks.3.mlp.hook_post"
    # the highlighted tokens alone (window 0): with context, smollm2-135m as captioner reads the names in every
    # exemplar (half the sentences have two) and barely the marks; see the README
    s = MilanSettings(window=0)
    index = index_exemplars(planted, _sentences(1), [site], s)
    units = PLANTED + random.Random(0).sample([u for u in range(1536) if u not in PLANTED], 27)
    neurons = exemplars_for(planted, index, site, units, s)
    for ne in neurons[:3]:  # what the exemplars mark is names (or a piece of one: "L[[aura]]")
        marked = [t.strip() for e in ne.exemplars for t, m in zip(e.tokens, e.marked) if m]
        assert marked and all(t and any(t in n for n in NAMES) for t in marked), marked
    describer = LMDescriber(planted)
    for query in ("person names", "names of people"):
        hits = audit(describer, neurons, query, top=5)
        print(f"\n{query!r}: " + ", ".join(f"{h.unit} ({h.similarity:.2f})" for h in hits))
        assert set(PLANTED) <= {h.unit for h in hits}  # all three among the top 5 of 30
