"""The VLM testbed (issue 9): the digit data and tasks are what they say, LoRA merges exactly, and the
reduced testbed builds, caches, loads through `interp.load_model`, recognises held-out digits, and its
math LLM beats smollm2 on held-out arithmetic; only the chosen layers differ from smollm2."""

from __future__ import annotations

import time

import pytest
import torch

import interp
from testbeds import vlm as tb
from tiny_models import llama


def _up(img8: torch.Tensor, k: int) -> torch.Tensor:
    """An [8, 8] image in [0, 1] upscaled k× (nearest) and normalised to [-1, 1]."""
    return (torch.kron(img8, torch.ones(k, k)) - 0.5) / 0.5


def _sample_of(half: torch.Tensor) -> set[int]:
    """Digit samples whose 2× upscale is exactly this [16, 16] half image."""
    images, _ = tb._digits()
    ups = (images.repeat_interleave(2, 1).repeat_interleave(2, 2) - 0.5) / 0.5
    return set(torch.nonzero((ups == half).flatten(1).all(1)).flatten().tolist())


def _sample_of_4x(image: torch.Tensor) -> set[int]:
    """Digit samples whose 4× upscale is this [32, 32] image."""
    images, _ = tb._digits()
    small = image[::4, ::4]
    return set(torch.nonzero(((images - 0.5) / 0.5 == small).flatten(1).all(1)).flatten().tolist())


def test_single_images_are_the_digit_upscaled_4x_in_three_channels() -> None:
    images, labels = tb._digits()
    x = tb.digit_images([0, 5, 17])
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    for row, i in zip(x, [0, 5, 17]):
        assert torch.equal(row[0], row[1]) and torch.equal(row[0], row[2])
        assert torch.equal(row[0], _up(images[i], 4))
    assert tb.digit_labels([0, 5, 17]) == labels[[0, 5, 17]].tolist()


def test_pair_images_hold_digit_a_left_and_digit_b_right() -> None:
    images, _ = tb._digits()
    x = tb.digit_images([3, 10], right=[7, 2])
    assert x.shape == (2, 3, 32, 32)
    for row, (a, b) in zip(x[:, 0], [(3, 7), (10, 2)]):
        assert torch.equal(row[8:24, :16], _up(images[a], 2))
        assert torch.equal(row[8:24, 16:], _up(images[b], 2))
        assert (row[:8] == -1).all() and (row[24:] == -1).all()  # vertically centred on a blank canvas
    with pytest.raises(tb.TestbedError, match="left digits"):
        tb.digit_images([1, 2], right=[3])


def test_splits_are_disjoint_complete_and_seeded() -> None:
    d0, d0b, d1 = tb.digit_split(0), tb.digit_split(0), tb.digit_split(1)
    assert not set(d0["train"]) & set(d0["held_out"])
    assert sorted([*d0["train"], *d0["held_out"]]) == list(range(1797))
    assert (d0["train"] == d0b["train"]).all() and not (d0["train"] == d1["train"][:len(d0["train"])]).all()
    assert 500 < len(d0["held_out"]) < 560
    p0, p1 = tb.pair_split(0), tb.pair_split(1)
    assert not set(p0["train"]) & set(p0["held_out"]) and len(p0["train"]) + len(p0["held_out"]) == 100
    assert p0 == tb.pair_split(0) and p0["held_out"] != p1["held_out"]


