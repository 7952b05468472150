"""Optical flow between video frames, warping by it, and where it can be trusted (Ruder et al. 2016).

Ruder, Dosovitskiy and Brox, "Artistic style transfer for videos" (GCPR 2016), keep a stylised video stable by
starting each frame from the previous stylised frame warped by the optical flow and by penalising, on the pixels
where the flow holds, the difference from it. Which pixels hold is their forward-backward consistency check
(after Sundaram, Brox and Keutzer 2010): with ``w`` the forward flow (frame i-1 to i), ``w_back`` the backward
flow (frame i to i-1) and ``w~(p) = w(p + w_back(p))`` the forward flow seen from frame i,

* disoccluded:      |w~ + w_back|^2 > 0.01 (|w~|^2 + |w_back|^2) + 0.5
* motion boundary:  |grad u|^2 + |grad v|^2 > 0.01 |w_back|^2 + 0.002   (u, v: w_back's components)

and a pixel whose flow leaves the image has nothing to follow either. The flow itself comes from OpenCV (DIS,
Kroeger et al. 2016, or Farneback 2003); everything else is NumPy on (H, W, ...) arrays.

Conventions: a flow is (H, W, 2) float32 in pixels, channel 0 along x (columns), 1 along y (rows); ``flow(a, b)``
maps each pixel p of ``a`` to p + flow(p) in ``b``, so ``warp(b, flow(a, b))`` looks like ``a``. Images are
(H, W, 3) float32 RGB in [0, 1].
"""

from __future__ import annotations

import dataclasses

import numpy as np

METHODS = ("dis", "farneback")
OCCLUSION_RELATIVE, OCCLUSION_ABSOLUTE = 0.01, 0.5
BOUNDARY_RELATIVE, BOUNDARY_ABSOLUTE = 0.01, 0.002
CUT_MIN_KEPT = 0.5
"""A frame whose flow keeps fewer pixels than this fraction starts afresh (a scene cut)."""
CUT_MAX_HISTOGRAM = 0.4
"""A frame whose colour histogram is this far from the previous one's (Hellinger distance) starts afresh."""
HISTOGRAM_BINS = 8


def gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> (H, W) uint8 luma (Rec. 601), what OpenCV's flow takes."""
    y = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "dis") -> np.ndarray:
    """The flow from frame ``a`` to frame ``b`` ((H, W, 3) RGB in [0, 1]): (H, W, 2) float32, ``a(p) ~ b(p +
    flow(p))``. ``dis``: OpenCV's dense inverse search, medium preset, variational refinement on; ``farneback``:
    OpenCV's polynomial-expansion flow."""
    import cv2  # opencv-python-headless: only flow needs it

    ga, gb = gray(a), gray(b)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        # Small frames (tests, previews): patches no larger than a quarter of the short side.
        size = max(4, min(dis.getPatchSize(), min(ga.shape) // 4))
        dis.setPatchSize(size)
        dis.setPatchStride(max(2, size // 2))
        return dis.calc(ga, gb, None).astype(np.float32)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3,
                                            poly_n=5, poly_sigma=1.2, flags=0).astype(np.float32)
    raise ValueError(f"unknown flow method {method!r}; expected one of {', '.join(METHODS)}")


def _keys(t: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (1981) at offsets ``t``: 1 at 0, 0 at the other integers, reproduces
    quadratics (a = -0.5)."""
    t = np.abs(t)
    inner = (a + 2) * t**3 - (a + 3) * t**2 + 1
    outer = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t <= 1, inner, np.where(t < 2, outer, 0.0)).astype(np.float32)


def sample(img: np.ndarray, x: np.ndarray, y: np.ndarray, order: int = 1) -> np.ndarray:
    """Samples of ``img`` ((H, W) or (H, W, C)) at real positions ``x`` (columns), ``y`` (rows) of any shape,
    positions clamped to the image (the border pixels repeat outward). ``order`` 1: bilinear; 3: Keys' cubic
    convolution (4x4 taps), which blurs far less than bilinear: warping a frame again and again (every frame
    of a clip starts from the last one warped) compounds an interpolation's blur."""
    h, w = img.shape[:2]
    x = np.clip(np.asarray(x, np.float32), 0.0, w - 1.0)
    y = np.clip(np.asarray(y, np.float32), 0.0, h - 1.0)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    taps = range(0, 2) if order == 1 else range(-1, 3)
    if order not in (1, 3):
        raise ValueError(f"order must be 1 (bilinear) or 3 (cubic), not {order}")
    kernel = (lambda t: np.maximum(0.0, 1.0 - np.abs(t)).astype(np.float32)) if order == 1 else _keys
    out = 0.0
    for j in taps:
        wy = kernel(y - (y0 + j))
        rows = np.clip(y0 + j, 0, h - 1)
        for i in taps:
            wx = kernel(x - (x0 + i))
            weight = wx * wy
            out = out + img[rows, np.clip(x0 + i, 0, w - 1)] * (weight[..., None] if img.ndim == 3 else weight)
    return np.asarray(out, np.float32)


def warp(img: np.ndarray, flow: np.ndarray, order: int = 1) -> np.ndarray:
    """``img`` ((H, W) or (H, W, C)) pulled back along ``flow`` ((H, W, 2)): out(p) = img(p + flow(p)),
    interpolated (``order``, :func:`sample`), the border repeated outward. With ``flow = optical_flow(a, b)``,
    ``warp(b, flow)`` is ``b`` moved onto ``a``'s pixels."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return sample(img, xs + flow[..., 0], ys + flow[..., 1], order)


def warp_frame(rgb: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """A stylised frame warped along ``flow`` for the next frame: cubic (:func:`sample`), clipped to [0, 1]."""
    return np.clip(warp(rgb, flow, order=3), 0.0, 1.0)


def consistency(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Where the backward flow of frame i (to frame i-1) can be trusted: (H, W) float32, 1 kept, 0 not.

    ``forward``: the flow from frame i-1 to frame i; ``backward``: from frame i to frame i-1 (both (H, W, 2)).
    Not kept: disocclusions and motion boundaries (the module docstring's check, Ruder et al. 2016) and pixels
    whose flow leaves the image."""
    h, w = backward.shape[:2]
    fw = warp(forward, backward)  # the forward flow at the point each pixel of frame i came from
    occluded = (np.sum(np.square(fw + backward), -1)
                > OCCLUSION_RELATIVE * (np.sum(np.square(fw), -1) + np.sum(np.square(backward), -1))
                + OCCLUSION_ABSOLUTE)
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    boundary = (du_x**2 + du_y**2 + dv_x**2 + dv_y**2
                > BOUNDARY_RELATIVE * np.sum(np.square(backward), -1) + BOUNDARY_ABSOLUTE)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + backward[..., 0], ys + backward[..., 1]
    outside = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    return (~(occluded | boundary | outside)).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Hellinger distance between the joint RGB histograms (``bins`` per channel) of two images: 0 the same
    colours, 1 no colour in common. A scene cut changes it a lot, camera motion little."""

    def hist(rgb: np.ndarray) -> np.ndarray:
        q = np.minimum((np.asarray(rgb) * bins).astype(np.int64), bins - 1).reshape(-1, 3)
        counts = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3).astype(np.float64)
        return counts / counts.sum()

    overlap = float(np.sum(np.sqrt(hist(a) * hist(b))))
    return float(np.sqrt(max(0.0, 1.0 - overlap)))


@dataclasses.dataclass(frozen=True)
class Motion:
    """What frame i needs from frame i-1: the backward flow ((H, W, 2), i to i-1), the kept pixels ((H, W)
    float32 0/1, :func:`consistency`), their fraction, the histogram distance and whether it is a scene cut."""

    backward: np.ndarray
    mask: np.ndarray
    kept_fraction: float
    histogram_distance: float
    cut: bool


def motion(previous: np.ndarray, current: np.ndarray, method: str = "dis", min_kept: float = CUT_MIN_KEPT,
           max_histogram: float = CUT_MAX_HISTOGRAM) -> Motion:
    """The flow from ``current`` back to ``previous`` (frames (H, W, 3) RGB in [0, 1] of the same size), where it
    holds, and whether ``current`` starts a new scene: fewer than ``min_kept`` of its pixels kept, or a colour
    histogram more than ``max_histogram`` away."""
    forward = optical_flow(previous, current, method)
    backward = optical_flow(current, previous, method)
    mask = consistency(forward, backward)
    kept = float(mask.mean())
    distance = histogram_distance(previous, current)
    return Motion(backward, mask, kept, distance, kept < min_kept or distance > max_histogram)


def warping_error(stylised: np.ndarray, warped_previous: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference (RGB in [0, 1], over the kept pixels and the 3 channels) between a stylised frame
    and the previous stylised frame warped onto it: how much the video flickers where the flow holds. NaN when
    no pixel is kept."""
    kept = float(mask.sum())
    if kept == 0:
        return float("nan")
    diff = np.square(np.asarray(stylised, np.float64) - np.asarray(warped_previous, np.float64))
    return float(np.sum(mask[..., None] * diff) / (3.0 * kept))


def end_point_error(flow: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean Euclidean distance (px) between two flows ((H, W, 2)), over ``mask``'s pixels (default all)."""
    err = np.sqrt(np.sum(np.square(flow - truth), -1))
    if mask is None:
        return float(err.mean())
    return float(np.sum(err * mask) / max(float(mask.sum()), 1.0))


def camera_clip(photo: np.ndarray, frames: int, hw: tuple[int, int], pan: tuple[float, float] = (1.5, 0.5),
                zoom: float = 1.01) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A clip with known motion, to measure the flow and the temporal term: a virtual camera over ``photo``
    ((H, W, 3) RGB in [0, 1]) that moves ``pan`` (x, y) frame pixels and zooms in by ``zoom`` every frame.

    Frame k's pixel p shows the photo at ``c + s_k (p - c_f) + k t``, s_k = s_0 / zoom**k, t the pan in photo
    pixels, c and c_f the photo's and the frame's centres; s_0 fits the frame in 60% of the photo's short side
    so the camera stays inside it. Rendered with OpenCV's bilinear remap of the photo resized (antialiased) so
    that a frame pixel is about one of its pixels.

    Returns:
      (the frames, (H, W, 3) float32; the true backward flows, (H, W, 2) float32: entry k-1 maps frame k's
      pixels to frame k-1's, ``warp(frame[k-1], flow) ~ frame[k]`` where no pixel is disoccluded).
    """
    import cv2

    h, w = hw
    src = np.asarray(photo, np.float32)
    from nst_jax import image  # resizing, antialiased

    # The photo resized once (antialiased) so that a frame pixel covers about one pixel of it.
    factor = max(h, w) / (0.6 * min(src.shape[:2]))

    src = image.resize(src, (max(2, round(src.shape[0] * factor)), max(2, round(src.shape[1] * factor))))
    sh, sw = src.shape[:2]
    s0 = 0.6 * min(sh, sw) / max(h, w)
    centre, fc = np.array([(sw - 1) / 2, (sh - 1) / 2]), np.array([(w - 1) / 2, (h - 1) / 2])
    t = np.asarray(pan, np.float64) * s0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.stack([xs, ys], -1)

    def to_photo(k: int, pts: np.ndarray) -> np.ndarray:
        return centre + (s0 / zoom**k) * (pts - fc) + k * t

    def from_photo(k: int, q: np.ndarray) -> np.ndarray:
        return fc + (q - centre - k * t) / (s0 / zoom**k)

    out, flows = [], []
    for k in range(frames):
        q = to_photo(k, p).astype(np.float32)
        out.append(np.clip(cv2.remap(src, q[..., 0], q[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT),
                           0.0, 1.0))
        if k:
            flows.append((from_photo(k - 1, to_photo(k, p)) - p).astype(np.float32))
    return out, flows
