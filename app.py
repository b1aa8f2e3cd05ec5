"""interp's browser demo (Gradio; a Hugging Face Space runs this file, see spaces/README.md).

    make app            # or: .venv/bin/python app.py [--port 7860]

Tabs: the neuron atlas (token → neurons, neuron → tokens, clamp and generate), neuron cards
(search, open a card, clamp / scale / ablate, collect the edits into a recipe to download), language
neurons, the steering playground, HFTP spectra and MILAN descriptions. The work is done by
`demo.actions`; this file lays it out. Bad input shows a one-line message (`gr.Error`); an internal
error shows one line with a reference and its traceback goes to the server's log (`demo.errors`).
INTERP_DEMO_MODELS lists the models the model box accepts (default: the offline names; nothing
else, no paths), INTERP_DEMO_MODEL the one shown first, INTERP_DEMO_LAYERS the atlas's layers.
Recipes and atlases come only as uploads, within `demo.actions`' size limits.
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import sys

import gradio as gr

from demo import actions
from demo.errors import user_message
from interp.errors import InterpError


def _shown(fn):
    """Run a handler; any error becomes one line in the page (bugs: logged with their traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise gr.Error(user_message(exc, getattr(fn, "__name__", "handler")), print_exception=False) from None

    return wrapper


TRACK = gr.Progress(track_tqdm=True)  # the actions' tqdm bars become the page's progress bar


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))


def _pair(r: actions.SideBySide):
    return r.unsteered, r.steered, r.note


def _side_by_side(prefix: str = ""):
    """Unsteered and steered text side by side, and a line saying what the edits were (ids prefixed per tab)."""
    with gr.Row():
        plain = gr.Textbox(label="unsteered", lines=5, elem_id=f"{prefix}unsteered", interactive=False)
        steered = gr.Textbox(label="steered", lines=5, elem_id=f"{prefix}steered", interactive=False)
    note = gr.Markdown(elem_id=f"{prefix}note")
    return plain, steered, note


