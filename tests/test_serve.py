"""`interp serve`: the official openai client against a real server on localhost, steered per request.

Every answer is checked against `interp.generate` with the same edits alone (greedy, token for token).
One server (its own smollm2-135m) serves the whole module; references come from the session's model.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import torch

import interp
from interp.edits import edit_to_json, with_strength
from interp.recipes import save_recipe
from tiny_models import tiny_model

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
PROMPTS = ["The capital of France is", "Once upon a time", "def fib(n):", "My favourite food is"]
NEW = 8


def recipe_edits() -> dict[str, list]:
    g = torch.Generator().manual_seed(0)
    return {"a": [interp.Add("blocks.10.hook_resid_post", torch.randn(576, generator=g), 4.0)],
            "b": [interp.Clamp("blocks.5.mlp.hook_post", [3, 99, 700], 8.0, "generated"),
                  interp.Scale("blocks.3.mlp.hook_post", torch.arange(0, 1536, 7), 0.2)]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import serve
    from serve.server import background

    folder = tmp_path_factory.mktemp("serve")
    model = interp.load_model(MODEL)  # the server's own copy: continuous batching switches its attention
    files = {}
    for name, edits in recipe_edits().items():
        files[name] = save_recipe(folder / f"{name}.safetensors", edits, model)
    api = serve.app(model, files, recipe_dir=folder / "uploads", max_model_len=256)
    with background(api) as url:
        yield {"url": url, "api": api, "folder": folder, "model": model}
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.hf.modules())


@pytest.fixture(scope="module")
def reference(smollm2):
    """interp.generate's greedy text for (prompt, edit set)."""
    memo: dict = {}

    def ref(prompt: str, key: str, edits: list) -> str:
        if (prompt, key) not in memo:
            memo[prompt, key] = interp.generate(smollm2, prompt, edits, max_new_tokens=NEW)[0]
        return memo[prompt, key]
    return ref


def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key="none", max_retries=0, timeout=120)


def complete(c, prompt, model=MODEL, **extra):
    r = c.completions.create(model=model, prompt=prompt, max_tokens=NEW, temperature=0, extra_body=extra or None)
    return r.choices[0].text


def test_concurrent_recipes_each_equal_generate_alone(server, reference):
    edits = recipe_edits()
    c = client(server)
    jobs = [  # (prompt, how the request steers, the edits it must equal)
        (PROMPTS[0], dict(model=f"{MODEL}:a"), "a", edits["a"]),
        (PROMPTS[1], dict(recipe="b"), "b", edits["b"]),
        (PROMPTS[2], dict(), "none", []),
        (PROMPTS[0], dict(recipes=[{"name": "a"}, {"name": "b"}]), "a+b", edits["a"] + edits["b"]),
        (PROMPTS[3], dict(recipe="a", strength=0.5), "a@0.5", [with_strength(e, 0.5) for e in edits["a"]]),
        (PROMPTS[1], dict(edits=[edit_to_json(e) for e in edits["b"]]), "b", edits["b"]),
    ]
    expect = [reference(p, key, e) for p, _, key, e in jobs]

    def send(job):
        prompt, how, _, _ = job
        how = dict(how)
        return complete(c, prompt, model=how.pop("model", MODEL), **how)

    with cf.ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(send, jobs))
    assert got == expect
    assert len(set(got[:3])) == 3 and got[0] != reference(PROMPTS[0], "none", [])  # the recipes steer


def test_streaming_gives_the_same_text(server, reference):
    c = client(server)
    chunks = c.completions.create(model=f"{MODEL}:a", prompt=PROMPTS[0], max_tokens=NEW, temperature=0, stream=True)
    pieces = [ch.choices[0].text for ch in chunks]
    assert len(pieces) > 2 and "".join(pieces) == reference(PROMPTS[0], "a", recipe_edits()["a"])


