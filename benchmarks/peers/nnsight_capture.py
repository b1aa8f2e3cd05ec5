"""Peer benchmark: nnsight saving the 30 MLP post-activations of smollm2-135m.

Runs inside .venv-nnsight (nnsight needs transformers 4.x; see setup_nnsight.sh),
so it cannot import interp. It reads one JSON object on stdin:

    {"input_ids": [[...]], "attention_mask": [[...]], "model_dir": "...",
     "threads": 2, "warmup": 2, "reps": 7}

and writes one JSON object on stdout: versions, the per-repetition seconds of
the plain HF fp32 forward ("plain_fp32") and of the nnsight trace ("nnsight"),
interleaved, plus the number of activations > 0 per layer ("fired") so the
caller can check that nnsight saw the same tensors interp did.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import warnings
from pathlib import Path

from shared import load_model  # noqa: E402  (benchmarks/peers/shared.py)

warnings.filterwarnings("ignore")


def main() -> None:
    spec = json.load(sys.stdin)
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    import nnsight
    import transformers

    hf = load_model(Path(spec["model_dir"]).expanduser())
    ids = torch.tensor(spec["input_ids"], dtype=torch.long)
    am = torch.tensor(spec["attention_mask"], dtype=torch.long)
    n_layers = hf.config.num_hidden_layers

    wrapped = nnsight.NNsight(hf)

    def plain():
        with torch.inference_mode():
            hf(ids, am)

    def traced():
        # nnsight's own outputs (if any) go to our stderr, keeping stdout JSON-only.
        with contextlib.redirect_stdout(sys.stderr), torch.inference_mode():
            saved = []  # filled in the block (nnsight runs the block's body in its own frame)
            with wrapped.trace(ids, attention_mask=am):
                for l in range(n_layers):
                    saved.append(wrapped.model.layers[l].mlp.down_proj.input.save())
        return saved

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    # correctness: the saved tensors are the MLP post-activations, [batch, seq, d_mlp]
    _, saved = timed(traced)
    shapes = {tuple(s.shape) for s in saved}
    mask = am.bool()
    fired = [int((s[mask] > 0).sum()) for s in saved]

    for _ in range(int(spec.get("warmup", 2))):
        plain()
        traced()
    times = {"plain_fp32": [], "nnsight": []}
    for _ in range(int(spec.get("reps", 7))):
        for name, fn in (("plain_fp32", plain), ("nnsight", traced)):
            dt, _ = timed(fn)
            times[name].append(dt)

    json.dump(
        {
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "nnsight": nnsight.__version__},
            "threads": torch.get_num_threads(),
            "n_tokens": int(am.sum()),
            "shapes": [list(s) for s in shapes],
            "fired": fired,
            "times": times,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
