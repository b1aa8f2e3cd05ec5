"""The OpenAI request bodies `interp serve` accepts, its steering fields, and OpenAI-style errors.

Fields follow OpenAI's completions and chat completions; `n` must be 1. Steering rides in the same
body (the `openai` client's `extra_body`): `recipe` + `strength`, `recipes` (several, each with its
strength) and `edits` (inline edits in the JSON form of `interp.edits.EDIT_SCHEMA`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class APIError(Exception):
    """An HTTP error with an OpenAI-style body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class RecipeRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    strength: float = Field(1.0, allow_inf_nan=False)


class Steered(BaseModel):
    """The steering fields shared by both endpoints."""

    recipe: str | None = None
    strength: float = Field(1.0, allow_inf_nan=False)
    recipes: list[RecipeRef] | None = Field(None, max_length=16)
    edits: list[dict[str, Any]] | None = Field(None, max_length=256)


class Sampled(Steered):
    model_config = ConfigDict(extra="ignore")  # OpenAI fields we do not act on (user, frequency_penalty = 0, …)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever comes (benchmarks)
    frequency_penalty: float = 0.0  # accepted at their neutral values only: refused rather than ignored
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, v: float) -> float:
        if v != 0.0:
            raise ValueError("penalties are not supported; send 0 or leave it out")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v):
        if v:
            raise ValueError("logit_bias is not supported")
        return v

    @field_validator("n")
    @classmethod
    def _one(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n = 1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])


class CompletionRequest(Sampled):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("send one prompt per request (a string, or a list of one string)")
            prompt = prompt[0]
        if not prompt:
            raise ValueError("the prompt is empty")
        return prompt


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampled):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