def test_chat_applies_the_chat_template(server, smollm2):
    c = client(server)
    messages = [{"role": "user", "content": "Name a colour."}]
    r = c.chat.completions.create(model=f"{MODEL}:a", messages=messages, max_tokens=NEW, temperature=0)
    templated = smollm2.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert r.choices[0].message.content == interp.generate(smollm2, templated, recipe_edits()["a"],
                                                           max_new_tokens=NEW)[0]
    assert r.usage.prompt_tokens == len(smollm2.tokenizer(templated)["input_ids"])
    streamed = c.chat.completions.create(model=f"{MODEL}:a", messages=messages, max_tokens=NEW, temperature=0,
                                         stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == r.choices[0].message.content


def test_sampling_is_seeded_and_logprobs_are_the_models(server, smollm2):
    c = client(server)
    kw = dict(model=MODEL, prompt=PROMPTS[1], max_tokens=NEW, temperature=1.0, top_p=0.9)
    a, b = (c.completions.create(seed=7, **kw).choices[0].text for _ in range(2))
    assert a == b  # one seed, one sample, whatever else runs beside it
    r = c.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=3, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    ids = smollm2.tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        first = torch.log_softmax(smollm2.hf(input_ids=ids).logits[0, -1].float(), -1)
    assert lp.token_logprobs[0] == pytest.approx(float(first.max()), abs=1e-3)
    assert len(lp.top_logprobs[0]) == 2 and max(lp.top_logprobs[0].values()) == pytest.approx(lp.token_logprobs[0])


def test_stop_strings_cut_the_text(server, reference):
    c = client(server)
    full = reference(PROMPTS[2], "none", [])
    stop = full.strip()[2:5]
    r = c.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=NEW, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.index(stop)] and r.choices[0].finish_reason == "stop"


BAD = [  # (body changes, status, param named in the error)
    (dict(model="gpt-4"), 404, "model"),
    (dict(model=f"{MODEL}:nope"), 404, "model"),
    (dict(extra_body={"recipe": "nope"}), 404, "recipe"),
    (dict(extra_body={"recipes": [{"name": "a"}, {"name": "zz"}]}), 404, "recipes.1.name"),
    (dict(max_tokens=100_000), 400, "max_tokens"),
    (dict(temperature=-1), 400, "temperature"),
    (dict(n=2), 400, "n"),
    (dict(frequency_penalty=0.5), 400, "frequency_penalty"),
    (dict(extra_body={"edits": [{"kind": "add", "site": "blocks.1.hook_resid_post", "vector": [1.0, 2.0]}]}),
     400, "edits"),
    (dict(extra_body={"edits": [{"kind": "clamp", "site": "blocks.99.mlp.hook_post", "neurons": [1]}]}), 400, "edits"),
    (dict(extra_body={"edits": [{"kind": "clamp", "site": "blocks.1.mlp.hook_post", "neurons": "x"}]}), 400,
     "edits.0"),
    (dict(extra_body={"edits": [{"kind": "teleport"}]}), 400, "edits.0"),
    (dict(extra_body={"strength": "strong"}), 400, "strength"),
]


@pytest.mark.parametrize("change, status, param", BAD, ids=[f"{s}-{p}" for _, s, p in BAD])
def test_bad_requests_get_a_4xx_naming_the_field(server, change, status, param):
    body = dict(model=MODEL, prompt="Hello", max_tokens=4, temperature=0) | change
    with pytest.raises(openai.APIStatusError) as info:
        client(server).completions.create(**body)
    assert info.value.status_code == status
    assert info.value.body["param"] == param and info.value.body["message"]


