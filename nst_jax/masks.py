"""Spatial control: label images (masks) that split the content and the styles into regions.

Gatys, Ecker, Bethge, Hertzmann, Shechtman, "Controlling Perceptual Factors in Neural Style Transfer", CVPR
2017, spatial control. A mask is an image whose distinct colours are regions. A content region is aligned with
the samples of the same colour in the style masks (pooled over the style images that have it, in proportion to
the blend weights); a content colour that no style mask has gets no style loss, or with ``fallback="whole"``
is aligned with the whole style.

Reading (:func:`read`, :func:`palette`, :func:`snap`). Masks are read at their own resolution. The listed
colours are the colours that cover at least :data:`MIN_SHARE` of some mask's pixels and lie farther than
:data:`MERGE_DISTANCE` (Euclidean, 0-255 RGB) from every more frequent listed colour; every pixel is then
snapped to the nearest listed colour, so JPEG noise and antialiased borders join a region. More than
:data:`MAX_REGIONS` listed colours is an error.

Resizing (:func:`soft_masks`, :func:`layer_masks`). Each region's indicator is resized to the image's run size
by area averaging (soft weights at borders, summing to 1 over the regions at every pixel), then to each layer's
resolution by the 2x2 average pooling of VGG's levels (a layer at level l has H >> l rows): Gatys' guided
feature maps. Each position's weight in a region is its share of that region.

All of this is host-side NumPy; :class:`RunMasks` holds one run size's arrays for :func:`nst_jax.transfer.targets`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from nst_jax import demo, image, vgg
from nst_jax.errors import ConfigError, ImageError

MAX_REGIONS = 16
"""More listed colours than this is refused: a label image has a few regions, not a photograph's colours."""

MIN_SHARE = 0.01
"""A colour is a region of a mask when it covers at least this share of the mask's pixels."""

MERGE_DISTANCE = 40.0
"""Colours closer than this (Euclidean, 0-255 RGB) to a more frequent listed colour are that colour."""

FALLBACKS = ("none", "whole")
"""What a content region with no style region gets: no style loss, or the whole style."""


