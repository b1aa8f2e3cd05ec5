"""Peer: steering-vectors (`SteeringVector.apply`) during greedy generation. Runs in .venv-steering-vectors.

steering-vectors adds a vector to a module's output through a forward hook, one
hook per SteeringVector layer; an `operator(original, vector) -> delta` turns it
into other edits. What runs here, per interp edit spec:

- Add at resid_post:   SteeringVector({L: vector}, "decoder_block"), the default
                       additive operator (model.layers.L output);
- Scale at a site:     SteeringVector({L: gain - 1}), operator delta = original · (gain - 1);
- Clamp-to-0 at a site: SteeringVector({L: mask}), operator delta = -original · mask;
- mlp_post sites:      layer_type "mlp" with layer_config {"mlp": "model.layers.{num}.mlp.act_fn"},
                       i.e. the output of act_fn (see steer_common: exact for Scale and Clamp-to-0).

All vectors are applied with `with sv.apply(model, ...)` (nested with an ExitStack),
min_token_index=0 (every position, prompt and generated), around `model.generate`.
See steer_common.py for the JSON protocol.
"""

from __future__ import annotations

import contextlib

import steer_common as sc


def build(hf, edits: dict) -> dict:
    import torch
    from steering_vectors import SteeringVector

    d_model, d_mlp = hf.config.hidden_size, hf.config.intermediate_size

    def vectors(specs):
        out = []  # (SteeringVector, apply kwargs)
        for s in specs:
            if s["site"] == "resid_post":
                lt, cfg, width = "decoder_block", None, d_model
            else:
                lt, cfg, width = "mlp", {"mlp": "model.layers.{num}.mlp.act_fn"}, d_mlp
            p = sc.tensors(s, width)
            if s["kind"] == "add":
                vec, op = p["vector"], None
            elif s["kind"] == "scale":
                vec, op = p["gain"] - 1, (lambda orig, v: orig * v)
            else:
                if bool((p["values"][p["mask"]] != 0).any()):
                    raise SystemExit("steering-vectors peer: only Clamp-to-0 is expressed exactly")
                vec, op = p["mask"].float(), (lambda orig, v: -orig * v)
            out.append((SteeringVector({s["layer"]: vec}, lt), dict(layer_config=cfg, operator=op)))
        return out

    def job(specs):
        svs = vectors(specs)

        def run(ids, am, gen):
            with contextlib.ExitStack() as stack, torch.inference_mode():
                for sv, kw in svs:
                    stack.enter_context(sv.apply(hf, min_token_index=0, **kw))
                return hf.generate(input_ids=ids, attention_mask=am, **gen)[:, ids.shape[1]:]

        what = (f"{len(svs)} SteeringVector.apply hooks ({sc.describe(specs)}); Add = default additive "
                "operator on the decoder layer output, Scale/Clamp-to-0 = custom delta operators; "
                "mlp_post = model.layers.L.mlp.act_fn output")
        return run, what

    return {k: job(v) for k, v in edits.items()}


if __name__ == "__main__":
    sc.main(build, "steering-vectors", "steering_vectors")
