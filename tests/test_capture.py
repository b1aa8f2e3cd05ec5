"""Streaming capture and reducers on the real model: exact against brute force."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import interp
from interp.corpora import Document

SITES = ["blocks.0.mlp.hook_pre", "blocks.2.mlp.hook_post", "blocks.5.hook_resid_post"]


def _batches(model, docs, groups, batch_size=8, padding_side=None, words=False):
    index = {g: i for i, g in enumerate(groups)}
    for s in range(0, len(docs), batch_size):
        part = docs[s : s + batch_size]
        yield interp.tokenize(model.tokenizer, [d.text for d in part], prompts=[d.prompt for d in part],
                              doc_index=range(s, s + len(part)), group_index=[index[d.group] for d in part],
                              padding_side=padding_side, words=words)


def _stream(model, docs, sites=SITES, **feed):
    groups = interp.groups_of(docs)
    reducers = [interp.ActivationFrequency(), interp.Moments(), interp.TopK(4)]
    with interp.capture(model, sites, reducers, groups=groups) as run:
        run.feed(docs, progress=False, **feed)
    return reducers


def test_frequency_equals_brute_force_from_full_caches(smollm2, bible_en_fr):
    docs = bible_en_fr
    groups = interp.groups_of(docs)
    freq, moments, top = _stream(smollm2, docs, sort_by_length=False)
    for site in SITES:
        counts = torch.zeros(len(groups), smollm2.adapter.site_width(site), dtype=torch.int64)
        tokens = torch.zeros(len(groups), dtype=torch.int64)
        total = torch.zeros(len(groups), counts.shape[1], dtype=torch.float64)
        best = torch.full((counts.shape[1],), -float("inf"))
        for batch in _batches(smollm2, docs, groups):
            acts = interp.run_with_cache(smollm2, batch, [site])[site]
            for row in range(acts.shape[0]):
                g = int(batch.group_index[row])
                x = acts[row][batch.mask[row]]
                counts[g] += (x > 0).sum(0)
                tokens[g] += x.shape[0]
                total[g] += x.double().sum(0)
                best = torch.maximum(best, x.max(0).values)
        assert torch.equal(freq.state[site]["counts"], counts)
        assert torch.equal(freq.state[site]["tokens"], tokens)
        torch.testing.assert_close(moments.state[site]["sum"], total, rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(top.state[site]["values"][:, 0], best)


def test_left_and_right_padding_match_one_text_at_a_time(smollm2, bible_en_fr):
    docs = bible_en_fr[:12]
    single = _stream(smollm2, docs, batch_size=1)
    for side in ("left", "right"):
        batched = _stream(smollm2, docs, batch_size=6, padding_side=side)
        for site in SITES:
            a, b = single[0].state[site], batched[0].state[site]
            assert torch.equal(a["tokens"], b["tokens"])
            # sums of floats in another order: a value within ~1e-6 of 0 may flip sign
            flips = (a["counts"] - b["counts"]).abs()
            assert flips.sum() <= max(2, a["counts"].sum() // 20000), (side, site, flips.sum())
            torch.testing.assert_close(single[1].state[site]["sum"], batched[1].state[site]["sum"],
                                       rtol=1e-4, atol=2e-3)


def test_prompt_tokens_are_masked(smollm2):
    prompt = "Question: what is the capital of France?\nAnswer:"
    full = prompt + " Paris is the capital."
    n_full = len(smollm2.tokenizer(full)["input_ids"])
    n_prompt = len(smollm2.tokenizer(prompt)["input_ids"])
    (freq, *_rest) = _stream(smollm2, [Document(full, prompt=prompt)])
    assert int(freq.state[SITES[0]]["tokens"][0]) == n_full - n_prompt


def test_stop_early_skips_the_unembedding_and_changes_nothing(smollm2):
    calls = []
    handle = smollm2.hf.lm_head.register_forward_hook(lambda *a: calls.append(1))
    try:
        early = interp.run_with_cache(smollm2, ["The cat sat on the mat."], SITES)
        assert calls == []
        late = interp.run_with_cache(smollm2, ["The cat sat on the mat."], SITES, stop_early=False)
        assert calls == [1]
    finally:
        handle.remove()
    for site in SITES:
        assert torch.equal(early[site], late[site])


def test_merge_of_two_halves_equals_one_run_and_save_load_round_trips(smollm2, bible_en_fr, tmp_path):
    docs = bible_en_fr
    groups = interp.groups_of(docs)
    whole = _stream(smollm2, docs)
    half = len(docs) // 2
    halves = []
    for lo, hi in ((0, half), (half, len(docs))):
        reducers = [interp.ActivationFrequency(), interp.Moments(), interp.TopK(4)]
        with interp.capture(smollm2, SITES, reducers, groups=groups) as run:
            # corpus-wide document numbers, so that top-k documents are comparable
            for batch in _batches(smollm2, docs, groups):
                if lo <= int(batch.doc_index[0]) < hi:
                    run.run_batch(batch)
        halves.append(reducers)
    for i in range(3):
        halves[0][i].merge(halves[1][i])
    for site in SITES:
        assert torch.equal(halves[0][0].state[site]["counts"], whole[0].state[site]["counts"])
        torch.testing.assert_close(halves[0][1].state[site]["sum"], whole[1].state[site]["sum"], rtol=1e-4, atol=2e-3)
        torch.testing.assert_close(halves[0][2].state[site]["values"], whole[2].state[site]["values"], rtol=1e-4, atol=1e-4)
    for reducer in whole:
        path = tmp_path / f"{reducer.kind}.safetensors"
        reducer.save(path)
        back = interp.Reducer.load(path)
        assert type(back) is type(reducer) and back.groups == reducer.groups
        for site in SITES:
            for k, v in reducer.state[site].items():
                assert torch.equal(back.state[site][k], v)
    with pytest.raises(interp.InterpError):
        interp.TopK.load(tmp_path / "frequency.safetensors")


def test_top_exemplar_points_at_its_token(smollm2, bible_en_fr):
    from interp.exemplars import token_context

    docs = bible_en_fr
    top = interp.TopK(3)
    site = "blocks.2.mlp.hook_post"
    with interp.capture(smollm2, [site], [top], groups=interp.groups_of(docs)) as run:
        run.feed(docs, progress=False)
    for unit in (0, 100, 1000):
        value, doc, pos = (top.state[site][k][unit, 0] for k in ("values", "doc", "pos"))
        acts = interp.run_with_cache(smollm2, docs[int(doc)].text, [site])[site][0]
        assert float(acts[int(pos), unit]) == pytest.approx(float(value), abs=1e-3)
        left, tok, right = token_context(smollm2.tokenizer, docs[int(doc)].text, int(pos))
        assert tok and tok in docs[int(doc)].text


def test_word_pooling_averages_the_tokens_of_each_word(smollm2):
    text = "Unbelievably, tokenization splits words differently."
    site = "blocks.1.mlp.hook_post"
    pooled = interp.WordPooled()
    with interp.capture(smollm2, [site], [pooled], words=True) as run:
        run.feed([text], progress=False)
    seq = pooled.sequence(site, 0)
    assert seq.shape[0] == len(text.split())
    acts = interp.run_with_cache(smollm2, text, [site])[site][0]
    enc = smollm2.tokenizer(text, return_offsets_mapping=True)
    first_word_end = text.index(" ")
    first = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b <= first_word_end and b > a]
    assert len(first) >= 2  # "Unbelievably," is several tokens
    torch.testing.assert_close(seq[0], acts[first].mean(0), rtol=1e-5, atol=1e-5)


def test_bad_input_raises_typed_errors(smollm2):
    with pytest.raises(interp.CorpusError):
        with interp.capture(smollm2, SITES, [interp.ActivationFrequency()]) as run:
            run.feed([], progress=False)
    with pytest.raises(interp.CorpusError):
        with interp.capture(smollm2, SITES, [interp.ActivationFrequency()]) as run:
            run.feed(["  ", "\n"], progress=False)
    freq = interp.ActivationFrequency()
    with interp.capture(smollm2, SITES, [freq]) as run:
        run.feed(["", "Hello there."], progress=False)  # a blank document among others is skipped
    assert int(freq.state[SITES[0]]["tokens"].sum()) == len(smollm2.tokenizer("Hello there.")["input_ids"])
    with pytest.raises(interp.SiteError, match="layers 0..29"):
        interp.run_with_cache(smollm2, "hi", ["blocks.30.mlp.hook_post"])
    with pytest.raises(interp.SiteError, match="hook_resid_pre"):
        interp.run_with_cache(smollm2, "hi", ["blocks.0.mlp.hook_nope"])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in smollm2.hf.modules())


_PEAK = textwrap.dedent("""
    import json, resource, sys, interp
    from interp.corpora import bible_verses
    n = int(sys.argv[1])
    m = interp.load_model("smollm2-135m")
    docs = bible_verses("en", limit=64) * (n // 64)  # same lengths, n documents
    reducers = [interp.ActivationFrequency(), interp.Moments(), interp.TopK(8)]
    sites = [f"blocks.{l}.mlp.hook_post" for l in range(4)]
    with interp.capture(m, sites, reducers) as run:
        run.feed(docs[:16], batch_size=8, progress=False)   # warm up allocator
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run.feed(docs, batch_size=8, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "tokens": run.tokens_seen}))
""")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_corpus_size():
    out = {}
    for n in (64, 768):
        proc = subprocess.run([sys.executable, "-c", _PEAK, str(n)], capture_output=True, text=True, check=True)
        out[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out[768]["tokens"] > 10 * out[64]["tokens"]
    # 12x the tokens, same document lengths: the peak may differ only by allocator noise
    # (keeping the activations would add ~500 MiB here)
    assert out[768]["peak_kb"] - out[64]["peak_kb"] < 16 * 1024, out


@pytest.mark.slow
def test_bf16_frequency_agrees_with_fp32_within_half_a_percent(smollm2):
    from interp.corpora import bible_verses

    docs = bible_verses("en", limit=48)
    sites = [f"blocks.{l}.mlp.hook_pre" for l in range(0, 30, 3)] + [f"blocks.{l}.mlp.hook_post" for l in range(1, 30, 3)]
    bf16 = interp.load_model("smollm2-135m", dtype="bfloat16")
    results = []
    for model in (smollm2, bf16):
        freq = interp.ActivationFrequency()
        with interp.capture(model, sites, [freq]) as run:
            run.feed(docs, progress=False)
        results.append(freq)
    for site in sites:
        a, b = results[0].state[site]["counts"].double(), results[1].state[site]["counts"].double()
        assert abs(a.sum() - b.sum()) / a.sum() < 0.005, site
        tokens = results[0].state[site]["tokens"].double()
        assert ((a - b).abs().sum(1) / tokens).mean() / a.shape[1] < 0.005, site


def test_full_tensors_keep_every_counted_token(smollm2):
    docs = [Document("One short line."), Document("A second, somewhat longer line of text here.")]
    site = "blocks.4.hook_resid_post"
    full = interp.FullTensors()
    with interp.capture(smollm2, [site], [full]) as run:
        run.feed(docs, progress=False, sort_by_length=False)
    st = full.state[site]
    for d, doc in enumerate(docs):
        acts = interp.run_with_cache(smollm2, doc.text, [site])[site][0]
        mine = st["acts"][st["doc"] == d]
        assert torch.equal(st["pos"][st["doc"] == d], torch.arange(acts.shape[0]))
        # padded batch vs one document: the same sums in another order (residual norms reach ~10)
        torch.testing.assert_close(mine, acts, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("per_document", [True, False])
def test_topk_matches_a_brute_force_ranking(smollm2, bible_en_fr, per_document):
    docs = bible_en_fr[:20]
    site = "blocks.3.mlp.hook_post"
    top = interp.TopK(5, per_document=per_document)
    with interp.capture(smollm2, [site], [top]) as run:
        run.feed(docs, batch_size=4, progress=False)  # several batches: exercises the merge
    units = [0, 7, 500, 1535]
    entries = []  # (value, doc, pos) of every token, for the chosen units
    for d, doc in enumerate(docs):
        acts = interp.run_with_cache(smollm2, doc.text, [site])[site][0][:, units]
        entries.append(acts)
    for j, u in enumerate(units):
        if per_document:
            expect = sorted((float(a[:, j].max()) for a in entries), reverse=True)[:5]
        else:
            expect = sorted(torch.cat([a[:, j] for a in entries]).tolist(), reverse=True)[:5]
        got = top.state[site]["values"][u]
        torch.testing.assert_close(got, torch.tensor(expect), rtol=1e-4, atol=1e-4)
        got_docs = top.state[site]["doc"][u].tolist()
        if per_document:
            assert len(set(got_docs)) == 5  # five distinct documents
        for v, d, p in zip(got.tolist(), got_docs, top.state[site]["pos"][u].tolist()):
            assert float(entries[d][p, j]) == pytest.approx(v, abs=1e-4)


def test_pool_words_is_each_words_token_mean():
    from interp.batching import pool_words

    acts = torch.arange(12.0).reshape(6, 2)  # tokens 0..5
    ids = torch.tensor([-1, 0, 0, 1, -1, 2])  # a BOS-like token, a two-token word, then two one-token words
    torch.testing.assert_close(pool_words(acts, ids, 4),
                               torch.tensor([[3.0, 4.0], [6.0, 7.0], [10.0, 11.0], [0.0, 0.0]]))


def test_a_loaded_reducer_keeps_its_site_order(tmp_path) -> None:
    """Files sort their tensor names (blocks.10 before blocks.2); per-layer stacks need the capture order."""
    freq = interp.ActivationFrequency()
    sites = [f"blocks.{l}.mlp.hook_pre" for l in (2, 10, 1)]
    for s in sites:
        freq.bind(s, 3, ["en"])
    freq.save(tmp_path / "f.safetensors")
    assert interp.ActivationFrequency.load(tmp_path / "f.safetensors").sites == sites


def test_topk_merging_only_the_units_a_batch_can_change_keeps_the_full_merge_and_its_ties():
    """TopK folds a batch into the units whose best new value reaches their k-th; ties (many here: integer
    values) are broken by (document, position) exactly as one merge of every document at once."""
    g = torch.Generator().manual_seed(0)
    values = torch.randint(0, 6, (40, 12), generator=g).float()  # 40 documents' maxima, 12 units
    pos = torch.randint(0, 50, (40, 12), generator=g)
    whole = interp.TopK(4)
    whole.bind("s", 12, ["all"])
    whole.add_maxima("s", values, torch.arange(40), pos)
    for order in (torch.arange(40), torch.randperm(40, generator=g)):
        parts = interp.TopK(4)
        parts.bind("s", 12, ["all"])
        for chunk in order.split(6):
            parts.add_maxima("s", values[chunk], chunk, pos[chunk])
        for name in ("values", "doc", "pos"):
            assert torch.equal(parts.state["s"][name], whole.state["s"][name]), name
