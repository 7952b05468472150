"""Demo images the package draws itself, so ``python -m nst_jax.main`` runs with no input files.

Both are deterministic functions of their size (no randomness, no files): a content "photograph" with
large shapes and smooth shading, and a style "painting" of swirling, high-contrast brush strokes.
"""

from __future__ import annotations

import numpy as np


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / max(h - 1, 1), x / max(w - 1, 1)


def content_image(size: int = 512) -> np.ndarray:
    """A landscape: sky gradient, sun, two hills, a house. (size * 3/4, size, 3) float32 RGB in [0, 1]."""
    h, w = max(1, round(size * 3 / 4)), size
    v, u = _grid(h, w)
    img = np.empty((h, w, 3), np.float32)
    img[...] = np.stack([0.45 + 0.3 * v, 0.65 + 0.2 * v, 0.95 - 0.1 * v], axis=-1)  # sky
    sun = (u - 0.78) ** 2 + ((v - 0.22) * h / w) ** 2 < 0.07**2
    img[sun] = (1.0, 0.85, 0.35)
    far = v > 0.55 + 0.12 * np.sin(2.2 * np.pi * u + 0.6)
    img[far] = np.stack([0.25 + 0.2 * v, 0.5 + 0.1 * u, 0.3 + 0.0 * v], axis=-1)[far]
    near = v > 0.72 + 0.08 * np.cos(1.4 * np.pi * u)
    img[near] = np.stack([0.15 + 0.25 * v, 0.38 + 0.2 * v, 0.12 + 0.05 * u], axis=-1)[near]
    wall = (u > 0.18) & (u < 0.38) & (v > 0.52) & (v < 0.78)
    img[wall] = (0.85, 0.8, 0.7)
    roof = (v < 0.52) & (v > 0.38) & (np.abs(u - 0.28) < (v - 0.38) * 0.85 + 0.005)
    img[roof] = (0.6, 0.15, 0.1)
    door = (u > 0.26) & (u < 0.31) & (v > 0.64) & (v < 0.78)
    img[door] = (0.3, 0.18, 0.1)
    return np.clip(img, 0.0, 1.0)


def style_image(size: int = 512) -> np.ndarray:
    """Swirling strokes in saturated blues and yellows. (size, size, 3) float32 RGB in [0, 1]."""
    v, u = _grid(size, size)
    cy, cx = v - 0.5, u - 0.5
    r = np.sqrt(cx**2 + cy**2)
    theta = np.arctan2(cy, cx)
    swirl = np.sin(18.0 * r * 2 * np.pi / 3 + 3.0 * theta + 6.0 * np.sin(4.0 * np.pi * u))
    strokes = np.sin(60.0 * (u * np.cos(theta) + v * np.sin(theta)) + 4.0 * swirl)
    t = 0.5 + 0.5 * swirl
    blue = np.array([0.08, 0.2, 0.55], np.float32)
    yellow = np.array([0.98, 0.85, 0.25], np.float32)
    base = (1 - t)[..., None] * blue + t[..., None] * yellow
    img = base * (0.75 + 0.25 * strokes[..., None])
    return np.clip(img, 0.0, 1.0).astype(np.float32)