@pytest.mark.parametrize("split", tb.SPLITS)
def test_task_examples_are_correct_and_stay_in_their_split(split: str) -> None:
    samples = set(tb.digit_split(0)[split].tolist())
    pairs = set(tb.pair_split(0)[split])
    _, labels = tb._digits()
    recog = tb.task_examples("recognize", split)  # every sample of the split, in order
    assert len(recog) == len(samples)
    for i, e in list(zip(sorted(samples), recog))[:40]:
        assert torch.equal(e.image, tb.digit_images([i])[0])
        assert e.answer == str(int(labels[i])) == str(e.digits[0]) and e.question == "Which digit is this?"
    drawn = tb.task_examples("recognize", split, n=20)
    assert all(any(torch.equal(e.image, tb.digit_images([i])[0]) for i in _sample_of_4x(e.image[0]) & samples)
               for e in drawn)
    for task, op in (("sum", lambda a, b: a + b), ("product", lambda a, b: a * b)):
        examples = tb.task_examples(task, split, n=30)
        again = tb.task_examples(task, split, n=30)  # seeded
        assert len(examples) == 30 and [e.digits for e in examples] == [e.digits for e in again]
        assert all(torch.equal(e.image, f.image) for e, f in zip(examples, again))
        for e in examples:
            a, b = e.digits
            assert (a, b) in pairs and e.answer == str(op(a, b))
            left, right = _sample_of(e.image[0, 8:24, :16]), _sample_of(e.image[0, 8:24, 16:])
            assert any(i in samples and labels[i] == a for i in left)  # the left half is a sample of digit a
            assert any(i in samples and labels[i] == b for i in right)
    text = tb.task_examples("text_product", split)
    assert [e.digits for e in text] == sorted(pairs)
    image_question = tb.task_examples("product", split, n=1)[0].question
    for e in text:
        a, b = e.digits
        assert e.image is None and e.question == image_question and e.answer == str(a * b)
        assert e.prompt == (f"Image description: two handwritten digits. They are {a} and {b}.\n"
                            f"Question: What is the product of the two digits?\nAnswer:")
    images = tb.task_examples("product", split, n=5)
    twins = tb.text_twins(images)
    assert [(t.image, t.question, t.answer, t.digits) for t in twins] == [(None, e.question, e.answer, e.digits)
                                                                          for e in images]
    assert all(t.context == tb.caption(e.digits) for t, e in zip(twins, images))
    drawn = tb.task_examples("text_sum", split, n=50)
    assert len(drawn) == 50 and {e.digits for e in drawn} <= pairs and all(e.answer == str(sum(e.digits)) for e in drawn)


def test_unknown_task_or_split_is_one_line() -> None:
    with pytest.raises(tb.TestbedError, match="unknown task 'division'") as err:
        tb.task_examples("division", "train")
    assert "\n" not in str(err.value)
    with pytest.raises(tb.TestbedError, match="unknown split"):
        tb.task_examples("sum", "test")
    assert issubclass(tb.TestbedError, interp.InterpError)


def test_prompts_put_16_image_tokens_first_and_mark_only_the_answer(smollm2) -> None:
    tok = smollm2.tokenizer
    image_id = tok.convert_tokens_to_ids(tb.IMAGE_TOKEN)
    questions = ["Which digit is this?", "What is the sum of the two digits?"]
    enc = tb._encode(tok, [f"Question: {q}\nAnswer:" for q in questions], image_id, ["7", "12"])
    ids, mask, target = enc["input_ids"], enc["attention_mask"], enc["target_mask"]
    assert ((ids == image_id) & mask.bool()).sum(1).tolist() == [16, 16]
    for row, m, t, q, answer in zip(ids, mask, target, questions, ["7", "12"]):
        real = row[m.bool()]
        assert (real[:16] == image_id).all()
        assert tok.decode(real[16:]) == f"Question: {q}\nAnswer: {answer}\n"
        assert tok.decode(row[t]) == f" {answer}\n"
        assert m[-1] == 1  # left padding: every row ends at the last position
    assert enc["position_ids"][0, -1] == mask[0].sum() - 1
    twin = tb.task_examples("text_sum", "train")[0]  # the image replaced by its 16-token caption
    text = tb._encode(tok, [twin.prompt], None)["input_ids"][0]
    image = tb._encode(tok, [f"Question: {questions[1]}\nAnswer:"], image_id)["input_ids"][0]
    assert len(text) == len(image) and torch.equal(text[16:], image[16:])
    assert tok.decode(text[:16]) == tb.caption(twin.digits)


def test_captions_are_16_tokens(smollm2) -> None:
    ex = tb.task_examples("recognize", "train", n=2) + tb.task_examples("product", "train", n=2)
    caps = tb._captions(smollm2.tokenizer, ex)
    assert caps.shape == (4, 16)
    assert smollm2.tokenizer.decode(caps[2]).endswith(f"They are {ex[2].digits[0]} and {ex[2].digits[1]}.\n")


