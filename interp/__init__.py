"""interp: read and steer the neurons of language models.

The core package: model loading (`load_model`), site naming (adapters),
hooks, streaming capture with reducers, and corpora. Analyzers live in
`probes`, writers in `steering`, on-disk formats in `atlases`.
"""

from .adapters import LAYER_SITES, supported_families
from .batching import Batch, tokenize
from .capture import capture, groups_of, run_with_cache
from .errors import (AtlasError, CorpusError, InterpError, ModelNotFoundError, SiteError,
                     UnsupportedArchitectureError)
from .models import DEFAULT_MODEL, OFFLINE_MODELS, Model, auto_dtype, load_model, native_bf16, offline_names
from .reducers import ActivationFrequency, FullTensors, Moments, Reducer, TopK, UpperQuantile, WordPooled

__version__ = "0.1.0"

__all__ = [
    "LAYER_SITES", "supported_families", "Batch", "tokenize", "capture", "groups_of", "run_with_cache",
    "AtlasError", "CorpusError", "InterpError", "ModelNotFoundError", "SiteError",
    "UnsupportedArchitectureError", "DEFAULT_MODEL", "OFFLINE_MODELS", "Model", "auto_dtype", "load_model",
    "native_bf16", "offline_names", "ActivationFrequency", "FullTensors", "Moments", "Reducer", "TopK", "UpperQuantile", "WordPooled",
    "__version__",
]

from .edits import Ablate, Add, Clamp, EditError, Gate, LowRank, Scale, with_strength  # noqa: E402
from .engine import apply_reference, edit, generate  # noqa: E402
from .rows import row_edit  # noqa: E402

__all__ += ["Ablate", "Add", "Clamp", "EditError", "Gate", "LowRank", "Scale", "with_strength", "apply_reference",
            "edit", "generate", "row_edit"]
