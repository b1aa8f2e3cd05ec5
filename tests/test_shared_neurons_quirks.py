"""The public code's quirks behind switches (issue 30): the GQA `//4` k/v mapping, and all four quirks as CLI
flags (`--swap-ratios`, `--pool-layers`, `--beta-quirk`, `--gqa-quirk`) besides `--paper`."""

from __future__ import annotations

import pytest
import torch

from probes.shared_neurons import SharedSettings, kv_rows, neuron_sets, shared_sets
from steering.snrf import SnrfSettings

from tiny_models import D_HEAD, N_HEADS, tiny_model


def _samples(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, 200, (1, 10), generator=g)} for _ in range(n)]


def _by_4(mask: torch.Tensor, width: int) -> torch.Tensor:
    """The public code's mapping, by hand: query-space unit i → k/v row i // 4 (rows past the width dropped)."""
    out = torch.zeros(width, dtype=torch.bool)
    for i in mask.nonzero().flatten().tolist():
        if i // 4 < width:
            out[i // 4] = True
    return out


def test_kv_rows_maps_a_query_dimension_to_the_row_it_reads() -> None:
    n_heads, n_kv, d = 6, 2, 5  # group 3
    for h, j in ((0, 0), (2, 4), (3, 1), (5, 3)):
        mask = torch.zeros(n_heads * d, dtype=torch.bool)
        mask[h * d + j] = True
        assert kv_rows(mask, n_heads, n_kv, d).nonzero().flatten().tolist() == [(h // 3) * d + j]
        assert kv_rows(mask, n_heads, n_kv, d, quirk=True).nonzero().flatten().tolist() == [(h * d + j) // 4]


def test_gqa_quirk_maps_the_query_space_sets_by_4() -> None:
    model = tiny_model("llama")  # 4 query heads, 2 key/value heads: group 2, not 4
    n_kv = model.adapter.attn(0).k_proj.out_features // D_HEAD
    assert n_kv < N_HEADS and N_HEADS // n_kv != 4
    width = n_kv * D_HEAD
    fixed = neuron_sets(model, _samples(), SharedSettings(ratio_ffn=0.5, ratio_attn=0.5))
    quirk = neuron_sets(model, _samples(), SharedSettings(ratio_ffn=0.5, ratio_attn=0.5, gqa_quirk=True))
    changed = False
    for l in range(model.adapter.n_layers):
        for m in ("q", "o", "up"):  # untouched by the quirk
            assert torch.equal(quirk.sets[m][l], fixed.sets[m][l])
        # the public code's key score is its query score and its value score its o score: the k / v sets are the
        # q / o sets, mapped to rows by i // 4
        assert torch.equal(quirk.sets["k"][l], _by_4(fixed.sets["q"][l], width))
        assert torch.equal(quirk.sets["v"][l], _by_4(fixed.sets["o"][l], width))
        assert quirk.sets["k"][l].numel() == fixed.sets["k"][l].numel() == width
        changed |= not torch.equal(quirk.sets["k"][l], fixed.sets["k"][l])
        changed |= not torch.equal(quirk.sets["v"][l], fixed.sets["v"][l])
    assert changed
    # the two models' sets are intersected in query space, then mapped (as the public code does)
    other = neuron_sets(model, _samples(seed=4), SharedSettings(ratio_ffn=0.5, ratio_attn=0.5, gqa_quirk=True))
    other_fixed = neuron_sets(model, _samples(seed=4), SharedSettings(ratio_ffn=0.5, ratio_attn=0.5))
    shared = shared_sets(other, quirk)
    for l in range(model.adapter.n_layers):
        assert torch.equal(shared["k"][l], _by_4(other_fixed.sets["q"][l] & fixed.sets["q"][l], width))
        assert torch.equal(shared["q"][l], other.sets["q"][l] & quirk.sets["q"][l])
    # only k asked for: still scored through q, and q is not returned
    only_k = neuron_sets(model, _samples(), SharedSettings(ratio_ffn=0.5, ratio_attn=0.5, modules=("k",),
                                                           gqa_quirk=True))
    assert set(only_k.sets) == {"k"} and torch.equal(only_k.sets["k"][0], quirk.sets["k"][0])


def _args(argv: list[str]):
    from cli.main import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize("flags, shared_on, snrf_on", [
    ([], set(), False),
    (["--gqa-quirk"], {"gqa_quirk"}, False),
    (["--swap-ratios", "--pool-layers"], {"swap_ratios", "pool_layers"}, False),
    (["--beta-quirk"], set(), True),
    (["--paper"], {"swap_ratios", "pool_layers", "gqa_quirk"}, True),
])
def test_quirk_flags_reach_the_settings(flags, shared_on, snrf_on) -> None:
    from cli.shared_neurons import settings_for

    quirks = {"swap_ratios", "pool_layers", "gqa_quirk"}
    for argv in (["analyze", "--probe", "shared-neurons", "--pair", "x", "--out", "o", *flags],
                 ["steer", "snrf", "--donor", "y", "--prompt", "p", *flags]):
        args = _args(argv)
        shared = settings_for(SharedSettings(ratio_ffn=0.1, ratio_attn=0.2), args)
        snrf = settings_for(SnrfSettings(rank=3, beta=0.25), args)
        assert {q for q in quirks if getattr(shared, q)} == shared_on, argv
        assert snrf.beta_quirk is snrf_on, argv
        assert (shared.ratio_ffn, shared.ratio_attn, snrf.rank, snrf.beta) == (0.1, 0.2, 3, 0.25)


# --- --images DIR: real VLM classes see images through their own processor ---------------------------------------


def _tokenizer(specials: dict[str, int]):
    """A word-level tokenizer built offline whose ids fit the tiny models' 300-token vocabulary, the image
    tokens at the ids the tiny VLM configs reserve."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "Question:", "Answer:", "What", "is", "in", "the", "image", "?", "how", "many"]
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update(specials)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.add_special_tokens({"additional_special_tokens": list(specials)})
    return fast


def _save_vlm_and_llm(family: str, folder):
    """A tiny VLM folder (weights, tokenizer, its processor's files) and an LLM folder with its text backbone."""
    from transformers import AutoModelForCausalLM

    from tiny_models import TINY_FAMILIES, VOCAB

    hf = TINY_FAMILIES[family]()
    if family == "llava":
        from transformers import CLIPImageProcessorPil, LlavaProcessor

        tok = _tokenizer({"<image>": VOCAB - 1})
        processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"height": 32, "width": 32},
                                                                         do_center_crop=False),
                                   tokenizer=tok, patch_size=8, vision_feature_select_strategy="full")
        processor.save_pretrained(folder / "vlm")
    else:  # Qwen2VLProcessor needs torchvision (its video processor): the folder gets its image processor
        from transformers import Qwen2VLImageProcessorPil

        tok = _tokenizer({"<|image_pad|>": VOCAB - 1, "<|video_pad|>": VOCAB - 2, "<|vision_start|>": VOCAB - 3,
                          "<|vision_end|>": VOCAB - 4})
        Qwen2VLImageProcessorPil(min_pixels=16 * 16, max_pixels=32 * 32, patch_size=8, merge_size=2,
                                 temporal_patch_size=2).save_pretrained(folder / "vlm")
        tok.save_pretrained(folder / "vlm")
    hf.save_pretrained(folder / "vlm")
    text = hf.config.text_config
    if family == "qwen2_vl":
        from transformers import Qwen2Config

        text = Qwen2Config(**{k: v for k, v in text.to_dict().items() if k not in ("model_type", "architectures")})
    llm = AutoModelForCausalLM.from_config(text).eval()
    state = {k.replace("model.language_model.", "model."): v for k, v in hf.state_dict().items()
             if k.startswith("model.language_model.")}
    state["lm_head.weight"] = hf.lm_head.weight
    llm.load_state_dict(state, strict=False)
    llm.save_pretrained(folder / "llm")
    tok.save_pretrained(folder / "llm")
    return folder / "vlm", folder / "llm"


def _images(folder, n=2):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_images_reach_the_vlm_through_its_own_processor(family, tmp_path, capsys) -> None:
    import argparse

    import interp
    from cli.main import main
    from cli.shared_neurons import samples
    from probes.shared_neurons import sample_scores

    vlm_dir, llm_dir = _save_vlm_and_llm(family, tmp_path)
    images = _images(tmp_path / "images")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Question: What is in the image ?\n")  # one prompt for every image
    vlm, llm = interp.load_model(vlm_dir), interp.load_model(llm_dir)
    args = argparse.Namespace(images=str(images), prompts=str(prompts), samples=10)
    v_in, l_in = samples(vlm, llm, args)
    assert len(v_in) == len(l_in) == 2 and "pixel_values" in v_in[0] and "pixel_values" not in l_in[0]
    assert torch.equal(v_in[0]["input_ids"], v_in[1]["input_ids"])  # the same prompt, two different images
    assert (v_in[0]["input_ids"] == vlm.hf.config.image_token_id).sum() > 1  # the image's tokens, expanded
    assert torch.equal(l_in[0]["input_ids"], l_in[1]["input_ids"])
    a, b = sample_scores(vlm, v_in[0]), sample_scores(vlm, v_in[1])
    for m in ("q", "k", "v", "o", "up"):  # the text backbone's scores see the image
        assert not torch.allclose(a[m][1], b[m][1]), m
    # the whole command: VLM on images, LLM on text
    out = tmp_path / "atlas"
    assert main(["analyze", "--probe", "shared-neurons", "--model", str(vlm_dir), "--pair", str(llm_dir),
                 "--images", str(images), "--prompts", str(prompts), "--quiet", "--out", str(out)]) == 0
    assert "shared/VLM" in capsys.readouterr().out and (out / "atlas.json").is_file()


def test_images_need_matching_prompts(tmp_path, capsys) -> None:
    from cli.main import main

    images = _images(tmp_path / "images", n=3)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    common = ["analyze", "--probe", "shared-neurons", "--model", "m", "--pair", "x", "--out", str(tmp_path / "o")]
    assert main([*common, "--images", str(images), "--prompts", str(prompts)]) == 2
    assert "2 prompts for 3 images" in capsys.readouterr().err
    assert main([*common, "--images", str(images)]) == 2
    assert "--images needs --prompts" in capsys.readouterr().err
    assert main([*common, "--images", str(tmp_path / "none"), "--prompts", str(prompts)]) == 2
    assert "is not a folder" in capsys.readouterr().err
