"""Typed errors: every failure a user can cause is one of these.

The CLI turns an `InterpError` into a one-line message and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class InterpError(Exception):
    """Base class for errors caused by bad input (not by bugs)."""


class ModelNotFoundError(InterpError):
    """An unknown model name, a missing folder, or a hub id while offline."""


class UnsupportedArchitectureError(InterpError):
    """The model's architecture has no adapter."""


class SiteError(InterpError):
    """A site name that does not exist on this model (bad name or layer)."""


class CorpusError(InterpError):
    """An empty, unreadable or non-UTF-8 corpus."""


class AtlasError(InterpError):
    """An atlas folder that is missing, corrupt, or made for another model."""


class ActivationError(InterpError):
    """Activations that cannot be summarised (NaN or inf), e.g. a model overflowing in bfloat16."""
