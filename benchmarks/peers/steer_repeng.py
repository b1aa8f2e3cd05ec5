"""Peer: repeng (`ControlModel` + `set_raw_control`) during greedy generation. Runs in .venv-repeng.

repeng wraps decoder layers in `ControlModule`s (mutating the model) and combines
each layer's output with a control tensor through `operator(current, control)`
(default: +), masking left-padding positions out of the control. What runs here:

- Add at resid_post:   ControlModel(model, layer_ids) and `set_raw_control({L: vector})`
                       with the default operator (in the 8-edit set, the same control set per
                       layer with `ControlModule.set_control(BlockControlParams(control=vector))`);
- Scale / Clamp at resid_post: BlockControlParams(control=zeros, operator=<interp's Scale / Clamp>)
                       on that layer's ControlModule;
- mlp_post sites:      repeng's ControlModel only wraps decoder layers, so the benchmark wraps
                       model.layers.L.mlp.act_fn in repeng's own `ControlModule` by hand and sets
                       the same operator there (exact for Scale and Clamp-to-0, see steer_common).

Each job has its own deep copy of the model (ControlModel mutates it), wrapped
once; the plain baseline runs the unwrapped original. See steer_common.py for the
JSON protocol.
"""

from __future__ import annotations

import copy

import steer_common as sc


def build(hf, edits: dict) -> dict:
    import torch
    from repeng.control import BlockControlParams, ControlModel, ControlModule

    d_model, d_mlp = hf.config.hidden_size, hf.config.intermediate_size

    def job(specs):
        model = copy.deepcopy(hf)
        sites = sc.by_site(specs)
        resid = sorted({layer for (site, layer) in sites if site == "resid_post"})
        cm = ControlModel(model, resid)
        only_adds = all(s["kind"] == "add" for s in specs) and all(site == "resid_post" for site, _ in sites)
        if only_adds:  # repeng's plain path: one raw control per layer, default operator (+)
            cm.set_raw_control({s["layer"]: sc.tensors(s, d_model)["vector"] for s in specs})
        else:
            for (site, layer), mine in sites.items():
                if site == "resid_post":
                    module, width = model.model.layers[layer], d_model
                else:
                    mlp = model.model.layers[layer].mlp
                    mlp.act_fn = ControlModule(mlp.act_fn)
                    module, width = mlp.act_fn, d_mlp
                if site == "resid_post" and all(s["kind"] == "add" for s in mine):
                    vec = sum(sc.tensors(s, width)["vector"] for s in mine)
                    module.set_control(BlockControlParams(control=vec))  # default operator: +
                    continue
                fn = sc.site_function(mine, width)
                module.set_control(BlockControlParams(control=torch.zeros(width),
                                                      operator=(lambda cur, _ctl, fn=fn: fn(cur))))

        def run(ids, am, gen):
            with torch.inference_mode():
                return cm.generate(input_ids=ids, attention_mask=am, **gen)[:, ids.shape[1]:]

        what = (f"repeng ControlModel on layers {resid}" +
                ("; set_raw_control with the default + operator" if only_adds else
                 "; per-layer BlockControlParams: Add = control vector with the default + operator, "
                 "Scale/Clamp = operators doing interp's Scale/Clamp"
                 + ("; mlp_post via hand-wrapped ControlModule(mlp.act_fn)"
                    if any(site == "mlp_post" for site, _ in sites) else ""))
                + f" ({sc.describe(specs)})")
        return run, what

    return {k: job(v) for k, v in edits.items()}


if __name__ == "__main__":
    sc.main(build, "repeng", "repeng")
