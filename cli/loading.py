"""Loading the model a command names, with the placement options of `analyze` and `steer`.

`--device-map auto` (or a JSON file {module: device | "cpu" | "disk"}) splits a model too
large for one device across the GPUs, the CPU and the disk (`--offload-folder`), through
accelerate; hooks and edits then run wherever each layer lives.
"""

from __future__ import annotations

import json
from pathlib import Path

from interp.errors import InterpError


def add_options(group) -> None:
    group.add_argument("--device-map", metavar="auto|FILE.json",
                       help="split a large model across devices: auto (accelerate fills the GPUs, then the CPU, "
                            "then --offload-folder), or a JSON file mapping module names to devices")
    group.add_argument("--offload-folder", metavar="DIR", help="where --device-map puts layers that fit nowhere else")


def placement(args) -> dict:
    """load_model's placement keywords from --device-map / --offload-folder (empty when not given)."""
    spec, folder = getattr(args, "device_map", None), getattr(args, "offload_folder", None)
    if spec is None:
        if folder is not None:
            raise InterpError("--offload-folder needs --device-map")
        return {}
    if spec.endswith(".json"):
        try:
            device_map = json.loads(Path(spec).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InterpError(f"--device-map {spec}: not a readable JSON file ({type(exc).__name__})") from None
        if not isinstance(device_map, dict) or not all(isinstance(k, str) for k in device_map):
            raise InterpError(f"--device-map {spec}: must map module names to devices")
    else:
        device_map = spec
    return {"device_map": device_map, **({"offload_folder": folder} if folder else {})}


def load(args, spec: str | None = None, **kwargs):
    """`interp.load_model(spec or args.model, **kwargs)` placed as --device-map says."""
    import interp

    return interp.load_model(spec or args.model, **kwargs, **placement(args))
