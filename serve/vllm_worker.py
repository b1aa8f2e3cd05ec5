"""interp edits inside vLLM's workers (issue 28, first part): a worker extension, one recipe per request.

Pass `worker_extension_cls="serve.vllm_worker.InterpWorkerExtension"` to `vllm.LLM` (or the server), send
the recipes once with `llm.collective_rpc("interp_set_recipes", args=(json,))` — {name: [edit JSON]} in
the form of `interp.edits.EDIT_SCHEMA` — and pick one per request with
`SamplingParams(extra_args={"recipe": name})`.

vLLM runs a flattened batch `[tokens, width]`. Each hook maps the step's tokens to row keys
(`interp.rows.row_keys`) from the runner's state: the requests in batch order
(`input_batch.req_ids`), their spans (`query_start_loc`), positions (`positions`) and prompt
lengths, then applies the stacked per-recipe tables (`interp.rows.RowSite`) — the same code the
transformers engine uses. Sites: `blocks.L.hook_resid_post` (vLLM's Llama layer returns
`(hidden, residual)` with the add fused into the next norm: the stream is their sum, written back
as `(new, 0)`) and `blocks.L.mlp.hook_post` (the input of `down_proj`). Widths come from the model
config, never from weights (vLLM may repack them). Eager mode only, so far.

This module runs inside vLLM's worker processes (in `.venv-vllm`, `make install-vllm`).
"""

from __future__ import annotations

import json

import torch

from interp.edits import EditError, edit_from_json
from interp.rows import PHASES, RowSite, program, row_keys

SITE_KINDS = ("hook_resid_post", "mlp.hook_post")


def _parse_site(site: str, n_layers: int) -> tuple[int, str]:
    parts = site.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or parts[2] not in SITE_KINDS:
        raise EditError(f"site {site!r} is not supported on the vLLM engine yet; sites: blocks.L.{', blocks.L.'.join(SITE_KINDS)}")
    layer = int(parts[1])
    if not 0 <= layer < n_layers:
        raise EditError(f"site {site!r}: layer out of range 0..{n_layers - 1}")
    return layer, parts[2]


class InterpWorkerExtension:
    """Methods vLLM mixes into its worker; `self.model_runner` is vLLM's."""

    def interp_set_recipes(self, recipes_json: str) -> int:
        """Install the recipes {name: [edit JSON]} (replacing any before); returns the number of hooks."""
        self.interp_clear()
        runner = self.model_runner
        model = runner.model
        layers = model.model.layers
        cfg = model.config
        width = {"hook_resid_post": cfg.hidden_size, "mlp.hook_post": cfg.intermediate_size}
        recipes = {name: [edit_from_json(e) for e in edits] for name, edits in json.loads(recipes_json).items()}
        names = sorted(recipes)
        self._interp_slot = {n: i for i, n in enumerate(names)}
        handles = []
        for site in sorted({e.site for edits in recipes.values() for e in edits}):
            layer, kind = _parse_site(site, len(layers))
            programs = [[]] + [[e for e in program(recipes[n], ph) if e.site == site] for n in names for ph in PHASES]
            rows = RowSite.build(programs, width[kind])
            if kind == "hook_resid_post":
                handles.append(layers[layer].register_forward_hook(self._resid_post(rows)))
            else:
                handles.append(layers[layer].mlp.down_proj.register_forward_pre_hook(self._neurons(rows)))
        self._interp_handles = handles
        return len(handles)

    def interp_clear(self) -> bool:
        """Remove every hook; the model computes as before."""
        for h in getattr(self, "_interp_handles", []):
            h.remove()
        self._interp_handles = []
        return True

    # ------------------------------------------------------------ inside the forward pass
    def _keys(self, n_tokens: int) -> torch.Tensor:
        """keys [n_tokens] of this step: each request's recipe slot, prompt or generated."""
        runner = self.model_runner
        ids = list(runner.input_batch.req_ids)
        qsl = runner.query_start_loc.np[: len(ids) + 1].tolist()
        positions = runner.positions[:n_tokens]
        positions = positions.cpu().long() if torch.is_tensor(positions) else torch.as_tensor(positions).long()
        slots, prompt_lens = [], []
        for rid in ids:
            state = runner.requests[rid]
            extra = getattr(state.sampling_params, "extra_args", None) or {}
            slots.append(self._interp_slot.get(extra.get("recipe")))
            prompt_lens.append(state.num_prompt_tokens)
        return row_keys(slots, qsl[:-1], [b - a for a, b in zip(qsl[:-1], qsl[1:])], positions, prompt_lens)

    def _resid_post(self, rows: RowSite):
        def hook(module, args, output):
            hidden, residual = output
            stream = hidden + residual
            new = rows(stream.unsqueeze(0), self._keys(stream.shape[0])).squeeze(0)
            return new, torch.zeros_like(residual)
        return hook

    def _neurons(self, rows: RowSite):
        def hook(module, args):
            x = args[0]
            return (rows(x.unsqueeze(0), self._keys(x.shape[0])).squeeze(0), *args[1:])
        return hook
