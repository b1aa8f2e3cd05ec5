"""A small, real VLM testbed (issue 9): a Llava VLM and a math LLM on one smollm2-135m backbone.

Data: sklearn's 8×8 handwritten digits, upscaled to 32×32 (one digit 4×; a pair: two digits
2× each, side by side, vertically centred), gray copied to 3 channels, normalised to [-1, 1]
(SigLIP's mean 0.5 / std 0.5). Digit samples are split train / held-out by sample index
(seeded), and the 100 ordered digit pairs (a, b) are split train / held-out too, so held-out
arithmetic means unseen images *and* unseen facts, for the VLM and the LLM alike.

Tasks, each a list of `Example(image, question, answer)`: "recognize" (one digit), "sum" and
"product" (a pair image), and "text_sum" / "text_product": the same arithmetic as text, the
image replaced by its 16-token caption (`CAPTIONS`, "... They are 3 and 9.") as `context`, the
question word for word the image task's. One prompt format for both models:
`context + PROMPT.format(q=question)`, target `" {answer}\\n"`; the VLM's prompt is the same
text after `N_IMAGE_TOKENS` image tokens. So an image prompt and its text twin have the same
length and the question at the same positions — the pairing the shared-neuron probe compares.

Models (`build_testbed`), both saved as HF folders that `interp.load_model` reads:
- VLM: `LlavaForConditionalGeneration` = a 2-layer SigLIP vision tower (width 128, 8 px
  patches: 16 image tokens, no CLS, `vision_feature_select_strategy="full"`), the Llava MLP
  projector, and smollm2-135m as its language model. Trained in two stages: (1) vision tower +
  projector alone, to map an image's 16 tokens to the input embeddings of its 16-token caption
  (`CAPTIONS`: "... The image shows the digit 7." / "... They are 3 and 9."), a cheap alignment
  warm start with no LLM pass; (2) next-token loss through the whole VLM on
  recognition and image *sums* (no products), training the vision tower, the projector and a
  rank-`lora_rank` LoRA on all seven linear maps of `vlm_layers`, merged into the weights.
- Math LLM: smollm2-135m with a rank-`lora_rank` LoRA on `llm_layers`, trained on text sums and
  products of the train pairs, merged.
So each model's text backbone differs from smollm2's in its chosen layers only, there by a
matrix of rank ≤ `lora_rank` per linear map; everything else is bit-for-bit smollm2.

Training runs under bf16 autocast where the CPU has native bf16 (AVX512-BF16 or AMX), in fp32
elsewhere (`TestbedSpec.autocast`; fp32 master weights, saved fp32), on `threads` CPU threads
(1 by default: with another process on a 2-core machine, 2 threads spin and run slower);
evaluation runs in fp32. Results are deterministic for a given seed, thread count and CPU kind.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from interp.cache import atomic_path, build_lock, cache_dir
from interp.errors import InterpError
from interp.models import native_bf16

BASE_MODEL = "smollm2-135m"
VERSION = 2  # bump when training changes: cached testbeds of another version are rebuilt
IMAGE_SIZE = 32
PATCH_SIZE = 8
N_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16: SigLIP has no CLS token, all patches are kept
IMAGE_TOKEN = "<empty_output>"  # an existing smollm2 special token (id 16), unused in our prompts
PROMPT = "Question: {q}\nAnswer:"
QUESTIONS = {
    "recognize": "Which digit is this?",
    "sum": "What is the sum of the two digits?",
    "product": "What is the product of the two digits?",
}
QUESTIONS["text_sum"], QUESTIONS["text_product"] = QUESTIONS["sum"], QUESTIONS["product"]
IMAGE_TASKS = ("recognize", "sum", "product")
TEXT_TASKS = ("text_sum", "text_product")
TASKS = IMAGE_TASKS + TEXT_TASKS
SPLITS = ("train", "held_out")
LORA_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


class TestbedError(InterpError):
    """A task, split or model that the testbed does not have."""

    __test__ = False  # not a pytest class


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One question: `image` [3, 32, 32] in [-1, 1] (None for text tasks), `answer` like "12";
    `context`: the text before the prompt (a text task's caption, "" otherwise)."""

    image: torch.Tensor | None
    question: str
    answer: str
    digits: tuple[int, ...]
    context: str = ""

    @property
    def prompt(self) -> str:
        return self.context + PROMPT.format(q=self.question)


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits: images [1797, 8, 8] in [0, 1], labels [1797]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images / 16.0, dtype=torch.float32), torch.tensor(d.target, dtype=torch.long)


