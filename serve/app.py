"""The OpenAI-compatible HTTP API of `interp serve` (FastAPI), steering chosen per request.

`app(model, recipes)` returns the ASGI app; the engine (`serve.engine.Engine`) starts with the app's
lifespan and stops with it. Every refusal is an HTTP 4xx with an OpenAI-style error body naming the
field; nothing a client sends can stop the server.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from interp.edits import EditError, edit_from_json
from interp.errors import InterpError
from interp.models import Model
from interp.recipes import RecipeError
from serve.engine import NO_STEERING, Engine, EngineError, Sampling, Steering, Update
from serve.metrics import Metrics
from serve.protocol import APIError, ChatRequest, CompletionRequest, Sampled
from serve.registry import Registry, check_edits
from serve.text import TextAssembler

MiB = 1 << 20


def app(model: Model | str, recipes: dict[str, str | Path] | None = None, *, recipe_dir: str | Path | None = None,
        max_model_len: int | None = None, default_max_tokens: int = 256, max_upload_mb: float = 64.0,
        max_body_mb: float = 8.0, engine_options: dict | None = None,
        engine: Callable[[], Engine] | None = None) -> FastAPI:
    """The ASGI app serving `model` (a loaded Model or an offline model name) with named recipes.

    recipes: NAME → recipe file; recipe_dir: where uploads are kept (and read back on restart).
    max_model_len: prompt + new tokens per request (default: the model's positions and the cache's size).
    engine: builds the engine when the app starts (default: the transformers engine on `model` with
    `engine_options`; `serve.vllm_engine.VllmEngine` for vLLM, where `model` may be a weightless
    `interp.models.load_skeleton`).
    """
    if isinstance(model, str):
        from interp.models import load_model

        model = load_model(model)
    registry = Registry(model, recipe_dir, recipes)
    metrics = Metrics()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state["engine"] = engine() if engine is not None else Engine(model, **(engine_options or {}))
        try:
            yield
        finally:
            state.pop("engine").close()

    api = FastAPI(title="interp serve", lifespan=lifespan)
    api.state.registry, api.state.metrics, api.state.model = registry, metrics, model

    def running() -> Engine:
        eng = state.get("engine")
        if eng is None or not eng.alive():
            raise APIError(503, "the generation worker is not running", kind="server_error", code="unavailable")
        return eng

    def token_limit() -> int:
        cfg = getattr(model.hf.config, "text_config", None) or model.hf.config
        limits = [getattr(cfg, "max_position_embeddings", None), max_model_len, running().capacity]
        return min(x for x in limits if x)

    # ------------------------------------------------------------ errors
    @api.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        metrics.refused.labels(str(exc.status)).inc()
        return JSONResponse(exc.body(), status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        msg = err.get("msg", "invalid request")
        metrics.refused.labels("400").inc()
        return JSONResponse(APIError(400, f"{param}: {msg}" if param else msg, param).body(), status_code=400)

    @api.middleware("http")
    async def _body_limit(request: Request, call_next):
        size = request.headers.get("content-length")
        limit = max_upload_mb if request.url.path == "/v1/recipes" else max_body_mb
        if size is not None and size.isdigit() and int(size) > limit * MiB:
            return JSONResponse(APIError(413, f"request body of {int(size)} bytes is over the {limit:g} MiB limit",
                                         None, "too_large").body(), status_code=413)
        return await call_next(request)

    # ------------------------------------------------------------ models, recipes, health, metrics
    @api.get("/health")
    async def health():
        eng = state.get("engine")
        ok = eng is not None and eng.alive()
        return JSONResponse({"status": "ok" if ok else "unavailable", "model": model.name}, status_code=200 if ok else 503)

    @api.get("/metrics")
    async def prometheus():
        eng = state.get("engine")
        metrics.queue.set(eng.queue_length() if eng is not None else 0)
        return Response(metrics.render(), media_type=metrics.content_type)

    @api.get("/v1/models")
    async def models():
        now = int(time.time())
        ids = [model.name] + [f"{model.name}:{n}" for n in registry.names()]
        return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": "interp"}
                                           for i in ids]}

    @api.get("/v1/recipes")
    async def list_recipes():
        return {"object": "list", "data": [registry.get(n).card() for n in registry.names()]}

    @api.post("/v1/recipes", status_code=201)
    async def upload_recipe(request: Request, name: str, replace: bool = False):
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_upload_mb * MiB:
                raise APIError(413, f"recipe upload is over the {max_upload_mb:g} MiB limit", "file", "too_large")
        try:
            recipe = registry.upload(name, bytes(data), replace=replace)
        except FileExistsError as exc:
            raise APIError(409, str(exc), "name", "recipe_exists") from None
        except InterpError as exc:
            raise APIError(400, str(exc), "name" if "name" in str(exc).split(":")[0] else "file",
                           "invalid_recipe") from None
        return recipe.card()

    @api.delete("/v1/recipes/{name}")
    async def delete_recipe(name: str):
        try:
            registry.delete(name)
        except KeyError:
            raise APIError(404, f"no recipe named {name!r}", "name", "recipe_not_found") from None
        return {"id": name, "object": "recipe", "deleted": True}

    # ------------------------------------------------------------ generation
    def steering_of(req: Sampled) -> Steering:
        """The request's edits: recipe from the model id, `recipe` + `strength`, `recipes`, inline `edits`."""
        picked: list[tuple[str, float, str]] = []
        if req.model != model.name:
            base, sep, name = req.model.partition(":")
            if base != model.name or not sep:
                raise APIError(404, f"model {req.model!r} is not served here; models: {model.name}, "
                                    f"{model.name}:RECIPE", "model", "model_not_found")
            picked.append((name, req.strength if req.recipe is None else 1.0, "model"))
        if req.recipe is not None:
            picked.append((req.recipe, req.strength, "recipe"))
        for i, ref in enumerate(req.recipes or []):
            picked.append((ref.name, ref.strength, f"recipes.{i}.name"))
        parts = []
        for name, strength, param in picked:
            try:
                parts.append(registry.steering(name, strength))
            except KeyError:
                raise APIError(404, f"no recipe named {name!r}; recipes: {', '.join(registry.names()) or 'none'}",
                               param, "recipe_not_found") from None
            except EditError as exc:
                raise APIError(400, str(exc), "strength") from None
        inline = []
        for i, obj in enumerate(req.edits or []):
            try:
                inline.append(edit_from_json(obj))
            except EditError as exc:
                raise APIError(400, f"edits.{i}: {exc}", f"edits.{i}") from None
        if inline:
            try:
                check_edits(model, inline)
            except InterpError as exc:
                raise APIError(400, f"edits: {exc}", "edits") from None
        if not inline and len(parts) == 1:
            steering = parts[0]
        elif not inline and not parts:
            return NO_STEERING
        else:
            labels = [p.label for p in parts] + (["inline"] if inline else [])
            steering = Steering([e for p in parts for e in p.edits] + inline, "+".join(labels))
        check = getattr(running(), "check", None)  # an engine that runs only some edits says which
        if check is not None:
            try:
                check(steering)
            except EditError as exc:
                raise APIError(400, f"edits: {exc}", "edits") from None
        return steering

    def sampling_of(req: Sampled, prompt: list[int], max_tokens: int | None, logprobs: int | None) -> Sampling:
        limit = token_limit()
        if len(prompt) >= limit:
            raise APIError(400, f"the prompt has {len(prompt)} tokens; this server takes at most {limit} in all",
                           "messages" if isinstance(req, ChatRequest) else "prompt", "context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(default_max_tokens, limit - len(prompt))
        if len(prompt) + max_tokens > limit:
            raise APIError(400, f"{len(prompt)} prompt tokens + max_tokens {max_tokens} exceed this server's "
                                f"{limit}; lower max_tokens", "max_tokens", "context_length_exceeded")
        return Sampling(max_tokens, req.temperature, req.top_p, req.seed, logprobs, req.ignore_eos)

    async def run(prompt: list[int], sampling: Sampling, steering: Steering, stops: list[str],
                  stream: bool) -> AsyncIterator[tuple[str, Update, str | None]]:
        """(new text, update, finish reason or None) as the request advances; stop strings end it."""
        text = TextAssembler(model.tokenizer, stops)
        try:
            updates = running().generate(prompt, sampling, steering, stream=stream)
        except EngineError as exc:
            raise APIError(503, str(exc), kind="server_error", code="unavailable") from None
        try:
            async for update in updates:
                if update.error is not None:
                    raise APIError(500, f"generation failed: {update.error}", kind="server_error")
                delta, stopped = text.update(update.tokens, final=update.finished)
                if stopped or update.finished:
                    reason = "stop" if stopped or len(update.tokens) < sampling.max_tokens else "length"
                    yield delta, update, reason
                    return
                yield delta, update, None
        finally:  # a client gone, a stop string, a shutdown: the engine frees the row now
            await updates.aclose()

    def usage(prompt: list[int], update: Update | None) -> dict:
        n = len(update.tokens) if update is not None else 0
        return {"prompt_tokens": len(prompt), "completion_tokens": n, "total_tokens": len(prompt) + n}

    def logprobs_of(update: Update, n: int) -> dict:
        tok = model.tokenizer
        infos = update.infos[:len(update.tokens)]
        tokens = [tok.decode([i.token]) for i in infos]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        return {"tokens": tokens, "token_logprobs": [i.logprob for i in infos],
                "top_logprobs": [{tok.decode([t]): lp for t, lp in i.top[:n]} for i in infos] if n else None,
                "text_offset": offsets}

    def respond(kind: str, req: Sampled, prompt: list[int], sampling: Sampling, steering: Steering,
                make_chunk, make_final):
        metrics.requests.labels(kind, steering.label).inc()
        metrics.prompt_tokens.labels(steering.label).inc(len(prompt))
        stops = req.stops()
        if not req.stream:
            async def whole():
                parts, last, reason = [], None, None
                async for delta, update, reason in run(prompt, sampling, steering, stops, stream=False):
                    parts.append(delta)
                    last = update
                metrics.generated_tokens.labels(steering.label).inc(len(last.tokens) if last else 0)
                return make_final("".join(parts), last, reason)
            return whole()

        async def events():
            last = None
            try:
                async for delta, update, reason in run(prompt, sampling, steering, stops, stream=True):
                    last = update
                    if delta or reason:
                        yield f"data: {json.dumps(make_chunk(delta, update, reason))}\n\n"
            except APIError as exc:
                yield f"data: {json.dumps(exc.body())}\n\n"
            finally:
                metrics.generated_tokens.labels(steering.label).inc(len(last.tokens) if last else 0)
            yield "data: [DONE]\n\n"

        async def wrapped():
            return StreamingResponse(events(), media_type="text/event-stream")
        return wrapped()

    @api.post("/v1/completions")
    async def completions(req: CompletionRequest):
        steering = steering_of(req)
        prompt = model.tokenizer(req.prompt)["input_ids"]
        sampling = sampling_of(req, prompt, req.max_tokens or 16, req.logprobs)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def choice(text, update, reason):
            lp = logprobs_of(update, req.logprobs) if req.logprobs is not None and update is not None else None
            return {"index": 0, "text": text, "logprobs": lp, "finish_reason": reason}

        def chunk(delta, update, reason):
            return {"id": rid, "object": "text_completion", "created": created, "model": req.model,
                    "choices": [choice(delta, None, reason)]}

        def final(text, update, reason):
            return {"id": rid, "object": "text_completion", "created": created, "model": req.model,
                    "choices": [choice(text, update, reason)], "usage": usage(prompt, update)}

        return await respond("completions", req, prompt, sampling, steering, chunk, final)

    @api.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        tok = model.tokenizer
        if not tok.chat_template:
            raise APIError(400, f"{model.name}'s tokenizer has no chat template; use /v1/completions", "messages")
        steering = steering_of(req)
        prompt = tok.apply_chat_template([m.model_dump() for m in req.messages], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
        sampling = sampling_of(req, prompt, req.max_completion_tokens or req.max_tokens, None)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        first = [True]

        def chunk(delta, update, reason):
            d = {"role": "assistant", "content": delta} if first[0] else {"content": delta}
            first[0] = False
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": [{"index": 0, "delta": d if delta or d.get("role") else {}, "finish_reason": reason}]}

        def final(text, update, reason):
            return {"id": rid, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": reason}], "usage": usage(prompt, update)}

        return await respond("chat", req, prompt, sampling, steering, chunk, final)

    return api
