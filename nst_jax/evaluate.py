"""Cross-evaluation of results: every style method's distance between each result and the style image.

The paper's question, what each alignment buys, answered with numbers: for each result (a run of one method or
fusion) and each registered method m, D_m(result) = sum over the style layers of m's loss between the
result's and the style image's feature samples, with m in a deterministic form (``StyleMethod.evaluation``:
the Gaussian and mkmmd by the exact tiled full estimator with their bandwidths fixed on the content and style
images, swd with one fixed seeded set of 256 directions per layer). The table gives D_m(result) / D_m(content
image): 1.0 means no closer to the style than the photo, lower is closer. The ``content`` column is the
content loss of the result (sum ||F - P||^2 at the content layers) divided by that of the style image resized
to the content's shape: 0 keeps the photo's content exactly, 1 is as far as the painting.

Cost: the exact Gaussian and mkmmd sums are O(M^2 N) per layer and image, the relu1_1 term dominating (the
docs/usage.md, "Comparing methods", says what it costs); the rest is O(M N^2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import image, losses, transfer

SWD_SEED = 0
"""Seed of the fixed directions of the swd distance (folded with each layer's index)."""


def _features(problem: transfer.Problem, params: Any, rgb: np.ndarray, source: str, layers: Sequence[str]
              ) -> dict[str, jax.Array]:
    x = image.preprocess(jnp.asarray(rgb, jnp.float32), source)
    return {name: v[0] for name, v in problem.extract(params, x[None], tuple(layers)).items()}


def cross_distances(
    problem: transfer.Problem,
    params: Any,
    source: str,
    methods: Mapping[str, losses.StyleMethod],
    content_rgb: np.ndarray,
    style_rgb: np.ndarray,
    results: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """The cross-evaluation table.

    Args:
      problem: gives the style and content layers, the pooling and the compute dtype (those of the runs).
      params: VGG-19 parameters; source: their preprocessing (``torchvision`` or ``caffe``).
      methods: {column name: method} measured, e.g. each registered method with the run config's parameters.
      content_rgb: (H, W, 3) the content image at the results' size; style_rgb: the style image at its size.
      results: {row label: (H, W, 3) RGB result}.

    Returns:
      ``{"columns": [...], "rows": {label: {column: ratio, "content": ratio}}, "content_image": {column:
      D(content image)}}`` with plain floats.
    """
    layers = problem.style_layers
    style = _features(problem, params, style_rgb, source, layers)
    content_feats = _features(problem, params, content_rgb, source, (*layers, *problem.content_layers))
    reference = {n: content_feats[n] for n in layers}
    fns = {}
    for col, method in methods.items():
        per_layer = []
        for li, name in enumerate(layers):
            if not method.runs_at(name):
                continue
            # Each method takes the layer in its form: samples (M, N), or activations (h, w, N) if spatial.
            m = method.evaluation(losses.layout(method, reference[name]), losses.layout(method, style[name]))
            key = jax.random.fold_in(jax.random.key(SWD_SEED), li)
            per_layer.append((name, jax.jit(lambda x, t, k, m=m: m.loss(losses.layout(m, x), t, key=k)),
                              m.target(losses.layout(m, style[name])), key))
        fns[col] = per_layer

    def distances(feats: Mapping[str, jax.Array]) -> dict[str, float]:
        return {col: float(sum(float(fn(feats[name], t, k)) for name, fn, t, k in per_layer))
                for col, per_layer in fns.items()}

    def content_distance(feats: Mapping[str, jax.Array]) -> float:
        return float(sum(float(losses.content_loss(feats[n], content_feats[n])) for n in problem.content_layers))

    at_content = distances(reference)
    style_as_content = image.resize(style_rgb, content_rgb.shape[:2])
    far = content_distance(_features(problem, params, style_as_content, source, problem.content_layers))
    rows = {}
    for label, rgb in results.items():
        feats = _features(problem, params, rgb, source, (*layers, *problem.content_layers))
        d = distances({n: feats[n] for n in layers})
        rows[label] = {col: d[col] / at_content[col] if at_content[col] > 0 else float("nan") for col in d}
        rows[label]["content"] = content_distance(feats) / far if far > 0 else float("nan")
    return {"columns": [*methods, "content"], "rows": rows, "content_image": at_content}


def markdown(table: Mapping[str, Any], note: str = "") -> str:
    """The table of :func:`cross_distances` as Markdown, the best (lowest) style ratio of each column in bold."""
    cols = table["columns"]
    rows = table["rows"]
    best = {c: min((r[c] for r in rows.values()), default=None) for c in cols}
    lines = ["| result | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for label, r in rows.items():
        cells = [(f"**{r[c]:.3g}**" if c != "content" and r[c] == best[c] else f"{r[c]:.3g}") for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    return (note.rstrip() + "\n\n" + text) if note else text


def table_cells(table: Mapping[str, Any]) -> list[list[str]]:
    """Header and rows as strings, for drawing the table on the comparison sheet."""
    cols = table["columns"]
    return [["result", *cols], *([label, *(f"{r[c]:.3g}" for c in cols)] for label, r in table["rows"].items())]

