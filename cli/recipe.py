"""`interp recipe show|export-gguf|import-gguf`: what a recipe holds, and recipes to and from llama.cpp
control vectors (the GGUF that llama.cpp's --control-vector, repeng and EasySteer share)."""

from __future__ import annotations

from pathlib import Path

from cli.argtypes import finite
from cli.base import Parser, error
from cli.loading import load


def add_parser(sub) -> None:
    r = sub.add_parser("recipe", help="show a recipe; export or import llama.cpp control vectors",
                       description="Show what a recipe (or a control-vector GGUF) holds; turn a recipe's residual "
                                   "additions into a llama.cpp control vector and back.")
    rsub = r.add_subparsers(dest="recipe_command", required=True, parser_class=Parser)
    s = rsub.add_parser("show", help="what a recipe or control vector holds, per site, with norms",
                        description="Print a recipe's model, provenance and edits (per site, with norms), or a "
                                    "control-vector GGUF's directions (per block, with norms).")
    s.add_argument("file", help="a recipe (.safetensors) or a control vector (.gguf)")
    e = rsub.add_parser("export-gguf", help="a recipe's residual additions as a llama.cpp control vector",
                        description="Write the recipe's Add edits on blocks.L.hook_resid_post (all positions) as a "
                                    "llama.cpp control vector: direction.L, summed per layer, scale folded in. "
                                    "Load it with llama.cpp's --control-vector FILE (or --control-vector-scaled "
                                    "FILE S). Anything else is refused, or dropped and listed with --drop-others.")
    e.add_argument("recipe")
    e.add_argument("out", help="the .gguf file to write (atomically)")
    e.add_argument("--scale", type=finite, default=1.0, help="multiply every direction by S (default 1)")
    e.add_argument("--drop-others", action="store_true",
                   help="drop (and list) the edits a control vector cannot carry instead of refusing")
    i = rsub.add_parser("import-gguf", help="a llama.cpp control vector (ours, repeng's, EasySteer's) as a recipe",
                        description="Read a control-vector GGUF and write a recipe of one residual addition per "
                                    "direction.N, on blocks.N.hook_resid_post, after checking its width and layers "
                                    "against the model.")
    i.add_argument("gguf")
    i.add_argument("--model", required=True, help="the model the vector is for (an offline name or a folder)")
    i.add_argument("--out", required=True, help="the recipe to write (atomically)")
    i.add_argument("--scale", type=finite, default=1.0, help="multiply every direction by S (default 1)")


def command(args) -> int:
    return {"show": _show, "export-gguf": _export, "import-gguf": _import}[args.recipe_command](args)


def _export(args) -> int:
    from interp.control_vectors import from_edits, write_gguf
    from interp.recipes import read_recipe

    header, edits = read_recipe(args.recipe)
    cv = from_edits(edits, model_hint=str(header["model"].get("id", "")), drop_others=args.drop_others)
    write_gguf(args.out, cv, scale=args.scale)
    print(f"# wrote {args.out}: {len(cv.directions)} direction(s) for {cv.model_hint or 'an unnamed model'}, "
          f"blocks {sorted(cv.directions)}, scale {args.scale:g}")
    for line in cv.dropped:
        print(f"# dropped {line}")
    return 0


def _import(args) -> int:
    from interp.control_vectors import check_model, read_gguf
    from interp.recipes import save_recipe

    cv = read_gguf(args.gguf)
    model = load(args)
    a = model.adapter
    check_model(cv, a.n_layers, a.d_model, model.name)
    if cv.model_hint and cv.model_hint != model.name:
        print(f"# note: the file's model hint is {cv.model_hint!r}, applying it to {model.name!r}")
    save_recipe(args.out, cv.scaled(args.scale).edits(), model,
                provenance={"writer": "import-gguf", "source": Path(args.gguf).name, "model_hint": cv.model_hint,
                            "scale": args.scale})
    print(f"# wrote {args.out}: {len(cv.directions)} residual addition(s), blocks {sorted(cv.directions)}")
    return 0


def _show(args) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise error(f"{path} does not exist")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        from interp.control_vectors import read_gguf

        cv = read_gguf(path)
        print(f"# {path.name}: llama.cpp control vector for {cv.model_hint or 'an unnamed model'}, n_embd {cv.n_embd}, "
              f"{len(cv.directions)} direction(s)")
        print("block\tadded to\tnorm")
        for n, v in sorted(cv.directions.items()):
            print(f"{n}\tblocks.{n}.hook_resid_post\t{float(v.norm()):.4g}")
        return 0
    from interp.recipes import read_recipe

    header, edits = read_recipe(path)
    m, prov = header["model"], header.get("provenance") or {}
    print(f"# {path.name}: {len(edits)} edit(s) for {m.get('id')!r} ({m.get('family')}, {m.get('n_layers')} layers, "
          f"d_model {m.get('d_model')}, d_mlp {m.get('d_mlp')})")
    if prov:
        print("# provenance: " + ", ".join(f"{k}={_short(v)}" for k, v in prov.items()))
    print("site\tkind\tpositions\tsize")
    for e in edits:
        print(f"{e.site}\t{e.kind}\t{e.positions}\t{_size(e)}")
    return 0


def _short(v, width: int = 60) -> str:
    text = str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(e) -> str:
    """The edit's magnitude in one phrase: norms for vectors and factors, counts for neuron edits."""
    import torch

    if e.kind == "add":
        n = float(e.vector.norm())
        return f"|vector| {n:.4g} × scale {e.scale:g} = {n * abs(e.scale):.4g}"
    if e.kind == "lowrank":
        return f"rank {e.A.shape[1]}, |A B| {float((e.A @ e.B).norm()):.4g}"
    if e.kind == "ablate":
        units = "every unit" if e.units is None else f"{int(e.units.numel())} unit(s)"
        return f"{e.directions.shape[0]} direction(s) on {units}, strength {e.strength:g}"
    parts = [f"{int(e.neurons.numel())} neuron(s)"]
    for name in ("values", "gains", "thresholds"):
        value = getattr(e, name, None)
        if isinstance(value, torch.Tensor):
            parts.append(f"|{name}| {float(value.float().norm()):.4g}")
    if hasattr(e, "strength"):
        parts.append(f"strength {e.strength:g}")
    return ", ".join(parts)
