"""MILAN's learned captioner: synthetic annotated neurons, training, the Describer contract, files."""

from __future__ import annotations

import re

import pytest
import torch

import interp
from probes.milan.annotations import GENERIC, LEXICONS, AnnotationSettings, synthetic_neurons
from probes.milan.captioner import (CaptionerSettings, TrainedDescriber, load_captioner, save_captioner,
                                    train_captioner)
from probes.milan.describe import pmi_choice

SMALL = AnnotationSettings(per_category=6, languages=("en", "es", "fr", "de"), verses=400)


@pytest.fixture(scope="module")
def neurons(smollm2):
    return synthetic_neurons(smollm2.tokenizer, SMALL)


@pytest.fixture(scope="module")
def describer(neurons) -> TrainedDescriber:
    return TrainedDescriber(train_captioner(neurons, CaptionerSettings(steps=600)))


def test_synthetic_neurons_mark_their_category_and_carry_its_annotations(smollm2, neurons) -> None:
    cats = {n.category for n in neurons}
    assert {"language: Spanish", "field: water", "class: commas"} <= cats
    for n in neurons:
        assert len(n.exemplars) == SMALL.k and len(n.annotations) == SMALL.annotators
        assert all("[[" in e for e in n.exemplars)  # each exemplar has its firing tokens marked
        if n.category.startswith("field: "):
            descriptions, words = LEXICONS[n.category[len("field: "):]]
            assert all(a in descriptions or a in GENERIC for a in n.annotations)
            for e in n.exemplars:  # a marked run is made of the field's words
                for run in re.findall(r"\[\[(.*?)\]\]", e):
                    assert set(re.findall(r"\w+", run.lower())) <= set(words.split()), (n.category, e)
    again = synthetic_neurons(smollm2.tokenizer, SMALL)
    assert [n.exemplars for n in again] == [n.exemplars for n in neurons]  # seeded
    with pytest.raises(interp.InterpError):
        synthetic_neurons(smollm2.tokenizer, AnnotationSettings(languages=("xx",)))
    with pytest.raises(interp.InterpError):
        synthetic_neurons(smollm2.tokenizer, AnnotationSettings(generic=1.5))


def test_vague_annotators_change_only_the_annotations(smollm2, neurons) -> None:
    """Vagueness replaces about that share of annotations by GENERIC ones and leaves every neuron and
    exemplar as it was (so captioners of any vagueness share one MiniLM pass)."""
    vague = synthetic_neurons(smollm2.tokenizer, AnnotationSettings(**{**vars(SMALL), "generic": 1 / 3}))
    assert [(n.category, n.exemplars) for n in vague] == [(n.category, n.exemplars) for n in neurons]
    pairs = [(a, b) for v, n in zip(vague, neurons) for a, b in zip(v.annotations, n.annotations)]
    changed = [a for a, b in pairs if a != b]
    assert all(a in GENERIC for a in changed)
    assert 0.25 < sum(a in GENERIC for a, _ in pairs) / len(pairs) < 0.42  # ~1/3 of them, not none or all


def test_exemplar_codes_are_cached_and_a_corrupt_entry_is_rebuilt(neurons, tmp_path, monkeypatch) -> None:
    from probes.milan.captioner import _cached_codes, encode_many

    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    exemplars = [n.exemplars for n in neurons[:3]]
    codes = _cached_codes(exemplars)
    assert torch.equal(codes, encode_many(exemplars))
    [entry] = (tmp_path / "captioners").glob("codes-*.safetensors")
    assert torch.equal(_cached_codes(exemplars), codes)  # read back from the file
    entry.write_bytes(b"not a safetensors file")
    assert torch.equal(_cached_codes(exemplars), codes)  # rebuilt
    assert torch.equal(_cached_codes(exemplars), codes)


@pytest.mark.slow
def test_captioner_describes_held_out_neurons_of_its_categories(smollm2, describer) -> None:
    """New synthetic neurons (another seed: other exemplars) get a description of their own category."""
    held = synthetic_neurons(smollm2.tokenizer, AnnotationSettings(**{**vars(SMALL), "per_category": 1, "seed": 7}))
    right = 0
    for n in held:
        d = pmi_choice(describer, n.exemplars, lam=0.2, beam=8, max_tokens=6)
        _, _, name = n.category.partition(": ")
        wanted = LEXICONS[name][0] if name in LEXICONS else None
        right += (d.text in wanted) if wanted else (name.lower() in d.text or d.text in _class_descriptions(name))
    print(f"\n{right} of {len(held)} held-out synthetic neurons described by their own category")
    assert right >= 0.7 * len(held)


def _class_descriptions(name: str) -> tuple[str, ...]:
    from probes.milan.annotations import CLASSES

    return CLASSES[name][0] if name in CLASSES else ()


@pytest.mark.slow
def test_lambda_zero_is_the_captioner_argmax_and_per_step_maximises_pmi(neurons, describer) -> None:
    ex = neurons[0].exemplars
    plain = pmi_choice(describer, ex, lam=0.0, beam=8, max_tokens=6)
    cap = describer.logprobs(ex, plain.candidates)
    assert plain.text == plain.argmax == plain.candidates[int(cap.argmax())]
    step = pmi_choice(describer, ex, lam=0.5, beam=8, max_tokens=6, mode="per_step")
    assert step.text == step.candidates[0]  # the beam's best is also the best by exact whole-string rescoring
    assert describer.logprobs(ex, ["no such wordzz"])[0] == -torch.inf  # outside the vocabulary: impossible
    assert not torch.allclose(describer.logprobs(ex, plain.candidates), describer.logprobs(None, plain.candidates))


@pytest.mark.slow
def test_captioner_file_round_trips_and_bad_files_are_refused(neurons, describer, tmp_path) -> None:
    path = save_captioner(describer.model, tmp_path / "cap.safetensors")
    again = TrainedDescriber(load_captioner(path))
    cands = ["spanish words", "water", "commas"]
    ex = neurons[1].exemplars
    assert torch.equal(again.logprobs(ex, cands), describer.logprobs(ex, cands))
    assert again.identity == describer.identity  # a resumed MILAN run knows it is the same captioner
    changed = load_captioner(path)
    with torch.no_grad():
        changed.null[0] += 1e-3
    assert TrainedDescriber(changed).identity != describer.identity
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(interp.InterpError, match="cannot read"):
        load_captioner(bad)
