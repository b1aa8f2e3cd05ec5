"""The server's Prometheus metrics (prometheus-client, its own registry per app)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("interp_requests", "Generation requests accepted, by endpoint and recipe",
                                ["endpoint", "recipe"], registry=self.registry)
        self.refused = Counter("interp_refused_requests", "Requests refused, by HTTP status",
                               ["status"], registry=self.registry)
        self.prompt_tokens = Counter("interp_prompt_tokens", "Prompt tokens of accepted requests, by recipe",
                                     ["recipe"], registry=self.registry)
        self.generated_tokens = Counter("interp_generated_tokens", "New tokens sent, by recipe", ["recipe"],
                                        registry=self.registry)
        self.queue = Gauge("interp_queue_length", "Requests submitted to the engine and not finished",
                           registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
