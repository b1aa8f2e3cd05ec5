"""`interp models` and `interp sites`: what can be loaded, and the site names of a model."""

from __future__ import annotations

from cli.loading import load


def add_parsers(sub) -> None:
    sub.add_parser("models", help="list the models available offline",
                   description="List offline model names and whether their weights are installed.")
    s = sub.add_parser("sites", help="list a model's site names", description="List every site of a model.")
    s.add_argument("--model", default="smollm2-135m", help="offline name, folder, .gguf file or hub id")


def models_command(args) -> int:
    from interp.models import DEFAULT_MODEL, OFFLINE_MODELS

    for name, entry in sorted(OFFLINE_MODELS.items()):
        mark = "installed" if entry.installed() else f"not installed ({entry.install})"
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}\t{mark}\t{entry.licence}\t{entry.notes}")
    print("also: any local Hugging Face folder, a .gguf file, or a hub id where the hub is reachable")
    return 0


def sites_command(args) -> int:
    model = load(args)
    a = model.adapter
    print(f"# {model.name}: family {a.family.name}, {a.n_layers} layers, d_model {a.d_model}, "
          f"d_mlp {a.d_mlp}, {a.n_heads} heads × {a.d_head}")
    for site in model.sites():
        print(site)
    return 0
