"""A self-contained HTML page (and PNGs) for a language-neurons atlas.

Summary (τ, λ, neurons per language, selected neurons by number of
languages), the per-layer distribution of language-specific / related /
agnostic neurons with the four phases, and the ablation grid as a table and
a heatmap. Plots are matplotlib PNGs, embedded as base64 and also written
next to the report.
"""

from __future__ import annotations

import base64

from jinja2 import Environment, select_autoescape

from .neuron_atlas import Atlas

METHOD_PREFIX = "language-neurons"

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>interp language neurons: {{ model }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 64em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } td, th { padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; } .muted { color: #777; } .own { font-weight: bold; background: #fde0dc; }
</style></head><body>
<h1>Language neurons — {{ model }}</h1>
<p class="muted">method {{ p.method }} · languages {{ p.langs|join(", ") }} · {{ p.tokens_per_language }} tokens per language
({{ p.corpus }}) · τ = {{ "%.5f"|format(p.tau) }}{% if p.lam is not none %} · λ = {{ p.lam }}{% endif %} · ρ = {{ p.rho }}</p>
<h2>Neurons per language</h2>
<table><tr><th>language</th>{% for l in p.langs %}<th>{{ l }}</th>{% endfor %}</tr>
<tr><td>neurons</td>{% for l in p.langs %}<td>{{ p.per_language[l] }}</td>{% endfor %}</tr></table>
<p>Selected neurons by number of languages c = 0 … {{ p.langs|length }}: {{ p.count_by_languages|join(", ") }}
(c = 1 language-specific, 2 … {{ p.langs|length - 1 }} language-related); language-agnostic (p &gt; τ for every
language): {{ p.agnostic }}.</p>
<h2>Where they live</h2>
<img alt="per-layer distribution" src="data:image/png;base64,{{ dist_png }}">
<table><tr><th>phase</th><th>layers</th></tr>{% for name, layers in p.phases.items() %}
<tr><td>{{ name }}</td><td>{{ layers[0] ~ "–" ~ layers[-1] if layers else "—" }}</td></tr>{% endfor %}</table>
{% if p.grid %}<h2>Ablation: perplexity with each language's neurons deactivated</h2>
<table><tr><th>deactivated \\ on</th>{% for l in p.langs %}<th>{{ l }}</th>{% endfor %}</tr>
{% for row in p.grid.ppl %}<tr><td>{{ (["none"] + p.langs)[loop.index0] }} ({{ p.grid.sizes[loop.index0] }})</td>
{% set i = loop.index0 %}{% for x in row %}<td class="{{ 'own' if i == loop.index0 + 1 else '' }}">{{ "%.2f"|format(x) }}</td>{% endfor %}</tr>{% endfor %}
</table>{% if grid_png %}<img alt="ablation heatmap" src="data:image/png;base64,{{ grid_png }}">{% endif %}{% endif %}
<p class="muted">interp {{ version }} · masks: <code>atlases.load_atlas(folder).get("blocks.L.mlp.hook_pre", "masks")</code> [K, d_mlp]</p>
</body></html>
"""


def distribution_png(distribution: dict[str, list[int]], phases: dict[str, list[int]]) -> bytes:
    """Per-layer counts of specific / related / agnostic neurons, phases shaded."""
    from interp.plotting import png, subplots

    fig, ax = subplots(figsize=(8, 3), dpi=100)
    for name, counts in distribution.items():
        ax.plot(range(len(counts)), counts, marker="o", ms=3, label=name)
    shades = ["#f4f4f4", "#e8eef8", "#f8eee8", "#eef8e8"]
    for (name, layers), shade in zip(phases.items(), shades):
        if layers:
            ax.axvspan(layers[0] - 0.5, layers[-1] + 0.5, color=shade, zorder=0)
            ax.text((layers[0] + layers[-1]) / 2, ax.get_ylim()[1] * 0.95, name, ha="center", va="top", fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=8)
    return png(fig)


def render_language_report(atlas: Atlas, *, dist_png: bytes, grid_png: bytes | None) -> str:
    import interp

    env = Environment(autoescape=select_autoescape(default=True))
    b64 = lambda data: base64.b64encode(data).decode() if data else None  # noqa: E731
    return env.from_string(_TEMPLATE).render(model=atlas.model, p=atlas.params, dist_png=b64(dist_png),
                                             grid_png=b64(grid_png), version=interp.__version__)