def test_malformed_json_and_oversized_bodies(server):
    url = server["url"]
    r = httpx.post(url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url + "/v1/completions", json={"model": MODEL})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(url + "/v1/completions", content=b"x" * (9 << 20), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_recipes_upload_checked_kept_atomically_and_deleted(server, tmp_path):
    url, folder = server["url"], server["folder"]
    data = (folder / "a.safetensors").read_bytes()
    r = httpx.post(url + "/v1/recipes", params={"name": "a2"}, content=data)
    assert r.status_code == 201 and r.json()["name"] == "a2"
    assert f"{MODEL}:a2" in [m.id for m in client(server).models.list().data]
    assert httpx.post(url + "/v1/recipes", params={"name": "a2"}, content=data).status_code == 409
    assert complete(client(server), PROMPTS[0], model=f"{MODEL}:a2") == complete(client(server), PROMPTS[0],
                                                                               model=f"{MODEL}:a")
    other = save_recipe(tmp_path / "tiny.safetensors", [interp.Add("blocks.0.hook_resid_post", torch.ones(64))],
                        tiny_model("llama"))
    r = httpx.post(url + "/v1/recipes", params={"name": "tiny"}, content=other.read_bytes())
    assert r.status_code == 400 and "made for" in r.json()["error"]["message"]
    corrupt = bytearray(data)
    corrupt[-3] ^= 1
    assert httpx.post(url + "/v1/recipes", params={"name": "bad"}, content=bytes(corrupt)).status_code == 400
    assert httpx.post(url + "/v1/recipes", params={"name": "../x"}, content=data).status_code == 400
    r = httpx.post(url + "/v1/recipes", params={"name": "huge"}, content=b"x" * (65 << 20))
    assert r.status_code == 413
    uploads = folder / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["a2.safetensors"]  # nothing half-written, nothing refused
    # a restart reads the uploads back
    from serve.registry import Registry
    assert Registry(server["model"], uploads).names() == ["a2"]
    assert httpx.delete(url + "/v1/recipes/a2").json()["deleted"] is True
    assert httpx.delete(url + "/v1/recipes/a2").status_code == 404
    assert not list(uploads.iterdir())
    listed = httpx.get(url + "/v1/recipes").json()["data"]
    assert [d["name"] for d in listed] == ["a", "b"] and all(len(d["sha256"]) == 64 for d in listed)


def test_a_client_that_leaves_mid_stream_frees_its_row(server):
    url = server["url"]
    body = {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 200, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
    assert any(line.startswith("data: {") for line in got)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "interp_queue_length 0.0" not in httpx.get(url + "/metrics").text:
        time.sleep(0.2)
    assert "interp_queue_length 0.0" in httpx.get(url + "/metrics").text


def test_bounded_load_32_clients_mixed_recipes_and_bad_requests(server, reference):
    edits = recipe_edits()
    c = client(server)
    jobs = []
    for i in range(32):
        prompt, kind = PROMPTS[i % 4], ("a", "b", "none", "bad")[i % 4]
        jobs.append((prompt, kind))
    expect = {(p, k): reference(p, k, edits.get(k, [])) for p, k in jobs if k != "bad"}

    def send(job):
        prompt, kind = job
        if kind == "bad":
            try:
                complete(c, prompt, recipe="missing")
            except openai.APIStatusError as exc:
                return exc.status_code
            return "not refused"
        return complete(c, prompt, model=MODEL if kind == "none" else f"{MODEL}:{kind}")

    start = time.monotonic()
    with cf.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(send, jobs, timeout=600))
    assert len(results) == 32  # none lost
    for (prompt, kind), got in zip(jobs, results):
        assert got == (404 if kind == "bad" else expect[prompt, kind]), (prompt, kind)
    assert time.monotonic() - start < 600
    assert httpx.get(server["url"] + "/health").json()["status"] == "ok"
    metrics = httpx.get(server["url"] + "/metrics").text
    assert 'interp_requests_total{endpoint="completions",recipe="a"}' in metrics
    assert "interp_queue_length 0.0" in metrics


def test_interp_serve_cli_stops_gracefully_on_sigterm(tmp_path, smollm2):
    """The real command: serves, answers, and on SIGTERM finishes within its bound with exit code 0."""
    path = save_recipe(tmp_path / "a.safetensors", recipe_edits()["a"], smollm2)
    with socket_port() as port:
        pass
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--model", MODEL, "--port", str(port),
                             "--recipe", f"a={path}", "--recipe-dir", str(tmp_path / "up"), "--shutdown-timeout", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        c = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        assert complete(c, PROMPTS[0], model=f"{MODEL}:a") == interp.generate(smollm2, PROMPTS[0], recipe_edits()["a"],
                                                                            max_new_tokens=NEW)[0]
        long = threading.Thread(target=lambda: _ignore(lambda: c.completions.create(
            model=MODEL, prompt=PROMPTS[1], max_tokens=240, temperature=0)), daemon=True)
        long.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(timeout=60)
        stopped_in = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, proc.stdout.read()
    assert stopped_in < 2 + 15  # the graceful window, then the running request is cancelled
    assert "serving smollm2-135m" in proc.stdout.read()


def _ignore(fn):
    try:
        fn()
    except openai.OpenAIError:
        pass


class socket_port:
    """A free localhost port (bound, read, released)."""

    def __enter__(self):
        import socket
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def test_metrics_and_models_speak_their_formats(server):
    text = httpx.get(server["url"] + "/metrics").text
    assert "# TYPE interp_requests_total counter" in text and "interp_queue_length" in text
    ids = [m["id"] for m in httpx.get(server["url"] + "/v1/models").json()["data"]]
    assert ids == [MODEL, f"{MODEL}:a", f"{MODEL}:b"]
