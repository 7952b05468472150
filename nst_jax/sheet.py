"""Comparison sheets and loss-curve plots (the paper's key figure: one content, one style, every method)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nst_jax import image
from nst_jax.atomic import write_atomic


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def contact_sheet(tiles: Sequence[tuple[np.ndarray, str]], *, columns: int = 4, tile: int = 256,
                  footer: str = "", table: Sequence[Sequence[str]] = ()) -> np.ndarray:
    """Lays out (RGB image, label) tiles on a white grid, each label under its image.

    Args:
      tiles: (H, W, 3) RGB in [0, 1] with a label (may hold a newline).
      columns: tiles per row.
      tile: long edge of each tile in px.
      footer: text printed under the grid (e.g. which weights made the results), wrapped to the sheet's width.
      table: rows of cells (the first a header) drawn under the grid, each column as wide as its widest cell.
    Returns:
      (H, W, 3) float32 RGB in [0, 1].
    """
    font = _font(max(10, tile // 18))
    label_h = 3 * (tile // 18 + 4)
    rows = (len(tiles) + columns - 1) // columns
    line_h = tile // 18 + 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [max(measure.textlength(str(row[c]), font=font) for row in table) + 12
              for c in range(len(table[0]))] if table else []
    table_h = line_h * len(table) + (8 if table else 0)
    width = max(columns * (tile + 8) + 8, int(sum(widths)) + 16)
    footer_lines = _wrap(footer, lambda text: measure.textlength(text, font=font), width - 16) if footer else []
    footer_h = line_h * len(footer_lines) + (line_h // 2 if footer_lines else 0)
    grid_h = rows * (tile + label_h + 8) + 8
    sheet = Image.new("RGB", (width, grid_h + table_h + footer_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (rgb, label) in enumerate(tiles):
        r, c = divmod(i, columns)
        small = image.resize_long_edge(rgb, tile)
        x0, y0 = 8 + c * (tile + 8), 8 + r * (tile + label_h + 8)
        h, w = small.shape[:2]
        sheet.paste(Image.fromarray(image.to_uint8(small)), (x0 + (tile - w) // 2, y0 + (tile - h) // 2))
        draw.multiline_text((x0, y0 + tile + 2), label, fill="black", font=font, spacing=2)
    for r, row in enumerate(table):
        x = 8
        for c, cell in enumerate(row):
            draw.text((x, grid_h + r * line_h), str(cell), fill="black" if r else "#404040", font=font)
            x += widths[c]
    for k, text in enumerate(footer_lines):
        draw.text((8, grid_h + table_h + k * line_h), text, fill="black", font=font)
    return np.asarray(sheet, np.float32) / 255.0


def _wrap(text: str, length: Any, width: float) -> list[str]:
    """``text`` broken at spaces into lines no longer than ``width`` (as ``length`` measures them); a word
    longer than the width gets a line of its own."""
    lines: list[str] = []
    for word in text.split():
        if lines and length(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def loss_plot(path: str, curves: dict[str, dict[str, Any]], *, title: str = "") -> None:
    """Plots each run's total energy relative to its value at step 0 (log scale) and writes a PNG atomically.

    Args:
      curves: {label: run record["losses"]} with "step" and "total" lists.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for label, losses in curves.items():
        steps = np.asarray(losses["step"], float)
        total = np.asarray(losses["total"], float)
        if len(total) and total[0] > 0:
            ax.plot(steps, total / total[0], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("energy / energy at step 0")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, lambda f: f.write(buf.getvalue()), what="plot")
