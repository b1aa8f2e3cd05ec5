"""Tiny random-weight Hugging Face models, one per supported architecture family.

Each builder returns a seeded, float32, eval-mode model with 2 decoder
layers, d_model 64, 4 heads, an MLP width different from d_model and a
300-token vocabulary; building one takes milliseconds and needs no
network. `TINY_FAMILIES` maps a short family name to its builder, and
`random_batch` makes a pre-tokenized `interp.Batch` (with left padding) to
feed them, since the tiny vocabularies have no tokenizer.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

import interp

VOCAB = 300
D_MODEL = 64
N_HEADS = 4
D_HEAD = 16
D_MLP = 96
N_LAYERS = 2
SEED = 0
# Token ids the VLM configs reserve for images/videos: random batches stay below this.
FIRST_SPECIAL = VOCAB - 10

# Shared decoder settings (Llama-style names); eager attention like the TransformerLens bridge.
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=D_MODEL,
    intermediate_size=D_MLP,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=N_HEADS,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)


def _build(model_cls, config) -> nn.Module:
    """A seeded model with O(1) activations (the caller's RNG is left alone).

    HF's init (std 0.02, unit norms, zero biases) is too tame to catch a wrong bias, norm offset
    or activation, so every matrix is redrawn with std 1/sqrt(last dim) (embeddings and
    unembeddings: std 1) and every vector (norm weights, biases) gets noise.
    """
    config._attn_implementation = "eager"
    config.architectures = [model_cls.__name__]  # lets TransformerLens pick its adapter
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_cls(config).float().eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda item: item[0]):
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1:
                p.add_(0.2 * noise)
            else:
                p.copy_(noise if p.shape[0] == VOCAB else noise / p.shape[-1] ** 0.5)
    return model


def llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return _build(LlamaForCausalLM, LlamaConfig(**_COMMON, num_key_value_heads=2, head_dim=D_HEAD))


def mistral() -> nn.Module:
    from transformers import MistralConfig, MistralForCausalLM

    return _build(MistralForCausalLM, MistralConfig(**_COMMON, num_key_value_heads=2, head_dim=D_HEAD,
                                                    sliding_window=None))


def qwen2() -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _build(Qwen2ForCausalLM, Qwen2Config(**_COMMON, num_key_value_heads=2))


def qwen3() -> nn.Module:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return _build(Qwen3ForCausalLM, Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=D_HEAD))


def gemma() -> nn.Module:
    from transformers import GemmaConfig, GemmaForCausalLM

    return _build(GemmaForCausalLM, GemmaConfig(**_COMMON, num_key_value_heads=1, head_dim=D_HEAD))


def gemma2() -> nn.Module:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return _build(Gemma2ForCausalLM, Gemma2Config(
        **_COMMON, num_key_value_heads=2, head_dim=D_HEAD, query_pre_attn_scalar=D_HEAD, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"]))


def gemma3() -> nn.Module:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return _build(Gemma3ForCausalLM, Gemma3TextConfig(
        **_COMMON, num_key_value_heads=2, head_dim=D_HEAD, query_pre_attn_scalar=D_HEAD, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"]))


def phi3() -> nn.Module:
    from transformers import Phi3Config, Phi3ForCausalLM

    return _build(Phi3ForCausalLM, Phi3Config(
        **_COMMON, num_key_value_heads=N_HEADS, original_max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}))


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return _build(GPT2LMHeadModel, GPT2Config(
        vocab_size=VOCAB, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_inner=D_MLP, n_positions=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True))


def _neox(parallel: bool) -> nn.Module:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return _build(GPTNeoXForCausalLM, GPTNeoXConfig(
        **_COMMON, use_parallel_residual=parallel, rotary_pct=0.25))


def gpt_neox_parallel() -> nn.Module:
    return _neox(True)


def gpt_neox_sequential() -> nn.Module:
    return _neox(False)


def llava() -> nn.Module:
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                                image_size=32, patch_size=8)
    text = LlamaConfig(**_COMMON, num_key_value_heads=2, head_dim=D_HEAD)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=VOCAB - 1,
                         image_seq_length=(32 // 8) ** 2, vision_feature_layer=-1,
                         vision_feature_select_strategy="full", pad_token_id=0)
    return _build(LlavaForConditionalGeneration, config)


def qwen2_vl() -> nn.Module:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(_COMMON, num_key_value_heads=2, model_type="qwen2_vl_text",
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, embed_dim=32, hidden_size=D_MODEL, num_heads=4, mlp_ratio=2, patch_size=8,
                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=VOCAB - 1,
                           video_token_id=VOCAB - 2, vision_start_token_id=VOCAB - 3,
                           vision_end_token_id=VOCAB - 4, pad_token_id=0)
    return _build(Qwen2VLForConditionalGeneration, config)


TINY_FAMILIES: dict[str, Callable[[], nn.Module]] = {
    "llama": llama,
    "mistral": mistral,
    "qwen2": qwen2,
    "qwen3": qwen3,
    "gemma": gemma,
    "gemma2": gemma2,
    "gemma3": gemma3,
    "phi3": phi3,
    "gpt2": gpt2,
    "gpt_neox_parallel": gpt_neox_parallel,
    "gpt_neox_sequential": gpt_neox_sequential,
    "llava": llava,
    "qwen2_vl": qwen2_vl,
}


def tiny_model(family: str) -> interp.Model:
    """An `interp.Model` around a tiny family model (no tokenizer: feed it `random_batch()`)."""
    hf = TINY_FAMILIES[family]()
    return interp.Model(hf=hf, tokenizer=None, adapter=interp.adapters.adapter_for(hf), name=f"tiny-{family}",
                        source="test")


def random_batch(lengths: tuple[int, ...] = (9, 6, 3), seed: int = 1, vocab: int = FIRST_SPECIAL) -> interp.Batch:
    """Random token ids, left-padded to the longest length (pad id 0), as interp's `Batch`."""
    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    attn = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, seq - n:] = torch.randint(3, vocab, (n,), generator=g)
        attn[i, seq - n:] = 1
    return interp.Batch(
        input_ids=ids,
        attention_mask=attn,
        mask=attn.bool(),
        positions=(attn.cumsum(-1) - 1).clamp(min=0),
        doc_index=torch.arange(len(lengths)),
        group_index=torch.zeros(len(lengths), dtype=torch.long),
    )