def build() -> gr.Blocks:
    with gr.Blocks(title="interp: read and steer neurons") as app:
        gr.Markdown("# interp: read and steer the neurons of language models\n"
                    "Greedy continuations, repetition penalty 1.3. Each tab's first run computes what it needs "
                    "(the atlas, the language neurons, the exemplars) and keeps it.")
        model = gr.Textbox(value=actions.default_model(), elem_id="model",
                           label=f"model (one of: {', '.join(actions.allowed_models())})")
        tokens = gr.Slider(1, actions.MAX_NEW_TOKENS, value=24, step=1, label="new tokens", elem_id="tokens")

        with gr.Tab("Neuron atlas"):
            gr.Markdown("Each MLP neuron's write direction read through the unembedding (LM-head decoding).")
            with gr.Row():
                token = gr.Textbox(label="token (with its leading space, e.g. ' dog')", elem_id="token")
                search = gr.Button("Find neurons", elem_id="search")
            found = gr.Dataframe(headers=["neuron", "P(token)", "rank", "top tokens"], elem_id="neurons",
                                 interactive=False)
            with gr.Row():
                neuron = gr.Textbox(label="neuron LAYER:NEURON", elem_id="neuron")
                show = gr.Button("Top tokens", elem_id="show-tokens")
            top = gr.Dataframe(headers=["token", "probability", "logit"], elem_id="tokens-table", interactive=False)
            with gr.Row():
                value = gr.Number(value=20, label="clamp value", elem_id="clamp-value")
                prompt = gr.Textbox(value="My favourite animal is", label="prompt", elem_id="prompt")
                clamp = gr.Button("Clamp and generate", elem_id="clamp")
            plain, steered, note = _side_by_side()
            @_shown
            def on_search(m, t, progress=TRACK):
                return actions.search_token(m, t)

            search.click(on_search, [model, token], found)
            show.click(_shown(lambda m, n: actions.neuron_tokens(m, n)), [model, neuron], top)
            clamp.click(_shown(lambda m, p, n, v, k: _pair(actions.clamp_generate(m, p, n, v, k))),
                        [model, prompt, neuron, value, tokens], [plain, steered, note])

        with gr.Tab("Neuron cards"):
            gr.Markdown("One card per MLP neuron: its firing rates and top exemplars on the demo corpus, its LM-head "
                        "tokens, and whatever an uploaded atlas adds (language, HFTP, MILAN; `interp atlas merge` "
                        "makes a full index). Search, open a card, then clamp, scale or ablate the neuron; *Add to "
                        "recipe* collects the edits into a recipe file for `interp steer --recipe` and `interp serve`.")
            with gr.Row():
                cby = gr.Radio(list(actions.CARD_SEARCHES), value="token", label="search by", elem_id="cards-by")
                cquery = gr.Textbox(label="token (' dog', with its space), words, language (es, Spanish) or label "
                                          "(shared, specific, …)", elem_id="cards-query")
                clayer = gr.Textbox(label="layer (optional; empty: all)", elem_id="cards-layer")
                csearch = gr.Button("Search", elem_id="cards-search")
            with gr.Accordion("optional: upload an index or an analysis atlas", open=False):
                cindex = gr.File(label=f"the files of an index (interp atlas merge) or of a language-neurons, HFTP, "
                                       f"MILAN, stats or lm-head atlas to join (atlas.json, tensors.safetensors, …; "
                                       f"≤ {actions.MAX_ATLAS_BYTES // 2**20} MB)",
                                 file_count="multiple", type="filepath", elem_id="cards-index")
            cfound = gr.Dataframe(headers=["neuron", "top write tokens", "class", "description"],
                                  elem_id="cards-results", interactive=False)
            with gr.Row():
                cneuron = gr.Textbox(label="neuron LAYER:NEURON (or pick a row above)", elem_id="card-neuron")
                copen = gr.Button("Open card", elem_id="card-open")
            card = gr.HTML(elem_id="card")
            with gr.Row():
                caction = gr.Radio(list(actions.NEURON_ACTIONS), value="clamp", label="action", elem_id="card-action")
                cvalue = gr.Number(value=20, label="value: clamp to / scale by (ablate: unused)", elem_id="card-value")
                cprompt = gr.Textbox(value="My favourite animal is", label="prompt", elem_id="card-prompt")
                csteer = gr.Button("Steer", elem_id="card-steer")
            cplain, csteered, cnote = _side_by_side("card-")
            recipe_state = gr.State(None)
            with gr.Row():
                cadd = gr.Button("Add to recipe", elem_id="card-add")
                crun = gr.Button("Steer with the recipe", elem_id="card-recipe-run")
                cclear = gr.Button("Clear recipe", elem_id="card-recipe-clear")
                cdownload = gr.DownloadButton("Download recipe", value=None, interactive=False,
                                              elem_id="card-recipe-download")
            csummary = gr.Markdown(actions.recipe_summary(None), elem_id="card-recipe")

            @_shown
            def on_cards_search(m, by, q, layer, index, progress=TRACK):
                return actions.search_cards(m, by, q, layer, index)

            @_shown
            def on_open(m, n, index, progress=TRACK):
                return actions.card_html(actions.open_card(m, n, index))

            @_shown
            def on_pick(m, rows, index, evt: gr.SelectData, progress=TRACK):
                row = evt.row_value if getattr(evt, "row_value", None) else rows.iloc[evt.index[0]].tolist()
                return row[0], actions.card_html(actions.open_card(m, row[0], index))

            @_shown
            def on_add(m, recipe, n, a, v):
                recipe, path, summary = actions.add_to_recipe(m, recipe, n, a, v)
                return recipe, gr.DownloadButton(value=path, interactive=True), summary

            csearch.click(on_cards_search, [model, cby, cquery, clayer, cindex], cfound)
            cfound.select(on_pick, [model, cfound, cindex], [cneuron, card])
            copen.click(on_open, [model, cneuron, cindex], card)
            csteer.click(_shown(lambda m, p, n, a, v, k: _pair(actions.neuron_generate(m, p, n, a, v, k))),
                         [model, cprompt, cneuron, caction, cvalue, tokens], [cplain, csteered, cnote])
            cadd.click(on_add, [model, recipe_state, cneuron, caction, cvalue], [recipe_state, cdownload, csummary])
            crun.click(_shown(lambda m, p, r, k: _pair(actions.recipe_generate(m, p, r, k))),
                       [model, cprompt, recipe_state, tokens], [cplain, csteered, cnote])
            cclear.click(lambda: (None, gr.DownloadButton(value=None, interactive=False), actions.recipe_summary(None)),
                         None, [recipe_state, cdownload, csummary])

        with gr.Tab("Language neurons"):
            gr.Markdown("Language-specific neurons from the parallel Bible (en, es, fr, de).")
            with gr.Row():
                verses = gr.Slider(16, 300, value=64, step=16, label="verses per language")
                find = gr.Button("Find language neurons")
            plot = gr.Image(label="per layer", type="pil")
            totals = gr.Dataframe(headers=["language", "neurons"], interactive=False)
            with gr.Row():
                lang = gr.Dropdown(list(actions.LANGS), value="es", label="steer to")
                lprompt = gr.Textbox(value="The best way to learn is", label="prompt")
                go = gr.Button("Steer")
            lplain, lsteered, lnote = _side_by_side("lang-")

            @_shown
            def on_find(m, v, progress=TRACK):
                png, rows = actions.language_neurons(m, v)
                return _image(png), rows

            find.click(on_find, [model, verses], [plot, totals])
            go.click(_shown(lambda m, v, l, p, k: _pair(actions.steer_language(m, v, l, p, k))),
                     [model, verses, lang, lprompt, tokens], [lplain, lsteered, lnote])

        with gr.Tab("Steering playground"):
            method = gr.Radio(list(actions.METHODS), value="ActAdd", label="method", elem_id="method")
            sprompt = gr.Textbox(value="I think that people should", label="prompt")
            with gr.Row():
                pos = gr.Textbox(value="I love this. It is wonderful.", label="ActAdd: positive texts", lines=3)
                neg = gr.Textbox(value="I hate this. It is terrible.", label="ActAdd: negative texts", lines=3)
            with gr.Row():
                layer = gr.Number(value=6, label="ActAdd: layer", precision=0)
                scale = gr.Number(value=4, label="strength: ActAdd scale, FOXP2 α (e.g. 1.5), axis strength")
                target = gr.Dropdown(list(actions.FOXP2_TARGETS), value="es",
                                     label="FOXP2: target language (first run: a few minutes)")
            recipe = gr.File(label=f"recipe upload (.safetensors, ≤ {actions.MAX_RECIPE_BYTES // 2**20} MB): "
                                   "interp analyze --probe foxp2, interp steer dopamine …",
                             file_types=[".safetensors"], type="filepath", elem_id="recipe")
            with gr.Row():
                axis_atlas = gr.File(label=f"brain axis: upload the files of a brain-axes atlas folder (atlas.json, "
                                           f"tensors.safetensors, …; ≤ {actions.MAX_ATLAS_BYTES // 2**20} MB)",
                                     file_count="multiple", type="filepath", elem_id="axis-atlas")
                axis = gr.Number(value=0, label="brain axis: axis", precision=0)
            run = gr.Button("Generate", elem_id="play-run")
            splain, ssteered, snote = _side_by_side("play-")

            @_shown
            def on_steer(m, meth, p, k, a, b, l, s, r, aa, ax, tg, progress=TRACK):
                return _pair(actions.steer(m, meth, p, k, a, b, l, s, r, aa, ax, tg))

            run.click(on_steer, [model, method, sprompt, tokens, pos, neg, layer, scale, recipe, axis_atlas, axis,
                                 target], [splain, ssteered, snote])

        with gr.Tab("HFTP spectra"):
            gr.Markdown("Frequency tagging: sentence streams of 4-word sentences against word-shuffled controls "
                        "(a quick setting; `interp analyze --probe hftp` runs the paper's).")
            with gr.Row():
                hlayers = gr.Textbox(value="6,12", label="layers (at most 6)")
                streams = gr.Slider(4, 100, value=20, step=2, label="streams per condition")
                hrun = gr.Button("Run")
            spectra = gr.Image(label="spectra", type="pil")
            htable = gr.Textbox(label="syntax neurons per layer", lines=6)
            @_shown
            def on_hftp(m, l, s, progress=TRACK):
                png, table = actions.hftp_spectra(m, l, s)
                return _image(png), table

            hrun.click(on_hftp, [model, hlayers, streams], [spectra, htable])

        with gr.Tab("MILAN descriptions"):
            gr.Markdown("A neuron described in words: the captioner's candidates for its top exemplars "
                        "(demo corpus; marked tokens above its 0.99 quantile), reranked by pointwise mutual "
                        "information.")
            with gr.Row():
                mneuron = gr.Textbox(value="3:5", label="neuron LAYER:NEURON")
                mrun = gr.Button("Describe")
            desc = gr.Textbox(label="description")
            exemplars = gr.Dataframe(headers=["exemplar ([[marked]] tokens)"], interactive=False)
            @_shown
            def on_describe(m, n, progress=TRACK):
                return actions.describe(m, n)

            mrun.click(on_describe, [model, mneuron], [desc, exemplars])
    return app


def main() -> None:
    p = argparse.ArgumentParser(description="interp's browser demo")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to serve on (a Space sets GRADIO_SERVER_NAME=0.0.0.0)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build()
    except InterpError as exc:  # the operator's settings (e.g. INTERP_DEMO_MODEL outside INTERP_DEMO_MODELS)
        print(f"app.py: {exc}", file=sys.stderr)
        sys.exit(2)
    # uploads larger than the largest limit are refused by the server before they are stored
    app.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, show_error=True,
                                                  max_file_size=actions.MAX_ATLAS_BYTES)


if __name__ == "__main__":
    main()
