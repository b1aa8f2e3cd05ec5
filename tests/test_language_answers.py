"""Language neurons on answer tokens only (METHODS.md §A.1, issue 30): `--answers FILE.jsonl` counts through the
capture engine's prompt mask, and the counts equal full minus prefix computed by hand from two capture runs."""

from __future__ import annotations

import json

import pytest
import torch

import interp
from atlases import load_atlas
from cli.main import main
from interp.errors import CorpusError
from probes.language_counts import answer_counts, read_answers
from probes.language_neurons import LanguageNeuronSettings, identify

EXAMPLES = {
    "en": [("Question: What is two plus three?\nAnswer:", " Two plus three is five."),
           ("Question: Name a colour of the sky.\nAnswer:", " The sky is blue on a clear day."),
           ("Question: How many legs has a dog?\nAnswer:", " A dog has four legs.")],
    "fr": [("Question : Combien font deux plus trois ?\nRéponse :", " Deux plus trois font cinq."),
           ("Question : Donne une couleur du ciel.\nRéponse :", " Le ciel est bleu par beau temps."),
           ("Question : Combien de pattes a un chien ?\nRéponse :", " Un chien a quatre pattes.")],
}


def write_jsonl(path, examples=EXAMPLES) -> str:
    lines = [json.dumps({"lang": l, "prompt": p, "answer": a}, ensure_ascii=False)
             for l, pairs in examples.items() for p, a in pairs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def by_hand(model, texts: dict[str, list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """counts [K, layers, d_mlp] and tokens [K] of act(gate) > 0, one plain capture run (no prompt masks)."""
    sites = model.adapter.expand("mlp.hook_pre")
    langs = list(texts)
    freq = interp.ActivationFrequency()
    docs = [interp.corpora.Document(text=t, group=l) for l in langs for t in texts[l]]
    with interp.capture(model, sites, [freq], groups=langs) as run:
        run.feed(docs, batch_size=2, progress=False)
    counts = torch.stack([freq.state[s]["counts"] for s in sites], dim=1)
    return counts, freq.state[sites[0]]["tokens"]


def test_answer_counts_equal_full_minus_prefix_by_hand(smollm2) -> None:
    full_c, full_t = by_hand(smollm2, {l: [p + a for p, a in ex] for l, ex in EXAMPLES.items()})
    pre_c, pre_t = by_hand(smollm2, {l: [p for p, _ in ex] for l, ex in EXAMPLES.items()})
    assert (full_c >= pre_c).all() and (full_t > pre_t).all()

    masked, _ = answer_counts(smollm2, EXAMPLES)  # one run, prompts masked
    assert masked.prefix_counts is None
    assert torch.equal(masked.tokens, full_t - pre_t)
    assert torch.equal(masked.counts, full_c - pre_c)

    sub, _ = answer_counts(smollm2, EXAMPLES, mode="subtract")  # the public code's two runs
    assert torch.equal(sub.counts, full_c) and torch.equal(sub.prefix_counts, pre_c)
    assert torch.equal(sub.probabilities(), masked.probabilities())


def test_read_answers_checks_its_input(tmp_path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl")
    assert read_answers(path) == EXAMPLES
    assert list(read_answers(path, ["fr", "en"])) == ["fr", "en"]
    with pytest.raises(CorpusError, match="no examples for de"):
        read_answers(path, ["en", "fr", "de"])
    bad = tmp_path / "bad.jsonl"
    for line, needle in [('{"lang": "en", "prompt": "Q", "answer": ""}', "non-empty strings"),
                         ('{"lang": "en", "text": "Q"}', "'lang', 'prompt', 'answer'"), ("{nope", "bad JSON")]:
        bad.write_text(line + "\n")
        with pytest.raises(CorpusError, match=needle):
            read_answers(bad)
    with pytest.raises(CorpusError, match="at least two languages"):
        read_answers(write_jsonl(tmp_path / "one.jsonl", {"en": EXAMPLES["en"]}))
    with pytest.raises(CorpusError, match="mode"):
        answer_counts(None, EXAMPLES, mode="both")


def test_bisection_checks_c_equal_full_at() -> None:
    """full_at=None is c = K; the public code's 10 never fires for K = 2, so λ climbs to the top of [0, 0.2]."""
    from probes.language_neurons import LanguageCounts

    g = torch.Generator().manual_seed(0)
    c = torch.randint(200, 300, (2, 2000), generator=g)  # firing for both languages alike: entropy near 1
    c[:, :10] = 1000  # always firing: entropy 1, but the highest peak, so a large λ selects them (c = 2)
    c[0, 10:25], c[1, 10:25] = 100, 0  # one language only: entropy 0
    counts = LanguageCounts(["a", "b"], c.view(2, 4, 500), torch.tensor([1000, 1000]))
    ours, paper = identify(counts), identify(counts, full_at=LanguageNeuronSettings.paper().full_at)
    assert paper.lam > 0.19 and ours.lam < paper.lam
    assert identify(counts, full_at=2).lam == ours.lam


@pytest.mark.slow
def test_cli_answers_and_paper_mode(smollm2, tmp_path, capsys) -> None:
    path = write_jsonl(tmp_path / "answers.jsonl")
    common = ["analyze", "--probe", "language-neurons", "--answers", path, "--grid-verses", "0",
              "--dtype", "float32", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "ours")]) == 0
    assert main([*common, "--paper", "--out", str(tmp_path / "paper")]) == 0
    ours, paper = load_atlas(tmp_path / "ours"), load_atlas(tmp_path / "paper")
    assert ours.params["langs"] == ["en", "fr"]
    assert ours.params["paper_mode"] == {"paper": False, "choices": {"full_at": None, "answer_counts": "mask"}}
    assert paper.params["paper_mode"] == {"paper": True, "choices": {"full_at": 10, "answer_counts": "subtract"}}
    want, _ = answer_counts(smollm2, EXAMPLES)
    got = torch.stack([ours.get(f"blocks.{l}.mlp.hook_pre", "counts") for l in range(30)], dim=1)
    assert torch.equal(got, want.counts) and ours.params["tokens_per_language"] == want.tokens.tolist()
    # the paper's run keeps full and prefix counts (two runs), whose difference is ours
    full = torch.stack([paper.get(f"blocks.{l}.mlp.hook_pre", "counts") for l in range(30)], dim=1)
    prefix = torch.stack([paper.get(f"blocks.{l}.mlp.hook_pre", "prefix_counts") for l in range(30)], dim=1)
    assert torch.equal(full - prefix, got) and not torch.equal(full, got)
    assert [a - b for a, b in zip(paper.params["tokens_per_language"], paper.params["prefix_tokens_per_language"])] \
        == ours.params["tokens_per_language"]
    assert "paper" not in capsys.readouterr().err


def test_cli_answers_bad_input_exits_2(tmp_path, capsys) -> None:
    path = write_jsonl(tmp_path / "answers.jsonl")
    base = ["analyze", "--probe", "language-neurons", "--answers", path, "--out", str(tmp_path / "x")]
    for extra, needle in [(["--langs", "en,de"], "--answers has languages"), (["--grid-verses", "3"], "holds out"),
                          (["--lang-files", "en=a.txt,fr=b.txt"], "two sources")]:
        assert main([*base, *extra]) == 2
        assert needle in capsys.readouterr().err
