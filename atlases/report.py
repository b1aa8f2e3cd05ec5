"""A readable HTML page for an activation-statistics atlas.

One self-contained file: a per-layer plot (matplotlib, embedded as PNG),
a per-group summary, and for each site its strongest units with their top
exemplars highlighted in context.
"""

from __future__ import annotations

import base64
from typing import Callable

import torch
from jinja2 import Environment, select_autoescape

from .neuron_atlas import Atlas

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>interp atlas: {{ model }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 68em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: left; }
.ex { font-family: ui-monospace, monospace; font-size: 90%; white-space: pre-wrap; }
mark { background: #ffd54f; padding: 0 1px; } .muted { color: #777; } h2 { margin-top: 2em; }
</style></head><body>
<h1>Activation atlas — {{ model }}</h1>
<p class="muted">method {{ method }} · {{ params.n_documents }} documents · {{ params.n_tokens }} tokens ·
dtype {{ params.dtype }} · {{ sites|length }} sites · groups: {{ params.groups|join(", ") }}</p>
<img alt="per-layer firing frequency" src="data:image/png;base64,{{ plot }}">
<h2>Per site</h2>
<table><tr><th>site</th><th>units</th><th>mean frequency</th>{% for g in params.groups %}<th>{{ g }}</th>{% endfor %}<th>never active</th></tr>
{% for row in summary %}<tr><td>{{ row.site }}</td><td>{{ row.width }}</td><td>{{ "%.3f"|format(row.freq) }}</td>
{% for f in row.by_group %}<td>{{ "%.3f"|format(f) }}</td>{% endfor %}<td>{{ row.dead }}</td></tr>{% endfor %}
</table>
<h2>Strongest units and their top exemplars</h2>
{% for block in units %}<h3>{{ block.site }}</h3>
<table>{% for u in block.units %}<tr><td>#{{ u.unit }}</td><td>max {{ "%.2f"|format(u.max) }}<br><span class="muted">freq {{ "%.3f"|format(u.freq) }}</span></td>
<td class="ex">{% for e in u.exemplars %}<div>{{ e.left }}<mark>{{ e.token }}</mark>{{ e.right }} <span class="muted">({{ "%.2f"|format(e.value) }})</span></div>{% endfor %}</td></tr>{% endfor %}
</table>{% endfor %}
<p class="muted">interp {{ version }} · open the tensors with <code>atlases.load_atlas(folder)</code></p>
</body></html>
"""


def _plot(atlas: Atlas) -> str:
    from interp.plotting import png, subplots

    fig, ax = subplots(figsize=(8, 3), dpi=100)
    kinds: dict[str, list[tuple[int, float]]] = {}
    for site in atlas.sites:
        _, layer, kind = site.split(".", 2)
        kinds.setdefault(kind, []).append((int(layer), float(_overall_frequency(atlas, site).mean())))
    for kind, pts in kinds.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=kind)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean fraction of tokens with act > 0")
    ax.legend(fontsize=8)
    return base64.b64encode(png(fig)).decode()


def _overall_frequency(atlas: Atlas, site: str) -> torch.Tensor:
    counts, tokens = atlas.get(site, "counts"), atlas.get(site, "tokens")
    return counts.sum(0).double() / max(int(tokens.sum()), 1)


def render_report(
    atlas: Atlas,
    context: Callable[[int, int], tuple[str, str, str]] | None = None,
    *,
    units_per_site: int = 5,
    exemplars_per_unit: int = 3,
    max_sites: int = 40,
) -> str:
    """HTML for `atlas`; `context(doc, pos)` gives (left, token, right) text of an exemplar."""
    import interp

    summary = []
    for site in atlas.sites:
        freq = _overall_frequency(atlas, site)
        summary.append({
            "site": site, "width": freq.numel(), "freq": float(freq.mean()),
            "by_group": [float(x) for x in atlas.get(site, "frequency").mean(1)],
            "dead": int((atlas.get(site, "counts").sum(0) == 0).sum()),
        })
    units = []
    for site in atlas.sites[:max_sites]:
        values = atlas.get(site, "topk_values")
        order = values[:, 0].argsort(descending=True)[:units_per_site]
        freq = _overall_frequency(atlas, site)
        block = []
        for u in order.tolist():
            exs = []
            for j in range(min(exemplars_per_unit, values.shape[1])):
                d, p = int(atlas.get(site, "topk_doc")[u, j]), int(atlas.get(site, "topk_pos")[u, j])
                if d < 0 or context is None:
                    continue
                left, tok, right = context(d, p)
                exs.append({"left": left, "token": tok, "right": right, "value": float(values[u, j])})
            block.append({"unit": u, "max": float(values[u, 0]), "freq": float(freq[u]), "exemplars": exs})
        units.append({"site": site, "units": block})
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(_TEMPLATE).render(
        model=atlas.model, method=atlas.method, params=atlas.params, sites=atlas.sites,
        plot=_plot(atlas), summary=summary, units=units, version=interp.__version__,
    )
