"""A self-contained, searchable HTML page for an LM-head atlas.

Every neuron's top tokens are embedded as JSON; a few lines of JavaScript
filter them as one types (a token such as ` dog`, or `L12:345` for one
neuron) and show the best matches, ranked by the token's probability.
The search can be given in the address: `report.html#q=%20dog&exact=1&dir=up`.
No network, no external scripts.
"""

from __future__ import annotations

import json

from jinja2 import Environment, select_autoescape

from .lm_head import METHOD, site_of
from .neuron_atlas import Atlas

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>interp LM-head atlas: {{ model }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; width: 100%; } td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }
.tok { font-family: ui-monospace, monospace; background: #f3f3f3; padding: 0 3px; margin-right: 4px; white-space: pre; }
.hit { background: #ffd54f; } .muted { color: #777; } input, select { font-size: 110%; padding: 4px; }
</style></head><body>
<h1>LM-head atlas — {{ model }}</h1>
<p class="muted">{{ n_neurons }} neurons ({{ layers|length }} layers × {{ d_mlp }}) decoded through the unembedding
(vocabulary {{ vocab_size }}) · directions: {{ directions|join(", ") }} · final norm weight: {{ final_norm }} ·
unit-normalised: {{ unit }} · top {{ k }} tokens kept, {{ shown }} shown here</p>
<p><label>search <input id="q" size="30" placeholder="a token, e.g.  dog   — or L12:345"></label>
<label>direction <select id="dir">{% for d in directions %}<option>{{ d }}</option>{% endfor %}</select></label>
<label><input type="checkbox" id="exact"> exact token</label> <span id="count" class="muted"></span></p>
<table><thead><tr><th>layer</th><th>neuron</th><th>p(match)</th><th>top tokens (probability)</th></tr></thead>
<tbody id="rows"></tbody></table>
<p class="muted">interp {{ version }} · tensors: <code>atlases.load_atlas(folder)</code> ·
queries: <code>atlas.neurons_for(" dog")</code>, <code>atlas.tokens_for(layer, neuron)</code></p>
<script id="data" type="application/json">{{ data|safe }}</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const q = document.getElementById("q"), dir = document.getElementById("dir"), exact = document.getElementById("exact");
const rows = document.getElementById("rows"), count = document.getElementById("count");
const LIMIT = 300;
function esc(s) { return s.replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function render() {
  const M = D.maps[dir.value], text = q.value, out = [];
  const one = /^\\s*L(\\d+):(\\d+)\\s*$/i.exec(text);
  for (let li = 0; li < D.layers.length; li++) {
    const ids = M.ids[li], probs = M.probs[li];
    for (let n = 0; n < ids.length; n++) {
      let score = 0, hits = [];
      if (one) { if (+one[1] !== D.layers[li] || +one[2] !== n) continue; score = 1; }
      else if (text) {
        for (let j = 0; j < ids[n].length; j++) {
          const t = D.vocab[ids[n][j]];
          if (exact.checked ? t === text : t.toLowerCase().includes(text.toLowerCase())) { hits.push(j); score = Math.max(score, probs[n][j]); }
        }
        if (!hits.length) continue;
      } else score = probs[n][0];
      out.push([score, li, n, hits]);
    }
  }
  out.sort((a, b) => b[0] - a[0]);
  count.textContent = out.length + " neurons" + (out.length > LIMIT ? ", best " + LIMIT + " shown" : "");
  rows.innerHTML = out.slice(0, LIMIT).map(([s, li, n, hits]) => {
    const M2 = D.maps[dir.value], toks = M2.ids[li][n].map((id, j) =>
      '<span class="tok' + (hits.includes(j) ? ' hit' : '') + '">' + esc(JSON.stringify(D.vocab[id]).slice(1, -1)) +
      '</span><span class="muted">' + M2.probs[li][n][j].toFixed(3) + '</span> ').join("");
    return "<tr><td>" + D.layers[li] + "</td><td>" + n + "</td><td>" + s.toFixed(3) + "</td><td>" + toks + "</td></tr>";
  }).join("");
}
const hash = new URLSearchParams(location.hash.slice(1));  // report.html#q=%20dog&exact=1&dir=up
if (hash.has("q")) q.value = hash.get("q");
if (hash.has("exact")) exact.checked = hash.get("exact") === "1";
if (hash.has("dir")) dir.value = hash.get("dir");
q.addEventListener("input", render); dir.addEventListener("change", render); exact.addEventListener("change", render);
render();
</script>
</body></html>
"""


def render_lm_head_report(atlas: Atlas, *, shown: int = 5) -> str:
    """HTML for an lm-head atlas; `shown` top tokens per neuron are embedded."""
    import interp

    if atlas.method != METHOD or atlas.vocab is None:
        raise ValueError("render_lm_head_report needs an lm-head atlas with its vocabulary")
    p = atlas.params
    layers, directions = list(p["layers"]), list(p["directions"])
    maps, used = {}, set()
    for d in directions:
        ids = [atlas.get(site_of(l), f"{d}.top_ids")[:, :shown].tolist() for l in layers]
        probs = [[[float(f"{x:.6g}") for x in row] for row in atlas.get(site_of(l), f"{d}.top_probs")[:, :shown].tolist()]
                 for l in layers]
        maps[d] = {"ids": ids, "probs": probs}
        used.update(i for layer in ids for row in layer for i in row)
    vocab = {i: atlas.vocab[i] for i in sorted(used)}  # only the tokens that appear
    data = json.dumps({"layers": layers, "vocab": vocab, "maps": maps}, ensure_ascii=False, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # never close the <script> early
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(_TEMPLATE).render(
        model=atlas.model, layers=layers, d_mlp=p["d_mlp"], n_neurons=len(layers) * p["d_mlp"],
        vocab_size=p["vocab"], directions=directions, final_norm=p["final_norm"], unit=p["unit"], k=p["k"],
        shown=min(shown, p["k"]), data=data, version=interp.__version__)
