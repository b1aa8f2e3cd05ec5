"""Peer: pyvene (`IntervenableModel.generate`) during greedy generation. Runs in .venv-pyvene.

pyvene registers one hook per intervention; each hook clones the component's
output, runs the intervention on it and writes it back. What runs here, per site:

- an Add alone:        pv.AdditionIntervention(source_representation=vector) — pyvene's own
                       activation-addition intervention;
- Scale / Clamp:       a pv.SourcelessIntervention subclass whose forward applies interp's
                       Scale / Clamp (pyvene's documented way to write a custom intervention);
- resid_post = component "block_output" (model.layers[L] output); mlp_post = component
  "mlp_activation" (model.layers[L].mlp.act_fn output; exact for Scale and Clamp-to-0, see
  steer_common).

Generation: `pv_model.generate(base, unit_locations=None, intervene_on_prompt=True, ...)`,
i.e. every position of the prompt and of every generated token (unit_locations=None
means no position filter). See steer_common.py for the JSON protocol.
"""

from __future__ import annotations

import steer_common as sc


def build(hf, edits: dict) -> dict:
    import pyvene as pv
    import torch

    d_model, d_mlp = hf.config.hidden_size, hf.config.intermediate_size

    class SiteEdit(pv.SourcelessIntervention):
        """interp's edits of one site as a pyvene intervention (keeps [batch, seq, width])."""

        def __init__(self, fn, **kwargs):
            super().__init__(keep_last_dim=True, **kwargs)
            self.fn = fn

        def forward(self, base, source=None, subspaces=None, **kwargs):
            return self.fn(base)

    def job(specs):
        reprs = []
        for (site, layer), mine in sc.by_site(specs).items():
            component, width = ("block_output", d_model) if site == "resid_post" else ("mlp_activation", d_mlp)
            if len(mine) == 1 and mine[0]["kind"] == "add":
                iv = pv.AdditionIntervention(source_representation=sc.tensors(mine[0], width)["vector"],
                                             embed_dim=width)
            else:
                iv = SiteEdit(sc.site_function(mine, width), embed_dim=width)
            reprs.append({"layer": layer, "component": component, "intervention": iv})
        pv_model = pv.IntervenableModel(reprs, model=hf)
        pv_model.disable_model_gradients()

        def run(ids, am, gen):
            with torch.inference_mode():
                _, out = pv_model.generate({"input_ids": ids, "attention_mask": am}, unit_locations=None,
                                           intervene_on_prompt=True, **gen)
            return out[:, ids.shape[1]:]

        what = (f"pyvene IntervenableModel with {len(reprs)} interventions ({sc.describe(specs)}); "
                "Add = pv.AdditionIntervention, Scale/Clamp = SourcelessIntervention subclass; "
                "components block_output / mlp_activation; generate(unit_locations=None, intervene_on_prompt=True)")
        return run, what

    return {k: job(v) for k, v in edits.items()}


if __name__ == "__main__":
    sc.main(build, "pyvene", "pyvene")
