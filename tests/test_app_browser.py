"""The browser demo end to end: app.py served, driven by Playwright in Debian's Chromium (`make browser`).

Searches the atlas for a token, takes the best neuron, clamps it, checks that the unsteered and
steered texts both appear and differ, and saves a screenshot; then bad inputs (empty prompt,
unknown token, huge strength) give a readable message and the app keeps serving; and a path or a
hub id typed into the model box is refused (only INTERP_DEMO_MODELS' names are served); recipes
and atlases are uploads, checked by the loaders before use.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = ROOT / "tests" / "screenshots"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make browser)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "INTERP_DEMO_LAYERS": "24-29", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited: {proc.stdout.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("app.py did not start serving within 120 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(server)
        page.wait_for_selector("#token")
        yield page
        browser.close()


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").first.input_value()


def _error(page, needle: str) -> str:
    """The message the app shows (a toast), once it contains `needle`."""
    toast = page.locator(".toast-body", has_text=needle).first
    toast.wait_for(timeout=120_000)
    text = toast.inner_text()
    page.locator(".toast-close").first.click() if page.locator(".toast-close").count() else None
    return text


def test_search_clamp_and_generate(page) -> None:
    _fill(page, "token", " dog")
    page.click("#search")
    # the first search builds the atlas of the layers
    page.wait_for_function(r"() => /\d+:\d+/.test(document.querySelector('#neurons').innerText)", timeout=300_000)
    neuron = re.search(r"\d+:\d+", page.locator("#neurons").inner_text())[0]
    _fill(page, "neuron", neuron)
    page.click("#show-tokens")
    # the neuron found for ' dog' has a dog token among its top tokens
    page.wait_for_function("() => /dog/i.test(document.querySelector('#tokens-table').innerText)", timeout=60_000)
    _fill(page, "prompt", "My favourite animal is")
    page.locator("#clamp-value input").fill("20")
    page.click("#clamp")
    page.wait_for_function("() => document.querySelector('#steered textarea').value.length > 0", timeout=120_000)
    plain, steered = _text(page, "unsteered"), _text(page, "steered")
    assert plain.strip() and steered.strip() and plain != steered
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "atlas-clamp.png"), full_page=True)
    assert (SHOTS / "atlas-clamp.png").stat().st_size > 10_000


def test_bad_inputs_give_messages_and_the_app_keeps_serving(page) -> None:
    _fill(page, "prompt", "")
    page.click("#clamp")
    assert "Enter a prompt first" in _error(page, "prompt")
    _fill(page, "token", "zzqxj not a token")
    page.click("#search")
    assert "not a single token" in _error(page, "not a single token")
    _fill(page, "prompt", "My favourite animal is")
    page.locator("#clamp-value input").fill("1e12")
    page.click("#clamp")
    assert "between" in _error(page, "Clamp value")
    # still serving: a valid request after the errors works
    page.locator("#clamp-value input").fill("-20")
    page.evaluate("() => { document.querySelector('#steered textarea').value = '' }")
    page.click("#clamp")
    page.wait_for_function("() => document.querySelector('#steered textarea').value.length > 0", timeout=120_000)
    assert "Traceback" not in page.content()


def test_model_box_refuses_paths_and_hub_ids_and_the_app_keeps_serving(page) -> None:
    _fill(page, "neuron", "29:5")
    _fill(page, "prompt", "My favourite animal is")
    page.locator("#clamp-value input").fill("20")
    for name in ("/etc/passwd", "../../root/.cache", "HuggingFaceTB/SmolLM2-360M"):
        _fill(page, "model", name)
        page.click("#clamp")
        message = _error(page, name)
        assert "not offered here" in message and "smollm2-135m" in message and "Traceback" not in message
    _fill(page, "model", "smollm2-135m")  # an allowed name: the same action works
    page.evaluate("() => { document.querySelector('#steered textarea').value = '' }")
    page.click("#clamp")
    page.wait_for_function("() => document.querySelector('#steered textarea').value.length > 0", timeout=120_000)
    assert _text(page, "steered").strip() and "Traceback" not in page.content()


def test_recipes_and_atlases_are_uploads_checked_before_use(page, tmp_path) -> None:
    """The playground takes a recipe and an atlas's files as uploads, and the loaders' checks reach the page."""
    import torch

    from atlases.neuron_atlas import Atlas

    page.get_by_role("tab", name="Steering playground").click()
    page.get_by_role("radio", name="Recipe file (FOXP2, Dopamine, …)").check()
    (tmp_path / "junk.safetensors").write_bytes(b"not a recipe")
    page.locator("#recipe input[type=file]").set_input_files(str(tmp_path / "junk.safetensors"))
    page.click("#play-run")
    message = _error(page, "junk.safetensors")
    assert "junk.safetensors is not a safetensors recipe" in message and "/tmp" not in message  # no server path
    # an atlas's files, uploaded together, arrive under their names and pass the checksums and the model check
    Atlas(model="smollm2-135m", sites=["blocks.3.mlp.hook_post"], method="lm-head",
          tensors={"blocks.3.mlp.hook_post/x": torch.arange(6.0)}).save(tmp_path / "atlas")
    files = sorted(str(p) for p in (tmp_path / "atlas").iterdir())
    page.get_by_role("radio", name="Brain axis").check()
    page.locator("#axis-atlas input[type=file]").set_input_files(files)
    page.click("#play-run")
    assert "'lm-head' atlas, not a brain-axes atlas" in _error(page, "not a brain-axes atlas")
    page.get_by_role("tab", name="Neuron atlas").click()


def test_neuron_cards_search_open_clamp_and_download_a_recipe_the_cli_applies(page, tmp_path) -> None:
    """The "Neuron cards" tab: search ' dog', pick the first row (its card opens with a highlighted exemplar and
    its LM-head tokens), clamp it, see both texts; "Add to recipe" gives a file to download, and `interp steer
    --recipe` with it prints the steered text the tab showed (greedy, the tab's repetition penalty)."""
    page.get_by_role("tab", name="Neuron cards").click()
    _fill(page, "cards-query", " dog")
    page.click("#cards-search")
    # the first search builds the index: the atlas tab's LM-head atlas and the demo corpus's statistics
    page.wait_for_function(r"() => /^\d+:\d+$/m.test(document.querySelector('#cards-results').innerText)",
                           timeout=300_000)
    neuron = re.search(r"^\d+:\d+$", page.locator("#cards-results").inner_text(), re.M)[0]
    page.locator("#cards-results .body-cell", has_text=neuron).first.click()  # picking a row opens its card
    page.wait_for_function(f"() => document.querySelector('#card').innerText.includes('Neuron {neuron}')",
                           timeout=120_000)
    assert _text(page, "card-neuron") == neuron
    card = page.locator("#card").inner_text()
    assert re.search("dog", card, re.I) and "firing rate" in card and page.locator("#card mark").count() > 0
    _fill(page, "card-prompt", "My favourite animal is")
    page.locator("#card-value input").fill("20")
    page.get_by_role("radio", name="clamp").check()
    page.click("#card-steer")
    page.wait_for_function("() => document.querySelector('#card-steered textarea').value.length > 0",
                           timeout=120_000)
    plain, steered = _text(page, "card-unsteered"), _text(page, "card-steered")
    assert plain.strip() and steered.strip() and plain != steered
    page.click("#card-add")
    page.wait_for_function(f"() => document.querySelector('#card-recipe').innerText.includes('{neuron}')",
                           timeout=60_000)
    with page.expect_download(timeout=60_000) as download:
        page.click("#card-recipe-download")
    recipe = tmp_path / "recipe.safetensors"
    download.value.save_as(recipe)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "cards-clamp.png"), full_page=True)
    assert (SHOTS / "cards-clamp.png").stat().st_size > 10_000
    tokens = page.locator("#tokens input[type=number]").first.input_value()
    env = {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "cli.main", "steer", "--model", "smollm2-135m", "--recipe", str(recipe),
                          "--prompt", "My favourite animal is", "--max-new-tokens", tokens, "--repetition-penalty",
                          "1.3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = out.stdout.split("] My favourite animal is\n", 1)[1]
    assert " ".join(printed.split()) == " ".join(steered.split())
    page.get_by_role("tab", name="Neuron atlas").click()
