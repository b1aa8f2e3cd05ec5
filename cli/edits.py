"""The generic edits of `interp steer` (--clamp, --add, --contrast, --recipe, --concept): parsing them
before the model loads, turning them into edits once it has, and printing the generations."""

from __future__ import annotations

import itertools
import math
import re
import textwrap
from pathlib import Path

from cli.base import error

_CLAMP_RE = re.compile(r"^(?P<site>[^:=*\s]+):(?P<neuron>[^=]+)=(?P<value>.+)$")


def number(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise error(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise error(f"{what}: {text!r} is not a finite number")
    return v


def parse_clamp(spec: str) -> tuple[str, int, float]:
    """'blocks.5.mlp.hook_post:123=4.0' -> (site, neuron, value)."""
    m = _CLAMP_RE.match(spec.strip())
    if m is None:
        raise error(f"bad --clamp {spec!r}: use SITE:NEURON=VALUE, e.g. blocks.5.mlp.hook_post:123=4.0")
    try:
        neuron = int(m["neuron"])
    except ValueError:
        raise error(f"bad --clamp {spec!r}: neuron {m['neuron']!r} is not a whole number") from None
    if neuron < 0:
        raise error(f"bad --clamp {spec!r}: neuron index must be >= 0")
    return m["site"], neuron, number(m["value"], f"--clamp {spec!r} value")


def parse_add(spec: str) -> tuple[str, Path, float]:
    """'blocks.8.hook_resid_post:vec.safetensors*4' -> (site, path, scale); scale defaults to 1."""
    site, sep, rest = spec.strip().partition(":")
    if not sep or not site or not rest:
        raise error(f"bad --add {spec!r}: use SITE:FILE*SCALE, e.g. blocks.8.hook_resid_post:vec.safetensors*4")
    path, star, scale = rest.rpartition("*")
    if not star:
        path, scale = rest, "1"
    if not path:
        raise error(f"bad --add {spec!r}: no file before '*'")
    return site, Path(path).expanduser(), number(scale, f"--add {spec!r} scale")


def read_vector(path: Path):
    """The steering vector in a safetensors file: key 'vector', or its only tensor (never pickle)."""
    import torch
    from safetensors import safe_open

    from interp.errors import InterpError

    if not path.is_file():
        raise error(f"vector file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
            key = "vector" if "vector" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise error(f"{path}: expected a tensor named 'vector' or a single tensor, found "
                            + (", ".join(keys[:8]) if keys else "no tensors"))
            vec = f.get_tensor(key)
    except InterpError:
        raise
    except Exception as exc:  # safetensors raises several types for a bad file
        raise error(f"{path} is not a readable safetensors file ({type(exc).__name__})") from None
    if vec.dim() == 2 and 1 in vec.shape:
        vec = vec.reshape(-1)
    if vec.dim() != 1 or vec.is_complex() or vec.dtype == torch.bool:
        raise error(f"{path}: tensor {key!r} must be a real vector, got {vec.dtype} of shape {tuple(vec.shape)}")
    vec = vec.float()
    if not vec.isfinite().all():
        raise error(f"{path}: tensor {key!r} has NaN or infinite entries")
    return vec


def read_prompts(path: str, what: str) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise error(f"{what} file {p} does not exist")
    if not p.is_file():
        raise error(f"{what} file {p} is a directory, not a text file")
    try:
        lines = [l.strip() for l in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise error(f"{what} file {p} is not UTF-8 text") from None
    lines = [l for l in lines if l]
    if not lines:
        raise error(f"{what} file {p} is empty: put one prompt per line")
    return lines


def generic_edits(args, model) -> tuple[list, list[str]]:
    """The edits the options ask for, checked against the model, and one description line per edit."""
    import interp

    edits, notes = [], []
    for site, neuron, value in args._clamps:
        width = model.adapter.site_width(site)
        if neuron >= width:
            raise error(f"--clamp {site}:{neuron}: neuron out of range; {site} has neurons 0..{width - 1}")
        edits.append(interp.Clamp(site, [neuron], value, args.positions))
        notes.append(f"clamp {site}[{neuron}] = {value:g}")
    for (site, path, scale), vec in zip(args._adds, args._vectors):
        width = model.adapter.site_width(site)
        if vec.numel() != width:
            raise error(f"--add {site}:{path}: the vector has {vec.numel()} entries but {site} has width {width}")
        edits.append(interp.Add(site, vec, scale, args.positions))
        notes.append(f"add {scale:g} x {path.name} (norm {float(vec.norm()):.3g}) at {site}")
    if args.contrast:
        from steering import contrast_direction

        d = contrast_direction(model, args._pos, args._neg, args.site)
        edits.append(interp.Add(d.site, d.vector, args.scale, args.positions))
        notes.append(f"actadd {args.scale:g} x (mean of {d.n_pos} positive - mean of {d.n_neg} negative prompts, "
                     f"norm {d.norm:.3g}) at {d.site}")
    if args.recipe:
        from interp.recipes import load_recipe

        loaded = load_recipe(args.recipe, model)
        for e in loaded:  # fail before generating, with the site named
            if e.kind != "lowrank":
                model.adapter.site_width(e.site)
        edits += loaded
        notes.append(f"recipe {Path(args.recipe).name}: {len(loaded)} edit(s)")
    return edits, notes


def concept_edit(args, model, notes: list[str]):
    """--concept: the neuron whose --direction (write: down_proj column, default; up: up_proj row) gives TOKEN the
    highest probability; sweep values at the site that direction clamps at (`steering.clamps.clamp_site`); pick one."""
    import torch

    from atlases import load_atlas
    from atlases.lm_head import site_of
    from probes.lm_head import LMHeadOptions, concept_neurons, lm_head_map
    from steering.clamps import (DEFAULT_SWEEP, clamp_site, clamp_sweep, concept_clamp, neuron_site, pick_value,
                                 single_token_ids)

    direction = getattr(args, "direction", None) or "write"
    site = clamp_site(model, direction)
    ids = single_token_ids(model.tokenizer, args.concept)  # one clear error before any heavy work
    if args.atlas:
        atlas = load_atlas(args.atlas, model=model.name)
        if atlas.method != "lm-head" or direction not in atlas.params.get("directions", []):
            raise error(f"--atlas {args.atlas} is not an lm-head atlas with the {direction} direction")
        p = atlas.params
        layers = list(p["layers"])
        lse = torch.stack([atlas.get(site_of(l), f"{direction}.lse") for l in layers])
        final_norm, unit = p["final_norm"], p["unit"]
    else:
        print(f"# decoding {model.adapter.n_layers} × {model.adapter.d_mlp} {direction} directions to find "
              f"{args.concept!r} (pass --atlas DIR from `interp analyze --probe lm-head` to skip this)")
        lm_map = lm_head_map(model, None, LMHeadOptions(directions=(direction,)), progress=True)
        layers, lse, final_norm, unit = lm_map.layers, lm_map.get(direction, "lse"), True, False
    layer, neuron, prob = concept_neurons(model, ids, lse, layers, direction=direction, final_norm=final_norm,
                                          unit=unit, k=1)[0]
    values = args._sweep or list(DEFAULT_SWEEP)
    sweep = clamp_sweep(model, args.concept, layer, neuron, values, site=site)
    where = neuron_site(layer, site)
    print(f"# concept neuron: {where}[{neuron}], p({args.concept!r}) = {prob:.3g} from its {direction} direction")
    print(textwrap.indent(sweep.table(), "# "))
    value = args.clamp_value if args.clamp_value is not None else pick_value(sweep)
    notes.append(f"clamp {where}[{neuron}] = {value:g} (the {args.concept!r} neuron)")
    return concept_clamp(layer, neuron, value, positions=args.positions, site=site)


def wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for para in (l.strip() for l in text.strip("\n").split("\n")):
        lines += textwrap.wrap(para, width, replace_whitespace=True, drop_whitespace=True) or [""]
    return lines or [""]


def side_by_side(left: str, right: str, width: int, titles=("unsteered", "steered")) -> str:
    col = max(20, (width - 7) // 2)
    a, b = wrap(left, col), wrap(right, col)
    rows = [f"  {titles[0]:<{col}} | {titles[1]}", f"  {'-' * col} | {'-' * len(titles[1])}"]
    rows += [f"  {x:<{col}} | {y}".rstrip() for x, y in itertools.zip_longest(a, b, fillvalue="")]
    return "\n".join(rows)