def hex_colour(rgb: Sequence[int]) -> str:
    """(255, 0, 0) -> ``"#ff0000"``."""
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def read(path: str, flag: str, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file as (H, W, 3) uint8 RGB; ImageError naming the flag if it cannot be read. ``"demo"``: the
    label image of the package's demo image (:mod:`nst_jax.demo`) at ``image_hw``."""
    if path == demo.DEMO:
        drawn = demo.content_mask if flag == "content_mask" else demo.style_mask
        return drawn(max(image_hw)) if image_hw else drawn()
    try:
        rgb = image.load_image(path, min_side=1)
    except ImageError as e:
        raise ImageError(f"--{flag}={path}: {e}") from None
    return np.rint(rgb * 255.0).astype(np.uint8)


def palette(masks: Sequence[np.ndarray], names: Sequence[str] = ()) -> list[tuple[int, int, int]]:
    """The listed colours of several masks (H, W, 3) uint8, most frequent first (see the module docstring).

    Raises:
      ImageError: more than :data:`MAX_REGIONS` colours (naming the mask with the most, from ``names``).
    """
    listed: list[tuple[int, int, int]] = []
    candidates = []
    for i, m in enumerate(masks):
        colours, counts = np.unique(m.reshape(-1, 3), axis=0, return_counts=True)
        share = counts / counts.sum()
        for c, s in zip(colours, share, strict=True):
            if s >= MIN_SHARE:
                candidates.append((float(s), tuple(int(v) for v in c), i))
    for _, c, i in sorted(candidates, key=lambda t: (-t[0], t[1])):
        if all(np.linalg.norm(np.subtract(c, other)) > MERGE_DISTANCE for other in listed):
            listed.append(c)
            if len(listed) > MAX_REGIONS:
                where = names[i] if i < len(names) else f"mask {i}"
                raise ImageError(f"{where}: more than {MAX_REGIONS} colours (regions); a mask is a label image "
                                 f"with one flat colour per region")
    return listed


def snap(mask: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Each pixel's index in ``colours`` (the nearest one): (H, W, 3) uint8 -> (H, W) int32."""
    pal = np.asarray(colours, np.float32)
    flat = mask.reshape(-1, 3).astype(np.float32)
    labels = np.empty(flat.shape[0], np.int32)
    for start in range(0, flat.shape[0], 1 << 16):  # bounded memory for large masks
        d = np.sum(np.square(flat[start:start + (1 << 16), None, :] - pal[None]), axis=-1)
        labels[start:start + (1 << 16)] = np.argmin(d, axis=1)
    return labels.reshape(mask.shape[:2])


def check_shape(mask_hw: tuple[int, int], image_hw: tuple[int, int], what: str) -> None:
    """ImageError unless a mask of ``mask_hw`` has its image's aspect: the same size, or a multiple of it within
    a pixel (a mask drawn at another resolution)."""
    if tuple(mask_hw) == tuple(image_hw):
        return
    at_image = image.resized_shape(mask_hw, max(image_hw))
    if abs(at_image[0] - image_hw[0]) > 1 or abs(at_image[1] - image_hw[1]) > 1:
        raise ImageError(f"{what} is {mask_hw[1]}x{mask_hw[0]} px but its image is {image_hw[1]}x{image_hw[0]} px: "
                         f"a mask needs its image's size or aspect ratio")


def soft_masks(labels: np.ndarray, count: int, hw: tuple[int, int]) -> np.ndarray:
    """Region indicators of a label map (H, W) resized to ``hw`` by area averaging: (count, h, w) float32,
    summing to 1 over regions at every pixel."""
    h, w = hw
    out = np.empty((count, h, w), np.float32)
    for r in range(count):
        one = np.ascontiguousarray(labels == r, np.float32)
        if one.shape == (h, w):
            out[r] = one
        else:
            out[r] = np.asarray(Image.fromarray(one, mode="F").resize((w, h), Image.BOX))
    out = np.clip(out, 0.0, 1.0)
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-12)


def layer_masks(soft: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Soft masks (R, H, W) at each layer's resolution: 2x2 average pooling per VGG level, the odd last row and
    column dropped as VGG's pooling drops them. {layer: (R, H >> level, W >> level)}."""
    levels = {name: vgg.level(name) for name in layers}
    at = [soft]
    for _ in range(max(levels.values(), default=0)):
        m = at[-1]
        h, w = m.shape[1] // 2, m.shape[2] // 2
        at.append(m[:, : 2 * h, : 2 * w].reshape(m.shape[0], h, 2, w, 2).mean(axis=(2, 4)))
    return {name: at[level].astype(np.float32) for name, level in levels.items()}


@dataclasses.dataclass(frozen=True)
class Masks:
    """The masks of a run, read and snapped at their own resolution.

    ``colours``: the listed colours; ``content``: the content's label map (H, W) of indices into them;
    ``styles``: one label map per style image; ``fallback``: :data:`FALLBACKS`."""

    colours: tuple[tuple[int, int, int], ...]
    content: np.ndarray
    styles: tuple[np.ndarray, ...]
    fallback: str = "none"

    @property
    def trivial(self) -> bool:
        """One region covering the whole content whose style is every whole style image: the unmasked problem
        (a run then takes the unmasked code path, so its result is the unmasked one bit for bit)."""
        if len(self.colours) != 1:
            return False
        if all(np.all(lab == 0) for lab in self.styles):
            return True
        return self.fallback == "whole" and not any(np.any(lab == 0) for lab in self.styles)

    @property
    def digest(self) -> str:
        """SHA-256 of the label maps and colours (checkpoints refuse other masks)."""
        h = hashlib.sha256(repr((self.colours, self.fallback)).encode())
        for labels in (self.content, *self.styles):
            h.update(repr(labels.shape).encode())
            h.update(np.ascontiguousarray(labels, np.int32).tobytes())
        return h.hexdigest()

    def at(self, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]], layers: Sequence[str],
           blend: Sequence[float]) -> RunMasks:
        """The arrays of a run whose content is ``content_hw`` and styles ``style_hws`` (run sizes), with the
        style ``layers`` and the styles' ``blend`` weights.

        Raises:
          ImageError: a content region with a style loss, or a style region it uses, has no pixels at the run
            size or at one of the layers.
        """
        n = len(self.colours)
        content_soft = soft_masks(self.content, n, content_hw)
        styles_soft = [soft_masks(lab, n, hw) for lab, hw in zip(self.styles, style_hws, strict=True)]
        in_content = content_soft.reshape(n, -1).sum(axis=1)
        in_styles = [s.reshape(n, -1).sum(axis=1) for s in styles_soft]
        content_layers = layer_masks(content_soft, layers)
        style_layers = [layer_masks(s, layers) for s in styles_soft]
        regions, roles = [], []
        for r, colour in enumerate(self.colours):
            if in_content[r] <= 0:
                roles.append("unused")
                continue
            has = [bool(np.any(self.styles[k] == r)) for k in range(len(self.styles))]
            role = "region" if any(has) else ("whole" if self.fallback == "whole" else "none")
            roles.append(role)
            if role == "none":
                continue
            name = hex_colour(colour)
            if in_content[r] < 0.5:
                raise ImageError(f"--content_mask: region {name} has no pixels at {content_hw[1]}x{content_hw[0]} px "
                                 f"(draw it larger or raise --size)")
            for layer, m in content_layers.items():
                if not m[r].sum() > 0:
                    raise ImageError(f"--content_mask: region {name} has no pixels at layer {layer} "
                                     f"({m.shape[2]}x{m.shape[1]}) at {content_hw[1]}x{content_hw[0]} px "
                                     f"(draw it larger or raise --size)")
            if role == "region":
                for k, ok in enumerate(has):
                    for layer, m in style_layers[k].items():
                        if ok and not m[r].sum() > 0:
                            raise ImageError(f"--style_mask: region {name} of style {k + 1} has no pixels at layer "
                                             f"{layer} ({m.shape[2]}x{m.shape[1]}) (draw it larger or raise --size)")
            regions.append((r, role, has))
        if not regions:
            raise ConfigError("--content_mask: no content region has a style region of its colour in --style_mask "
                              "(use --mask_fallback=whole to give such regions the whole style)")
        content = {layer: np.stack([m[r] for r, _, _ in regions]) for layer, m in content_layers.items()}
        style = {}
        for layer in layers:
            rows = []
            for r, role, has in regions:
                # The mixture of the styles that have the region, in proportion to the blend weights: style k's
                # samples weighted by b_k v_k,i / V_k (v its region weights, V their sum), normalised to sum 1.
                use = has if role == "region" else [True] * len(self.styles)
                b = np.asarray([w if u else 0.0 for w, u in zip(blend, use, strict=True)], np.float64)
                if b.sum() <= 0:  # the styles that have it all have blend weight 0: use them equally
                    b = np.asarray(use, np.float64)
                b = b / b.sum()
                parts = []
                for k, sl in enumerate(style_layers):
                    v = sl[layer][r].reshape(-1) if role == "region" else np.ones(sl[layer][r].size, np.float32)
                    total = float(v.sum())
                    parts.append(v * (b[k] / total) if b[k] > 0 and total > 0 else np.zeros_like(v))
                rows.append(np.concatenate(parts).astype(np.float32))
            style[layer] = np.stack(rows)
        info = []
        for r, colour in enumerate(self.colours):
            info.append({"colour": hex_colour(colour), "style": roles[r],
                         "content_share": float(in_content[r] / content_soft[0].size),
                         "style_share": [float(s[r] / styles_soft[k][0].size) for k, s in enumerate(in_styles)]})
        return RunMasks(tuple(hex_colour(self.colours[r]) for r, _, _ in regions), content, style, info)