def test_lora_merges_into_the_chosen_layers_only() -> None:
    hf = llama()
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    x = torch.randint(0, 200, (2, 7))
    torch.manual_seed(0)
    with tb._lora(hf, [1], rank=2, alpha=4.0) as params:
        assert len(params) == 2 * len(tb.LORA_TARGETS)
        with torch.no_grad():
            for p in params[1::2]:
                p.normal_()  # pretend B was trained
        with torch.no_grad():
            inside = hf(x).logits
    with torch.no_grad():
        merged = hf(x).logits
    assert torch.allclose(inside, merged, atol=1e-4)
    after = hf.state_dict()
    assert set(after) == set(before)  # the wrappers are gone
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"model.layers.1.{t}.weight" for t in tb.LORA_TARGETS}
    for k in changed:
        assert torch.linalg.matrix_rank(after[k] - before[k]) <= 2


@pytest.fixture
def one_thread():
    """One CPU thread: with another process on a 2-core machine, 2 threads spin (an SVD runs 100× slower)."""
    with tb._num_threads(1):
        yield


@pytest.mark.slow
def test_reduced_testbed_builds_caches_loads_and_works(smollm2, monkeypatch, one_thread) -> None:
    t0 = time.time()
    paths = tb.build_testbed(reduced=True)  # 2–8 minutes the first time (by CPU), then cached
    built_in = time.time() - t0
    metrics = paths.read_metrics()
    print(f"\nreduced testbed ({'built' if built_in > 30 else 'cached'}, {built_in:.1f} s here; "
          f"recorded build {metrics['build_seconds']} s):\n{tb.metrics_table(metrics)}")  # timing: printed only
    assert metrics["n_held_out"]["digits"] == len(tb.digit_split(0)["held_out"])

    def boom(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(tb, "_build_vlm", boom)
    monkeypatch.setattr(tb, "_build_llm", boom)
    assert tb.build_testbed(reduced=True) == paths  # from the cache: rebuilding would raise "retrained"

    spec = tb.TestbedSpec.for_run(reduced=True)
    assert metrics["changed_layers"] == {"vlm": list(spec.vlm_layers), "llm": list(spec.llm_layers)}
    acc = metrics["accuracy_held_out"]
    assert acc["vlm"]["recognize"] >= 0.8
    assert acc["llm"]["text_sum"] > acc["vlm"]["sum"] and acc["llm"]["text_product"] > acc["vlm"]["product"]

    vlm, llm = interp.load_model(paths.vlm), interp.load_model(paths.llm)
    assert type(vlm.hf).__name__ == "LlavaForConditionalGeneration" and vlm.adapter.n_layers == 30
    assert vlm.hf.config.image_token_id == smollm2.tokenizer.convert_tokens_to_ids(tb.IMAGE_TOKEN)
    # the loaded VLM reproduces the recorded held-out recognition (fp32 both times)
    recog = tb.accuracy(vlm, "recognize", "held_out", n=spec.n_eval)
    assert recog == pytest.approx(acc["vlm"]["recognize"], abs=0.03) and recog >= 0.6
    ex = tb.task_examples("recognize", "held_out", n=4)
    assert tb.answer(vlm, ex) == tb.answer(vlm, ex, batch_size=1)
    arith = tb.task_examples("sum", "held_out", n=40)  # teacher-forced scoring = greedy exact match
    assert tb.correct(vlm, arith) == [a == e.answer for a, e in zip(tb.answer(vlm, arith), arith)]
    for task in tb.TEXT_TASKS:
        mine, base = tb.accuracy(llm, task), tb.accuracy(smollm2, task)
        print(f"{task}: math LLM {mine:.3f}, smollm2 {base:.3f} (held-out pairs)")
        assert mine > base + 0.2
    with pytest.raises(tb.TestbedError, match="no vision tower"):
        tb.answer(llm, ex[:1])
    with pytest.raises(tb.TestbedError, match="mixed image and text"):
        tb.answer(vlm, ex[:1] + tb.task_examples("text_sum", "train")[:1])

    # bitwise smollm2 outside the chosen layers; the chosen layers' deltas are low-rank
    base_state = smollm2.hf.model.state_dict()
    for model, prefix, layers in ((vlm, "model.language_model.", spec.vlm_layers),
                                  (llm, "model.", spec.llm_layers)):
        state = model.hf.state_dict()
        for name, w in base_state.items():
            inside = any(name.startswith(f"layers.{l}.") for l in layers) and not name.endswith("layernorm.weight")
            same = torch.equal(state[prefix + name], w)
            assert same != inside, name
            if inside:
                assert torch.linalg.matrix_rank(state[prefix + name] - w) <= spec.lora_rank
        assert torch.equal(model.hf.get_output_embeddings().weight, smollm2.hf.lm_head.weight)