def _normalise(gray: torch.Tensor) -> torch.Tensor:
    """[n, 32, 32] in [0, 1] -> [n, 3, 32, 32] in [-1, 1]."""
    return ((gray - 0.5) / 0.5).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def digit_images(indices: Sequence[int], right: Sequence[int] | None = None) -> torch.Tensor:
    """Images of digit samples `indices` (4× upscaled), or of pairs (`indices` left, `right` right).

    A pair puts each digit, 2× upscaled to 16×16, in rows 8..23 of its half. Returns [n, 3, 32, 32].
    """
    images, _ = _digits()
    left = images[torch.as_tensor(list(indices), dtype=torch.long)]
    if right is None:
        return _normalise(left.repeat_interleave(4, 1).repeat_interleave(4, 2))
    right_img = images[torch.as_tensor(list(right), dtype=torch.long)]
    if len(right_img) != len(left):
        raise TestbedError(f"{len(left)} left digits but {len(right_img)} right digits")
    canvas = torch.zeros(len(left), IMAGE_SIZE, IMAGE_SIZE)
    canvas[:, 8:24, 0:16] = left.repeat_interleave(2, 1).repeat_interleave(2, 2)
    canvas[:, 8:24, 16:32] = right_img.repeat_interleave(2, 1).repeat_interleave(2, 2)
    return _normalise(canvas)


def digit_labels(indices: Sequence[int]) -> list[int]:
    return _digits()[1][torch.as_tensor(list(indices), dtype=torch.long)].tolist()


def digit_split(seed: int = 0, held_out: float = 0.3) -> dict[str, np.ndarray]:
    """Digit sample indices per split: a seeded permutation, the last `held_out` share held out."""
    n = len(_digits()[1])
    perm = np.random.default_rng(seed).permutation(n)
    cut = n - int(round(held_out * n))
    return {"train": np.sort(perm[:cut]), "held_out": np.sort(perm[cut:])}


def pair_split(seed: int = 0, held_out: float = 0.3) -> dict[str, list[tuple[int, int]]]:
    """The 100 ordered digit pairs (a, b) per split, seeded."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    perm = np.random.default_rng(seed + 1000).permutation(len(pairs))
    cut = len(pairs) - int(round(held_out * len(pairs)))
    return {"train": sorted(pairs[i] for i in perm[:cut]), "held_out": sorted(pairs[i] for i in perm[cut:])}


CAPTIONS = {1: "Image description: a handwritten digit. The image shows the digit {a}.\n",
            2: "Image description: two handwritten digits. They are {a} and {b}.\n"}


def caption(digits: Sequence[int]) -> str:
    """The 16-token caption of an image of `digits` (one digit or a pair)."""
    return CAPTIONS[len(digits)].format(a=digits[0], b=digits[-1])


def _solve(task: str, a: int, b: int) -> int:
    return a + b if task.endswith("sum") else a * b


def task_examples(task: str, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    """Examples of `task` on `split` (seeded).

    recognize: every digit sample of the split in order (or `n` of them, drawn); sum / product:
    `n` (default 500) pair images whose digits are samples of the split and whose (a, b) is a
    pair of the split; text_sum / text_product: every pair of the split once (`n` None), or `n`
    pairs drawn, each with its caption as context.
    """
    if task not in TASKS:
        raise TestbedError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise TestbedError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    pairs = pair_split(seed)[split]
    rng = np.random.default_rng([seed, TASKS.index(task), SPLITS.index(split)])
    if task in TEXT_TASKS:
        chosen = pairs if n is None else [pairs[k] for k in rng.integers(len(pairs), size=n)]
        return [Example(None, QUESTIONS[task], str(_solve(task, a, b)), (a, b), caption((a, b))) for a, b in chosen]
    idx = digit_split(seed)[split]
    labels = np.array(digit_labels(idx))
    if task == "recognize":
        chosen = idx if n is None else rng.choice(idx, size=n, replace=n > len(idx))
        images = digit_images(chosen)
        return [Example(img, QUESTIONS[task], str(d), (d,)) for img, d in zip(images, digit_labels(chosen))]
    by_digit = {d: idx[labels == d] for d in range(10)}
    n = 500 if n is None else n
    which = rng.integers(len(pairs), size=n)
    left = [int(rng.choice(by_digit[pairs[k][0]])) for k in which]
    right = [int(rng.choice(by_digit[pairs[k][1]])) for k in which]
    images = digit_images(left, right)
    return [Example(img, QUESTIONS[task], str(_solve(task, *pairs[k])), pairs[k]) for img, k in zip(images, which)]


def text_twins(examples: Sequence[Example]) -> list[Example]:
    """The text form of image examples: each image replaced by its caption, the question kept."""
    return [Example(None, e.question, e.answer, e.digits, caption(e.digits)) for e in examples]


# ---------------------------------------------------------------- prompts and answers


def _is_vlm(hf: nn.Module) -> bool:
    return hasattr(hf.config, "vision_config")


def _encode(tokenizer, prompts: Sequence[str], image_token_id: int | None,
            answers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids`, `attention_mask`, `position_ids` [batch, seq] (and `target_mask`).

    Each row: [image tokens ×16 if `image_token_id` is not None] + prompt (`Example.prompt`) +
    (" {answer}\\n" if answers). `target_mask` marks the answer tokens (the loss positions).
    """
    image = [] if image_token_id is None else [image_token_id] * N_IMAGE_TOKENS
    rows, targets = [], []
    for i, text in enumerate(prompts):
        prompt = image + tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = [] if answers is None else tokenizer(f" {answers[i]}\n", add_special_tokens=False)["input_ids"]
        rows.append(prompt + answer)
        targets.append([0] * len(prompt) + [1] * len(answer))
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    target = torch.tensor([[0] * (width - len(t)) + t for t in targets], dtype=torch.bool)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position, "target_mask": target}


