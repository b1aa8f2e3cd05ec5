"""The server's recipes: named, checked against the served model, kept on disk across restarts.

Recipes come from `--recipe NAME=FILE` (read in place) and from the server's recipe folder, where
uploads are written atomically as `NAME.safetensors`. Every recipe is validated when it arrives —
its checksum (`interp.recipes.read_recipe`), its model shape, and every edit's site and width — so a
request never meets a broken one. `steering(name, strength)` returns one shared `Steering` per
(recipe, strength), so concurrent requests on one recipe share its stacked tables.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from interp.cache import atomic_path
from interp.edits import EditError, with_strength
from interp.errors import InterpError
from interp.models import Model
from interp.recipes import RecipeError, check_fits, read_recipe
from interp.rows import RowPlan
from serve.engine import Steering

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Recipe:
    name: str
    path: Path
    edits: list
    sha256: str
    provenance: dict
    uploaded: bool  # lives in the recipe folder (DELETE removes the file too)

    def card(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "edits": len(self.edits),
                "kinds": sorted({e.kind for e in self.edits}), "sites": sorted({e.site for e in self.edits}),
                "uploaded": self.uploaded, "provenance": self.provenance}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise RecipeError(f"recipe name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
                          f"letter or digit")
    return name


def check_edits(model: Model, edits: list) -> None:
    """EditError/SiteError unless every edit fits the model (site exists, widths and indices in range)."""
    RowPlan.build(model, [edits])


class Registry:
    """Recipes by name for one model; thread-safe."""

    def __init__(self, model: Model, folder: str | Path | None = None, recipes: dict[str, str | Path] | None = None):
        self.model = model
        self.folder = Path(folder) if folder is not None else None
        self._recipes: dict[str, Recipe] = {}
        self._steering: dict[tuple[str, float], Steering] = {}
        self._lock = threading.Lock()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.folder.glob("*.safetensors")):
                self._add(self._load(path.stem, path, uploaded=True))
        for name, path in (recipes or {}).items():
            self._add(self._load(check_name(name), Path(path), uploaded=False))

    def _load(self, name: str, path: Path, *, uploaded: bool) -> Recipe:
        header, edits = read_recipe(path)
        check_fits(header, self.model, path.name)
        try:
            check_edits(self.model, edits)
        except InterpError as exc:
            raise RecipeError(f"recipe {name}: {exc}") from None
        return Recipe(name, path, edits, header["file_sha256"], header.get("provenance") or {}, uploaded)

    def _add(self, recipe: Recipe) -> None:
        with self._lock:
            self._recipes[recipe.name] = recipe
            self._steering = {k: v for k, v in self._steering.items() if k[0] != recipe.name}

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._recipes)

    def get(self, name: str) -> Recipe | None:
        with self._lock:
            return self._recipes.get(name)

    def steering(self, name: str, strength: float = 1.0) -> Steering:
        """The recipe's edits at `strength`, one shared object per (name, strength); KeyError if unknown."""
        with self._lock:
            recipe = self._recipes[name]
            key = (name, float(strength))
            if key not in self._steering:
                self._steering[key] = Steering([with_strength(e, strength) for e in recipe.edits], name)
            return self._steering[key]

    def upload(self, name: str, data: bytes, *, replace: bool = False) -> Recipe:
        """Validate `data` as a recipe for this model and keep it as NAME.safetensors (atomically)."""
        check_name(name)
        if self.folder is None:
            raise RecipeError("this server has no recipe folder (start it with --recipe-dir) to keep uploads in")
        if self.get(name) is not None and not replace:
            raise FileExistsError(f"a recipe named {name!r} exists; DELETE it first or upload with replace=true")
        with atomic_path(self.folder / f"{name}.safetensors") as tmp:  # kept only if it validates
            tmp.write_bytes(data)
            try:
                recipe = self._load(name, tmp, uploaded=True)
            except RecipeError as exc:  # name the upload, not the temporary file
                raise RecipeError(str(exc).replace(str(tmp), f"the upload {name!r}").replace(tmp.name, name)) from None
        recipe.path = self.folder / f"{name}.safetensors"
        self._add(recipe)
        return recipe

    def delete(self, name: str) -> Recipe:
        """Forget the recipe; an uploaded one's file goes too. KeyError if unknown."""
        with self._lock:
            recipe = self._recipes.pop(name)
            self._steering = {k: v for k, v in self._steering.items() if k[0] != name}
        if recipe.uploaded:
            recipe.path.unlink(missing_ok=True)
        return recipe


__all__ = ["Recipe", "Registry", "check_edits", "check_name", "EditError"]