@dataclasses.dataclass(frozen=True)
class RunMasks:
    """One run size's masks.

    ``names``: the colours (``"#rrggbb"``) of the content regions with a style loss, in order;
    ``content``: {style layer: (R, h, w)} their soft weights at the content's layer resolution;
    ``style``: {style layer: (R, sum_k M'_k)} weights of the concatenated style samples per region (each row
    sums to 1: the blended mixture of the style regions, or of the whole styles for a fallback region);
    ``info``: every listed colour's role and pixel shares, for the run record."""

    names: tuple[str, ...]
    content: dict[str, np.ndarray]
    style: dict[str, np.ndarray]
    info: list[dict[str, Any]]

    @property
    def digest(self) -> str:
        """SHA-256 of the names and weight arrays (a checkpoint from other masks is refused)."""
        h = hashlib.sha256(repr(self.names).encode())
        for part in (self.content, self.style):
            for layer in sorted(part):
                h.update(layer.encode())
                h.update(np.ascontiguousarray(part[layer], np.float32).tobytes())
        return h.hexdigest()

    def arrays(self) -> dict[str, Any]:
        """What :func:`nst_jax.transfer.targets` takes: ``{"content": ..., "style": ...}``."""
        return {"content": self.content, "style": self.style}

    def record(self, final: dict[str, float] | None) -> list[dict[str, Any]]:
        """The run record's ``regions``: each colour's role (``region``: aligned with the same colour in the
        styles; ``whole``: the fallback; ``none``: no style loss; ``unused``: only in the style masks), its share
        of the content's and each style's pixels at the run size, and the final style energy of the region."""
        out = []
        for entry in self.info:
            item = dict(entry)
            if final is not None and f"style@{entry['colour']}" in final:
                item["style_loss"] = final[f"style@{entry['colour']}"]
            out.append(item)
        return out