def forward_inputs(model, examples: Sequence[Example]) -> list[dict[str, torch.Tensor]]:
    """Forward kwargs with batch size 1 per example: `input_ids`, `attention_mask` (and `pixel_values`
    [1, 3, 32, 32] with the image tokens first for image examples) — for one-pass probes."""
    out = []
    for e in examples:
        token = model.hf.config.image_token_id if e.image is not None else None
        enc = _encode(model.tokenizer, [e.prompt], token)
        kw = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if e.image is not None:
            kw["pixel_values"] = e.image[None]
        out.append(kw)
    return out


def _short(text: str) -> str:
    """The answer part of a continuation: up to the first newline, stripped."""
    return text.split("\n", 1)[0].strip()


@torch.inference_mode()
def _answer(hf: nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 32,
            max_new_tokens: int = 4) -> list[str]:
    if not examples:
        return []
    images = _images_for(hf, examples)
    token = hf.config.image_token_id if images is not None else None
    device, dtype = next(hf.parameters()).device, next(hf.parameters()).dtype
    out: list[str] = []
    for start in range(0, len(examples), batch_size):
        enc = _encode(tokenizer, [e.prompt for e in examples[start:start + batch_size]], token)
        kwargs = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
        if images is not None:
            kwargs["pixel_values"] = images[start:start + batch_size].to(device, dtype)
        ids = hf.generate(**kwargs, max_new_tokens=max_new_tokens, do_sample=False,
                          pad_token_id=tokenizer.pad_token_id)
        new = ids[:, enc["input_ids"].shape[1]:]
        out += [_short(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def answer(model, examples: Sequence[Example], edits: Sequence = (), batch_size: int = 32) -> list[str]:
    """Greedy short answers (≤ 4 new tokens, cut at the first newline, stripped) of an `interp.Model`
    to `examples` (all image examples — VLM only, image tokens first — or all text examples).
    `edits` are applied with `interp.edit` while answering."""
    with _edited(model, edits):
        return _answer(model.hf, model.tokenizer, examples, batch_size)


def _edited(model, edits: Sequence):
    """`interp.edit(model, edits)`, or no context at all for no edits (no hooks to pay for)."""
    if not edits:
        return nullcontext()
    from interp.engine import edit

    return edit(model, edits)


def _stack(examples: Sequence[Example]) -> torch.Tensor | None:
    """The examples' images [n, 3, 32, 32], or None for text examples (mixing both is an error)."""
    has = {e.image is not None for e in examples}
    if len(has) > 1:
        raise TestbedError("mixed image and text examples; answer them in separate calls")
    return torch.stack([e.image for e in examples]) if has == {True} else None


def _images_for(hf: nn.Module, examples: Sequence[Example]) -> torch.Tensor | None:
    """`_stack`, refusing image examples for a model without a vision tower."""
    images = _stack(examples)
    if images is not None and not _is_vlm(hf):
        raise TestbedError("image examples given, but this model has no vision tower")
    return images


@torch.inference_mode()
def _correct(hf: nn.Module, tokenizer, examples: Sequence[Example], batch_size: int = 64) -> list[bool]:
    out: list[bool] = []
    for start in range(0, len(examples), batch_size):
        logits, targets, mask = _answer_logits(hf, tokenizer, examples[start:start + batch_size])
        hit = (logits.argmax(-1) == targets) | ~mask
        out += hit.all(-1).tolist()
    return out


def correct(model, examples: Sequence[Example], edits: Sequence = (), batch_size: int = 64) -> list[bool]:
    """Whether greedy decoding would give each example's answer: one teacher-forced pass checking that
    every token of " {answer}\\n" is the argmax — the exact-match test of `answer`, without generating
    (up to answers that decode alike from other tokens)."""
    with _edited(model, edits):
        return _correct(model.hf, model.tokenizer, examples, batch_size)


def image_tasks(model, n: int = 200, seed: int = 0) -> dict[str, Callable[[Sequence], list[bool]]]:
    """Per image task, `correct(edits) -> [bool]`: whether `model` (the testbed VLM) answers each of `n` fixed
    held-out questions right with `edits` applied (`correct`). With `ARITHMETIC`, what `steering.snrf_eval`'s
    SNRF table scores."""
    questions = {t: task_examples(t, "held_out", n=n, seed=seed) for t in IMAGE_TASKS}
    return {t: (lambda edits, ex=ex: correct(model, ex, edits)) for t, ex in questions.items()}


ARITHMETIC = {"arithmetic": ("sum", "product")}  # the tables' combined column: the mean of sums and products


def _accuracy(hf, tokenizer, examples: Sequence[Example]) -> float:
    return sum(_correct(hf, tokenizer, examples)) / len(examples)


def accuracy(model, task: str, split: str = "held_out", n: int | None = None, seed: int = 0) -> float:
    """Exact-match accuracy (`correct`) of `model` (an `interp.Model`) on `task_examples(task, split, n, seed)`."""
    return _accuracy(model.hf, model.tokenizer, task_examples(task, split, n, seed))


# ---------------------------------------------------------------- LoRA


class _LoRA(nn.Module):
    """`base(x) + scale · x Aᵀ Bᵀ` with A [r, in] random, B [out, r] zero (so it starts as `base`)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale


def _layers(hf: nn.Module) -> nn.ModuleList:
    return hf.model.language_model.layers if _is_vlm(hf) else hf.model.layers


@contextmanager
def _lora(hf: nn.Module, layers: Sequence[int], rank: int, alpha: float) -> Iterator[list[nn.Parameter]]:
    """Wrap the LORA_TARGETS of `layers` in LoRA; on exit merge `scale · B A` into the weights (fp32)."""
    wrapped: list[tuple[nn.Module, str, _LoRA]] = []
    for l in layers:
        for path in LORA_TARGETS:
            parent_path, name = path.rsplit(".", 1)
            parent = _layers(hf)[l].get_submodule(parent_path)
            lora = _LoRA(getattr(parent, name), rank, alpha)
            setattr(parent, name, lora)
            wrapped.append((parent, name, lora))
    try:
        yield [p for _, _, lo in wrapped for p in (lo.A, lo.B)]
    finally:
        with torch.no_grad():
            for parent, name, lora in wrapped:
                lora.base.weight += (lora.B @ lora.A) * lora.scale
                setattr(parent, name, lora.base)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TestbedSpec:
    """Everything that decides the testbed's weights."""

    __test__ = False

    seed: int = 0
    reduced: bool = False
    vlm_layers: tuple[int, ...] = (13, 14)  # overlap the LLM's in layer 14
    llm_layers: tuple[int, ...] = (14, 15, 16)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    vision_width: int = 128
    vision_layers: int = 2
    align_steps: int = 800  # stage 1: vision tower + projector -> caption embeddings (no LLM)
    align_batch: int = 64
    align_lr: float = 2e-3
    vlm_steps: int = 80  # stage 2: through the VLM, recognition + image sums
    vlm_batch: int = 16
    vlm_lr: float = 5e-4  # vision tower + projector
    lora_lr: float = 1e-3  # the VLM's LoRA
    llm_steps: int = 120
    llm_batch: int = 16
    llm_lr: float = 2e-3
    n_eval: int = 250  # held-out examples per image task
    threads: int = 1
    autocast: str = "bfloat16"  # the training matmuls' dtype: "float32" where the CPU has no fast bfloat16

    @classmethod
    def for_run(cls, reduced: bool = False, seed: int = 0, threads: int = 1) -> "TestbedSpec":
        """The full spec, or the reduced one (2–8 minutes on one core, by CPU)."""
        autocast = _training_dtype()
        if reduced:
            return cls(seed=seed, reduced=True, align_steps=400, align_batch=32, vlm_steps=16, llm_steps=40,
                       llm_lr=3e-3, n_eval=80, threads=threads, autocast=autocast)
        return cls(seed=seed, threads=threads, autocast=autocast)


def _training_dtype() -> str:
    """bfloat16 autocast where the CPU runs bfloat16 natively (`interp.native_bf16`: AVX512-BF16 or
    AMX); float32 elsewhere: on an AVX2-only CPU bfloat16 matmuls are emulated, ~9× slower than
    float32 (measured), and the reduced testbed's first build took over 20 minutes instead of about 2."""
    return "bfloat16" if native_bf16("cpu") else "float32"


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def _answer_logits(hf: nn.Module, tokenizer, examples: Sequence[Example]):
    """Teacher-forced logits at the answer: (logits [batch, k, vocab], targets [batch, k], mask [batch, k]),
    where logits[:, t] predicts targets[:, t] and mask marks the answer tokens (logits only for the last k+1)."""
    images = _images_for(hf, examples)
    token = hf.config.image_token_id if images is not None else None
    enc = _encode(tokenizer, [e.prompt for e in examples], token, [e.answer for e in examples])
    keep = int(enc["target_mask"].sum(-1).max()) + 1  # answers sit at the end (left padding)
    kwargs: dict[str, Any] = dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                  position_ids=enc["position_ids"], logits_to_keep=keep)
    device = next(hf.parameters()).device
    kwargs = {k: v.to(device) for k, v in kwargs.items() if torch.is_tensor(v)} | {"logits_to_keep": keep}
    if images is not None:
        kwargs["pixel_values"] = images.to(device, next(hf.parameters()).dtype)
    logits = hf(**kwargs).logits[:, :-1].float()  # position t predicts token t + 1
    return logits, enc["input_ids"][:, -keep + 1:].to(device), enc["target_mask"][:, -keep + 1:].to(device)


def _answer_loss(hf: nn.Module, tokenizer, examples: Sequence[Example]) -> torch.Tensor:
    """Mean next-token cross-entropy on the answer tokens."""
    logits, targets, mask = _answer_logits(hf, tokenizer, examples)
    return nn.functional.cross_entropy(logits[mask], targets[mask])


def _batches(n_items: int, batch: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = np.array([], dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(n_items)])
        yield order[:batch]
        order = order[batch:]


def _train_lm(hf, tokenizer, examples: list[Example], params: list[dict], steps: int, batch: int,
              seed: int, autocast: str) -> list[float]:
    """AdamW with a linear warm-up / cosine schedule over `steps` on the answer loss; returns the losses."""
    if steps == 0:
        return [float("nan")]
    opt = torch.optim.AdamW(params, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    rng = np.random.default_rng(seed)
    losses = []
    hf.train()
    for idx in _batches(len(examples), batch, steps, rng):
        with _autocast(autocast):
            loss = _answer_loss(hf, tokenizer, [examples[i] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    hf.eval()
    return losses


def _vlm_config(text_config, spec: TestbedSpec, image_token_id: int):
    from transformers import LlavaConfig, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=spec.vision_width, intermediate_size=4 * spec.vision_width,
                                num_hidden_layers=spec.vision_layers, num_attention_heads=4,
                                image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3, vision_use_head=False)
    return LlavaConfig(vision_config=vision, text_config=text_config.to_dict(), image_token_index=image_token_id,
                       image_seq_length=N_IMAGE_TOKENS, vision_feature_select_strategy="full",
                       vision_feature_layer=-1)


def _captions(tokenizer, examples: Sequence[Example]) -> torch.Tensor:
    """Token ids [n, 16] of each example's caption (CAPTIONS, by its number of digits)."""
    rows = []
    for e in examples:
        text = caption(e.digits)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != N_IMAGE_TOKENS:
            raise TestbedError(f"caption {text!r} is {len(ids)} tokens, not {N_IMAGE_TOKENS}")
        rows.append(ids)
    return torch.tensor(rows)


def _align(vlm, embeddings: torch.Tensor, tokenizer, examples: list[Example], spec: TestbedSpec) -> dict[str, float]:
    """Stage 1: vision tower + projector map an image's 16 tokens to its caption's input embeddings.

    Loss: MSE to the caption embeddings (relative to their mean square) + cross-entropy of the
    features' dot products with the embeddings of all caption and digit tokens (the digit
    positions are what matters and differ least).
    """
    parts = [vlm.model.vision_tower, vlm.model.multi_modal_projector]
    params = [p for m in parts for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=spec.align_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec.align_steps)
    rng = np.random.default_rng(spec.seed + 1)
    images = _stack(examples)
    captions = _captions(tokenizer, examples)  # [n, 16]
    vocab = torch.unique(torch.cat([captions.flatten(), torch.tensor(
        [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)])]))
    classes = torch.searchsorted(vocab, captions)  # caption tokens as indices into vocab
    cand = embeddings[vocab]  # [v, d]
    scale = float(cand.pow(2).mean())
    digit_ids = torch.tensor([tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)])
    digit_class = (captions.unsqueeze(-1) == digit_ids).float().argmax(-1)  # [n, 16], valid where is_digit
    is_digit = torch.isin(captions, digit_ids)
    digits = embeddings[digit_ids]
    losses = []
    for m in parts:
        m.train()
    for idx in _batches(len(examples), spec.align_batch, spec.align_steps, rng):
        idx = torch.as_tensor(idx)
        feats = torch.stack(list(vlm.model.get_image_features(pixel_values=images[idx]).pooler_output))
        target = cand[classes[idx]]
        mse = (feats - target).pow(2).mean() / scale
        ce = nn.functional.cross_entropy((feats @ cand.T).flatten(0, 1), classes[idx].flatten())
        here = is_digit[idx]
        ce_digit = nn.functional.cross_entropy((feats[here] @ digits.T), digit_class[idx][here])
        loss = mse + ce + ce_digit
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    for m in parts:
        m.eval()
    with torch.no_grad():
        feats = torch.cat([torch.stack(list(vlm.model.get_image_features(pixel_values=images[i:i + 256]).pooler_output))
                           for i in range(0, len(images), 256)])
        hit = ((feats @ cand.T).argmax(-1) == classes).float()
    return {"align_loss_first": losses[0], "align_loss_last": float(np.mean(losses[-5:])),
            "align_token_accuracy_train": float(hit.mean())}


def _interleave(*lists: list[Example]) -> list[Example]:
    return [e for group in zip(*lists) for e in group]


def _changed_layers(hf: nn.Module, base_state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    state = hf.state_dict()
    changed = set()
    for name, w in base_state.items():
        if not torch.equal(state[prefix + name], w):
            m = re.match(r"layers\.(\d+)\.", name)
            changed.add(int(m.group(1)) if m else -1)
    return sorted(changed)


def _delta_norms(hf: nn.Module, base_state: dict[str, torch.Tensor], prefix: str,
                 layers: Sequence[int]) -> dict[int, float]:
    """‖ΔW‖_F / ‖W_base‖_F over the seven linear maps of each of `layers`."""
    state = hf.state_dict()
    out = {}
    for l in layers:
        names = [f"layers.{l}.{t}.weight" for t in LORA_TARGETS]
        num = sum(float((state[prefix + n] - base_state[n]).pow(2).sum()) for n in names)
        den = sum(float(base_state[n].pow(2).sum()) for n in names)
        out[l] = math.sqrt(num / den)
    return out


def _build_llm(base, spec: TestbedSpec, folder: Path) -> dict[str, Any]:
    import copy

    t0 = time.time()
    hf = copy.deepcopy(base.hf)
    for p in hf.parameters():
        p.requires_grad_(False)
    train = _interleave(task_examples("text_sum", "train", seed=spec.seed),
                        task_examples("text_product", "train", seed=spec.seed))
    torch.manual_seed(spec.seed + 2)
    with _lora(hf, spec.llm_layers, spec.lora_rank, spec.lora_alpha) as params:
        losses = _train_lm(hf, base.tokenizer, train, [{"params": params, "lr": spec.llm_lr}],
                           spec.llm_steps, spec.llm_batch, spec.seed + 3, spec.autocast)
    train_s = time.time() - t0
    hf.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return {"hf": hf, "steps": spec.llm_steps, "train_seconds": round(train_s, 1),
            "loss_first": losses[0], "loss_last": float(np.mean(losses[-5:]))}


def _build_vlm(base, spec: TestbedSpec, folder: Path) -> dict[str, Any]:
    from transformers import LlavaForConditionalGeneration

    t0 = time.time()
    token_id = base.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(spec.seed)
    vlm = LlavaForConditionalGeneration(_vlm_config(base.hf.config, spec, token_id))
    vlm.model.language_model.load_state_dict(base.hf.model.state_dict(), strict=True)
    vlm.tie_weights()
    for p in vlm.model.language_model.parameters():
        p.requires_grad_(False)
    embeddings = base.hf.model.embed_tokens.weight.detach()
    recog = task_examples("recognize", "train", seed=spec.seed)
    sums = task_examples("sum", "train", n=len(recog), seed=spec.seed)
    align = _align(vlm, embeddings, base.tokenizer, recog + sums, spec)
    align_s = time.time() - t0
    torch.manual_seed(spec.seed + 4)
    vision = [p for m in (vlm.model.vision_tower, vlm.model.multi_modal_projector) for p in m.parameters()]
    with _lora(vlm, spec.vlm_layers, spec.lora_rank, spec.lora_alpha) as lora_params:
        losses = _train_lm(vlm, base.tokenizer, _interleave(recog, sums),
                           [{"params": vision, "lr": spec.vlm_lr}, {"params": lora_params, "lr": spec.lora_lr}],
                           spec.vlm_steps, spec.vlm_batch, spec.seed + 5, spec.autocast)
    train_s = time.time() - t0
    vlm.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    (folder / "testbed.json").write_text(json.dumps({
        "image_token": IMAGE_TOKEN, "image_token_id": token_id, "n_image_tokens": N_IMAGE_TOKENS,
        "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "pixel_mean": 0.5, "pixel_std": 0.5,
        "prompt": PROMPT, "text_context": CAPTIONS, "answer_format": " {answer}\\n", "image_tokens_before_prompt": True}, indent=1))
    return {"hf": vlm, "align_steps": spec.align_steps, "steps": spec.vlm_steps,
            "align_seconds": round(align_s, 1), "train_seconds": round(train_s, 1),
            **align,
            "loss_first": losses[0], "loss_last": float(np.mean(losses[-5:]))}


# ---------------------------------------------------------------- the testbed


@dataclass(frozen=True)
class TestbedPaths:
    """Where a built testbed lives: the VLM and math-LLM model folders and metrics.json."""

    __test__ = False

    root: Path
    vlm: Path
    llm: Path
    metrics: Path

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics.read_text())


def testbed_paths(reduced: bool = False, seed: int = 0) -> TestbedPaths:
    root = cache_dir() / "testbed" / f"{'reduced' if reduced else 'full'}-seed{seed}"
    return TestbedPaths(root, root / "vlm", root / "llm", root / "metrics.json")


def _evaluate(base, llm, vlm, spec: TestbedSpec) -> dict[str, dict[str, float]]:
    tok = base.tokenizer
    acc: dict[str, dict[str, float]] = {"vlm": {}, "llm": {}, "base": {}}
    for task in IMAGE_TASKS:
        acc["vlm"][task] = _accuracy(vlm, tok, task_examples(task, "held_out", n=spec.n_eval, seed=spec.seed))
    for task in TEXT_TASKS:
        examples = task_examples(task, "held_out", seed=spec.seed)
        for name, hf in (("vlm", vlm), ("llm", llm), ("base", base.hf)):
            acc[name][task] = _accuracy(hf, tok, examples)
        acc["llm"][task + "_train_pairs"] = _accuracy(llm, tok, task_examples(task, "train", seed=spec.seed))
    return acc


def _is_cached(paths: TestbedPaths, spec: TestbedSpec) -> bool:
    """A complete testbed built by this VERSION with this spec (the thread count aside)."""
    try:
        metrics = paths.read_metrics()
    except (OSError, ValueError):
        return False
    mine = json.loads(json.dumps(asdict(spec)))
    same = {k: v for k, v in metrics.get("spec", {}).items() if k != "threads"} == \
        {k: v for k, v in mine.items() if k != "threads"}
    return metrics.get("version") == VERSION and same and (paths.vlm / "config.json").exists() \
        and (paths.llm / "config.json").exists()


def build_testbed(reduced: bool = False, seed: int = 0, force: bool = False, threads: int = 1) -> TestbedPaths:
    """Train and save the VLM and the math LLM (or reuse the cached ones); see the module docstring.

    Written atomically to `cache_dir()/testbed/{full|reduced}-seed{seed}`: `vlm/`, `llm/` (HF
    folders) and `metrics.json` (held-out accuracies, steps, seconds, changed layers).
    """
    paths = testbed_paths(reduced, seed)
    spec = TestbedSpec.for_run(reduced, seed, threads)
    if not force and _is_cached(paths, spec):
        return paths
    with build_lock(paths.root):
        if not force and _is_cached(paths, spec):  # built by another process while we waited
            return paths
        return _build(paths, spec)


def _build(paths: TestbedPaths, spec: TestbedSpec) -> TestbedPaths:
    from interp.models import load_model

    t0 = time.time()
    with _num_threads(spec.threads), atomic_path(paths.root, directory=True) as tmp:
        base = load_model(BASE_MODEL)
        (tmp / "vlm").mkdir()
        (tmp / "llm").mkdir()
        vlm_info = _build_vlm(base, spec, tmp / "vlm")
        llm_info = _build_llm(base, spec, tmp / "llm")
        vlm, llm = vlm_info.pop("hf"), llm_info.pop("hf")
        base_state = base.hf.model.state_dict()
        t_eval = time.time()
        acc = _evaluate(base, llm, vlm, spec)
        metrics = {
            "version": VERSION,
            "spec": asdict(spec),
            "accuracy_held_out": acc,
            "chance": {"recognize": 0.1},
            "changed_layers": {"vlm": _changed_layers(vlm, base_state, "model.language_model."),
                               "llm": _changed_layers(llm, base_state, "model.")},
            "relative_delta_norm": {
                "vlm": _delta_norms(vlm, base_state, "model.language_model.", spec.vlm_layers),
                "llm": _delta_norms(llm, base_state, "model.", spec.llm_layers)},
            "vlm": vlm_info, "llm": llm_info,
            "eval_seconds": round(time.time() - t_eval, 1),
            "build_seconds": round(time.time() - t0, 1),
            "n_held_out": {"digits": len(digit_split(spec.seed)["held_out"]), "pairs": len(pair_split(spec.seed)["held_out"]),
                           "image_examples": spec.n_eval},
        }
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return paths


def metrics_table(metrics: dict[str, Any]) -> str:
    """The held-out accuracies as a small text table (models × tasks)."""
    acc = metrics["accuracy_held_out"]
    cols = list(TASKS)
    lines = [f"{'model':6s} " + " ".join(f"{c:>12s}" for c in cols)]
    for name in ("vlm", "llm", "base"):
        cells = [f"{acc[name][c]:12.3f}" if c in acc[name] else f"{'-':>12s}" for c in cols]
        lines.append(f"{name:6s} " + " ".join(cells))
    lines.append(f"changed layers: vlm {metrics['changed_layers']['vlm']}, llm {metrics['changed_layers']['llm']}; "
                 f"build {metrics['build_seconds']} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m testbeds.vlm", description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true", help="the quick version (2–8 minutes, by CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    paths = build_testbed(args.reduced, args.seed, args.force, args.threads)
    print(f"VLM: {paths.vlm}\nLLM: {paths.llm}")
    print(metrics_table(paths.read_metrics()))


if __name__ == "__main__":
    main()
