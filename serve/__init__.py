"""`interp serve`: steered models behind an OpenAI-compatible API, a recipe per request.

`serve.app(model, recipes)` returns the ASGI app (FastAPI); `serve.engine.Engine` runs transformers'
continuous batching with each request's own edits applied in the same pass (`interp.rows`).
"""

from serve.app import app

__all__ = ["app"]