def load(content_mask: str, style_masks: Sequence[str], content_hw: tuple[int, int],
         style_hws: Sequence[tuple[int, int]], fallback: str = "none") -> Masks:
    """Reads, checks and snaps the masks of a run whose images (as read, before resizing) are ``content_hw`` and
    ``style_hws``. ``style_masks`` may be empty (no style regions: only ``fallback="whole"`` makes sense then).

    Raises:
      ImageError: an unreadable mask, one whose size or aspect is not its image's, too many colours.
      ConfigError: a style mask count that is not the style count, an unknown fallback.
    """
    if fallback not in FALLBACKS:
        raise ConfigError(f"--mask_fallback={fallback}: expected one of {', '.join(FALLBACKS)}")
    if style_masks and len(style_masks) != len(style_hws):
        raise ConfigError(f"--style_mask: {len(style_masks)} mask(s) for {len(style_hws)} style image(s); give one "
                          f"per style, comma-separated in the order of --style")
    content = read(content_mask, "content_mask", content_hw)
    check_shape(content.shape[:2], content_hw, f"--content_mask={content_mask}")
    styles = []
    for path, hw in zip(style_masks, style_hws, strict=False):
        m = read(path, "style_mask", hw)
        check_shape(m.shape[:2], hw, f"--style_mask={path}")
        styles.append(m)
    names = [f"--content_mask={content_mask}", *(f"--style_mask={p}" for p in style_masks)]
    colours = palette([content, *styles], names)
    style_labels = [snap(m, colours) for m in styles]
    if not style_masks:  # no style regions: every style is "outside" every region (labels -1)
        style_labels = [np.full(hw, -1, np.int32) for hw in style_hws]
    return Masks(tuple(colours), snap(content, colours), tuple(style_labels), fallback)
