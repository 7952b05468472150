"""Demo images the package draws itself, so ``python -m nst_jax.main`` runs with no input files.

Both are deterministic functions of their size (no randomness, no files): a content "photograph" with
large shapes and smooth shading, and a style "painting" of swirling, high-contrast brush strokes. Their label
images (:func:`content_mask`, :func:`style_mask`; ``--content_mask=demo --style_mask=demo``) split them into
regions, so one command shows spatial control: the sky styled by the painting's blue strokes, the hills by its
yellow ones, the house kept.
"""

from __future__ import annotations

import numpy as np


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / max(h - 1, 1), x / max(w - 1, 1)


DEMO = "demo"
"""The mask flags' value that names the demo images' label images."""

SKY, HILLS, HOUSE = (40, 110, 230), (230, 180, 30), (200, 40, 40)
"""The label colours: the content's sky (with the sun), hills and house; the painting's blue strokes are SKY,
its yellow ones HILLS, and the house has no region in the painting (no style loss, unless the fallback is
``whole``)."""


def _content_shapes(size: int) -> tuple[np.ndarray, ...]:
    """The content's (H, W) grids and boolean shapes: v, u, sun, far hill, near hill, wall, roof, door."""
    h, w = max(1, round(size * 3 / 4)), size
    v, u = _grid(h, w)
    sun = (u - 0.78) ** 2 + ((v - 0.22) * h / w) ** 2 < 0.07**2
    far = v > 0.55 + 0.12 * np.sin(2.2 * np.pi * u + 0.6)
    near = v > 0.72 + 0.08 * np.cos(1.4 * np.pi * u)
    wall = (u > 0.18) & (u < 0.38) & (v > 0.52) & (v < 0.78)
    roof = (v < 0.52) & (v > 0.38) & (np.abs(u - 0.28) < (v - 0.38) * 0.85 + 0.005)
    door = (u > 0.26) & (u < 0.31) & (v > 0.64) & (v < 0.78)
    return v, u, sun, far, near, wall, roof, door


def content_image(size: int = 512) -> np.ndarray:
    """A landscape: sky gradient, sun, two hills, a house. (size * 3/4, size, 3) float32 RGB in [0, 1]."""
    v, u, sun, far, near, wall, roof, door = _content_shapes(size)
    h, w = v.shape
    img = np.empty((h, w, 3), np.float32)
    img[...] = np.stack([0.45 + 0.3 * v, 0.65 + 0.2 * v, 0.95 - 0.1 * v], axis=-1)  # sky
    img[sun] = (1.0, 0.85, 0.35)
    img[far] = np.stack([0.25 + 0.2 * v, 0.5 + 0.1 * u, 0.3 + 0.0 * v], axis=-1)[far]
    img[near] = np.stack([0.15 + 0.25 * v, 0.38 + 0.2 * v, 0.12 + 0.05 * u], axis=-1)[near]
    img[wall] = (0.85, 0.8, 0.7)
    img[roof] = (0.6, 0.15, 0.1)
    img[door] = (0.3, 0.18, 0.1)
    return np.clip(img, 0.0, 1.0)


def content_mask(size: int = 512) -> np.ndarray:
    """The label image of :func:`content_image` (same size): sky and sun SKY, the hills HILLS, the house
    (wall, roof, door) HOUSE. (size * 3/4, size, 3) uint8 RGB."""
    _, _, _, far, near, wall, roof, door = _content_shapes(size)
    labels = np.empty((*far.shape, 3), np.uint8)
    labels[...] = SKY
    labels[far | near] = HILLS
    labels[wall | roof | door] = HOUSE
    return labels


def _style_fields(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The painting's (size, size) swirl mix t in [0, 1] (0 blue, 1 yellow) and its stroke texture."""
    v, u = _grid(size, size)
    cy, cx = v - 0.5, u - 0.5
    r = np.sqrt(cx**2 + cy**2)
    theta = np.arctan2(cy, cx)
    swirl = np.sin(18.0 * r * 2 * np.pi / 3 + 3.0 * theta + 6.0 * np.sin(4.0 * np.pi * u))
    strokes = np.sin(60.0 * (u * np.cos(theta) + v * np.sin(theta)) + 4.0 * swirl)
    return 0.5 + 0.5 * swirl, strokes


def style_image(size: int = 512) -> np.ndarray:
    """Swirling strokes in saturated blues and yellows. (size, size, 3) float32 RGB in [0, 1]."""
    t, strokes = _style_fields(size)
    blue = np.array([0.08, 0.2, 0.55], np.float32)
    yellow = np.array([0.98, 0.85, 0.25], np.float32)
    base = (1 - t)[..., None] * blue + t[..., None] * yellow
    img = base * (0.75 + 0.25 * strokes[..., None])
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def style_mask(size: int = 512) -> np.ndarray:
    """The label image of :func:`style_image` (same size): its blue strokes SKY, its yellow ones HILLS.
    (size, size, 3) uint8 RGB."""
    t, _ = _style_fields(size)
    labels = np.empty((*t.shape, 3), np.uint8)
    labels[...] = SKY
    labels[t >= 0.5] = HILLS
    return labels
