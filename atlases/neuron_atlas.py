"""The neuron atlas: a folder that keeps findings about a model's units on disk.

Layout (DESIGN.md, "Atlases"):
- `atlas.json`: format version, model id and revision, sites, method,
  parameters, library versions, creation time, sha256 checksums of
  every other file (reports and plots included), and `header_sha256`, the
  sha256 of atlas.json's own bytes (`interp.integrity`: written as zeros,
  hashed, then filled in), so a change to any byte of any file is refused;
- `tensors.safetensors`: per-unit tensors, keyed `"{site}/{name}"`;
- `documents.jsonl` (optional): the corpus documents that exemplars point to;
- `vocab.json` (optional): each token id's decoded string, for token queries.

Never pickled. Saving writes a temporary folder and renames it into place;
loading verifies every checksum and, when asked, the model id, and says
plainly what does not match. Atlases of format 1 (before `header_sha256`)
are refused with a request to rebuild them: their atlas.json is unverifiable.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from interp.cache import atomic_path
from interp.errors import AtlasError
from interp.integrity import PLACEHOLDER, is_sealed, seal, sha256_file

from . import lm_head

FORMAT = "interp-atlas"
FORMAT_VERSION = 2  # 2: atlas.json carries header_sha256, and every file of the folder has a checksum


def _versions() -> dict[str, str]:
    import transformers

    import interp

    return {"interp": interp.__version__, "torch": torch.__version__, "transformers": transformers.__version__}


@dataclass
class Atlas:
    """Findings for one model: tensors per site plus what produced them."""

    model: str
    sites: list[str]
    method: str
    tensors: dict[str, torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    documents: list[dict] | None = None  # {"index", "text", "group", "id"} of referenced docs
    vocab: list[str] | None = None  # decoded token strings by id (lm-head atlases)
    meta: dict[str, Any] = field(default_factory=dict)  # filled on load: versions, created, checksums

    def get(self, site: str, name: str) -> torch.Tensor:
        key = f"{site}/{name}"
        if key not in self.tensors:
            have = sorted({k.rsplit("/", 1)[1] for k in self.tensors if k.startswith(site + "/")})
            raise AtlasError(f"atlas has no {name!r} for {site!r}" + (f"; it has {', '.join(have)}" if have else ""))
        return self.tensors[key]

    def document(self, index: int) -> dict:
        for d in self.documents or []:
            if d["index"] == index:
                return d
        raise AtlasError(f"document {index} is not stored in this atlas")

    def tokens_for(self, layer: int, neuron: int, *, direction: str = "write", k: int | None = None) -> list:
        """A neuron's top tokens (lm-head atlases): [TokenHit(token, token_id, prob, logit)]."""
        return lm_head.tokens_for(self, layer, neuron, direction=direction, k=k)

    def neurons_for(self, token: str, *, k: int = 20, direction: str = "write") -> list:
        """The k neurons giving `token` the highest probability (lm-head atlases): [NeuronHit]."""
        return lm_head.neurons_for(self, token, k=k, direction=direction)

    def save(self, folder: str | Path, extra_files: dict[str, str] | None = None,
             binary_files: dict[str, bytes] | None = None) -> Path:
        """Write the atlas folder atomically (replacing an older atlas there).

        `extra_files` (name -> text, e.g. a rendered report) and `binary_files`
        (name -> bytes, e.g. plots) go in the same folder, written before the
        rename, so nothing appears half-done.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise AtlasError(f"{folder} exists and is not a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / "atlas.json").exists():
            raise AtlasError(f"{folder} is a non-empty folder that is not an atlas; refusing to replace it")
        with atomic_path(folder, directory=True) as tmp:
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
            for name, data in (binary_files or {}).items():
                (tmp / name).write_bytes(data)
            self.write_into(tmp)
        return folder

    def write_into(self, tmp: Path) -> None:
        """Write the atlas files into an existing (temporary) folder; every file already there
        (a report, plots) gets a checksum in atlas.json too."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        save_file(tensors, str(tmp / "tensors.safetensors"), metadata={"format": FORMAT})
        if self.documents is not None:
            with (tmp / "documents.jsonl").open("w", encoding="utf-8") as f:
                for d in self.documents:
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
        if self.vocab is not None:
            (tmp / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != "atlas.json")
        header = {
            "header_sha256": PLACEHOLDER,  # first: the seal goes over the first run of 64 zeros
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": {"id": self.model, "revision": self.revision},
            "sites": self.sites,
            "method": self.method,
            "params": self.params,
            "library": _versions(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                        for k, v in tensors.items()},
            "checksums": {name: sha256_file(tmp / name) for name in files},
        }
        (tmp / "atlas.json").write_bytes(seal(json.dumps(header, indent=1, ensure_ascii=False).encode("utf-8")))


def _header(folder: Path) -> dict:
    """atlas.json of `folder`, after checking that its bytes match its own seal."""
    header_path = folder / "atlas.json"
    if not header_path.is_file():
        raise AtlasError(f"{folder} is not an atlas (no atlas.json)")
    raw = header_path.read_bytes()
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AtlasError(f"{header_path}: not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        format_ = header.get("format") if isinstance(header, dict) else None
        raise AtlasError(f"{header_path}: not an interp atlas (format {format_!r})")
    version = header.get("format_version", 0)
    if "header_sha256" not in header and isinstance(version, int) and version < 2:
        raise AtlasError(f"{folder}: atlas format {version} predates checksummed headers, so its atlas.json cannot "
                         f"be verified; rebuild it with this interp (run the command that made it again)")
    if not is_sealed(raw, header.get("header_sha256")):
        raise AtlasError(f"{header_path} does not match its own checksum (corrupt or edited)")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AtlasError(f"{folder}: atlas format {version!r} is newer than this interp reads ({FORMAT_VERSION})")
    return header


def load_atlas(folder: str | Path, *, model: str | None = None) -> Atlas:
    """Read an atlas folder, verifying every file's checksum (and the model id, if given)."""
    folder = Path(folder)
    header = _header(folder)
    checksums = header.get("checksums")
    if not isinstance(checksums, dict) or "tensors.safetensors" not in checksums:
        raise AtlasError(f"{folder}/atlas.json lists no checksums for its files")
    for name, digest in checksums.items():
        path = folder / name
        if not path.is_file():
            raise AtlasError(f"{folder}: {name} is missing")
        if sha256_file(path) != digest:
            raise AtlasError(f"{folder}: {name} does not match its checksum (corrupt or edited)")
    try:
        made_for = header["model"]["id"]
        if model is not None and model != made_for:
            raise AtlasError(f"{folder} was made for model {made_for!r}, not {model!r}")
        documents = None
        if "documents.jsonl" in checksums:
            documents = [json.loads(line) for line in (folder / "documents.jsonl").read_text(encoding="utf-8").splitlines()
                         if line]
        vocab = None
        if "vocab.json" in checksums:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        return Atlas(
            model=made_for,
            revision=header["model"].get("revision"),
            sites=list(header["sites"]),
            method=header["method"],
            params=header.get("params", {}),
            tensors=load_file(str(folder / "tensors.safetensors")),
            documents=documents,
            vocab=vocab,
            meta={k: header[k] for k in ("library", "created", "checksums", "format_version") if k in header},
        )
    except (KeyError, TypeError, AttributeError) as exc:  # a sealed but hand-made header
        raise AtlasError(f"{folder}/atlas.json is malformed ({type(exc).__name__}: {exc})") from None
