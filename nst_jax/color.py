"""Colour preservation: luminance-only transfer and colour histogram matching, as pure array functions.

Two ways to keep the content image's colours (Gatys, Bethge, Hertzmann, Shechtman, "Preserving Color in
Neural Artistic Style Transfer", arXiv 1606.05897; Gatys et al., "Controlling Perceptual Factors in Neural
Style Transfer", CVPR 2017, section 5):

  * ``"luminance"``: style transfer on the luminance channel alone. Both images are reduced to their
    luminance (:func:`luminance_only`), the style's luminance is matched to the content's mean and standard
    deviation (:func:`match_luminance`), the run optimises a grey image, and its luminance is finally put
    together with the content's chroma (:func:`recombine_luminance`).
  * ``"histogram"``: the style image is recoloured before the run so that its pixel colours have the content's
    mean and 3x3 covariance (:func:`match_color_histogram`); the run is then unchanged.

Images are RGB in [0, 1] with the channel last, shape (..., 3): (H, W, 3) for one image, (B, H, W, 3) for a
batch; statistics pool every pixel of every leading axis. Colour space: NTSC YIQ (Y is the Rec. 601 luma
0.299 R + 0.587 G + 0.114 B, so a grey pixel (g, g, g) has Y = g and I = Q = 0).

:func:`rgb_to_yiq`, :func:`yiq_to_rgb` and :func:`luminance_only` accept NumPy or JAX arrays and return the
same kind (so they can be used inside a jitted function); the matching functions are one-off preprocessing
and work in NumPy float64 whatever the input, returning the input's floating dtype (float32 otherwise).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PRESERVE_COLORS: tuple[str, ...] = ("none", "luminance", "histogram")
"""Values of ``--preserve_colors``: keep the style's colours, transfer luminance only, recolour the style."""

HISTOGRAM_MODES: tuple[str, ...] = ("chol", "sym", "pca")
"""Choices of the matrix A in :func:`match_color_histogram`."""

DEFAULT_EPS = 1e-5
"""Floor on colour variances (units: squared [0, 1] intensity; a standard deviation of about 0.003, under one
8-bit level). Variances and covariance eigenvalues at or above it are used as they are, so the matched moments
are exact; below it (grey or constant images, whose covariance is singular) they are raised to it, so the
maps stay finite."""

# NTSC 1953 (FCC) RGB -> YIQ. Rows sum to 1, 0, 0, so grey has no chroma.
_RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.5959, -0.2746, -0.3213],
        [0.2115, -0.5227, 0.3112],
    ],
    dtype=np.float64,
)
# The numerical inverse rather than the rounded textbook one, so the two transforms are exact inverses.
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


# ----------------------------------------------------------------------------------------------------------
# Checks and dtype handling


def _check_rgb(x: Any, name: str) -> None:
    shape = tuple(np.shape(x))
    if len(shape) < 1 or shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., 3) with the colour channel last, got shape {shape}")
    if int(np.prod(shape[:-1])) < 1:
        raise ValueError(f"{name} has no pixels (shape {shape})")


def _out_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)


def _as_numpy(x: Any, name: str) -> np.ndarray:
    """Checked (..., 3) NumPy array; float64 copy for the statistics, finite values only."""
    arr = np.asarray(x)
    _check_rgb(arr, name)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _linear_map(x: Any, matrix: np.ndarray, name: str) -> Any:
    """x @ matrix.T over the last axis; NumPy in, NumPy out; JAX (traced or not) in, JAX out."""
    _check_rgb(x, name)
    if isinstance(x, jax.Array):
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        return x.astype(dtype) @ jnp.asarray(matrix.T, dtype)
    arr = np.asarray(x)
    dtype = _out_dtype(arr)
    return (arr.astype(np.float64) @ matrix.T).astype(dtype)


# ----------------------------------------------------------------------------------------------------------
# YIQ


def rgb_to_yiq(rgb: Any) -> Any:
    """RGB (..., 3) in [0, 1] -> YIQ (..., 3): Y in [0, 1], I in about [-0.596, 0.596], Q in [-0.523, 0.523].

    Works on NumPy and JAX arrays (jit-compatible); the result has the input's floating dtype.
    """
    return _linear_map(rgb, _RGB_TO_YIQ, "rgb")


def yiq_to_rgb(yiq: Any) -> Any:
    """YIQ (..., 3) -> RGB (..., 3), the exact inverse of :func:`rgb_to_yiq` (no clipping: a YIQ triple
    outside the RGB cube maps to values outside [0, 1])."""
    return _linear_map(yiq, _YIQ_TO_RGB, "yiq")


def luminance_only(rgb: Any) -> Any:
    """RGB (..., 3) -> grey RGB (..., 3) with every channel equal to the luminance Y of ``rgb``.

    This is ``yiq_to_rgb`` of (Y, 0, 0): the image the luminance-only run sees. Values stay in [0, 1]
    because Y is a convex combination of R, G, B. NumPy or JAX in, same kind out.
    """
    _check_rgb(rgb, "rgb")
    y = rgb_to_yiq(rgb)[..., :1]
    xp = jnp if isinstance(y, jax.Array) else np
    return xp.concatenate([y, y, y], axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Luminance-only transfer


def match_luminance(
    style_rgb: Any, content_rgb: Any, *, eps: float = DEFAULT_EPS, clip: bool = True
) -> np.ndarray:
    """The style image's luminance, matched to the content's, as a grey RGB image (style's shape).

    Gatys et al. 2016 (arXiv 1606.05897), "luminance-only transfer": before the run, the style's luminance
    Y_s is shifted and scaled to the content luminance's mean and standard deviation,

        Y_s' = sd_c / sd_s * (Y_s - mu_s) + mu_c,

    so that the style's overall brightness and contrast do not leak into the result. sd_s is taken as
    sqrt(max(var_s, eps)): exact for any style with var_s >= eps, and a constant style gives Y_s' = mu_c
    instead of 0/0.

    Args:
      style_rgb: (..., 3) RGB in [0, 1].
      content_rgb: (..., 3) RGB in [0, 1]; any number of pixels.
      eps: non-negative floor on the style's luminance variance.
      clip: clip to [0, 1]; ``False`` returns the affine map itself (its Y has exactly the content's mean and
        standard deviation when var_s >= eps).

    Returns:
      (style shape) NumPy array, every channel equal to Y_s', in the style's floating dtype.
    """
    style = _as_numpy(style_rgb, "style_rgb")
    content = _as_numpy(content_rgb, "content_rgb")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    y_s = style.astype(np.float64) @ _RGB_TO_YIQ[0]
    y_c = content.astype(np.float64) @ _RGB_TO_YIQ[0]
    sd_s = np.sqrt(max(y_s.var(), eps))
    # eps = 0 on a constant style: every deviation is 0, so scale 0 gives mu_c rather than NaN.
    scale = y_c.std() / sd_s if sd_s > 0 else 0.0
    y = scale * (y_s - y_s.mean()) + y_c.mean()
    if clip:
        y = np.clip(y, 0.0, 1.0)
    return np.repeat(y[..., None], 3, axis=-1).astype(_out_dtype(style))


def recombine_luminance(result_rgb: Any, content_rgb: Any, *, clip: bool = True) -> np.ndarray:
    """The result's luminance with the content's chroma: ``--preserve_colors=luminance``'s final image.

    YIQ of the result (its Y; for a grey result Y is any one channel) and of the content (its I and Q),
    combined pixel by pixel and converted back to RGB.

    Args:
      result_rgb: (..., 3) RGB, the stylised (usually grey) image.
      content_rgb: RGB of the same shape as ``result_rgb`` (resize it first).
      clip: clip to [0, 1] (the default, for saving); a bright Y with a saturated chroma can leave the cube.

    Returns:
      NumPy array of ``result_rgb``'s shape and floating dtype.
    """
    result = _as_numpy(result_rgb, "result_rgb")
    content = _as_numpy(content_rgb, "content_rgb")
    if result.shape != content.shape:
        raise ValueError(
            f"result_rgb and content_rgb must have the same shape, got {result.shape} and {content.shape}"
        )
    y = result.astype(np.float64) @ _RGB_TO_YIQ[0]
    iq = content.astype(np.float64) @ _RGB_TO_YIQ[1:].T
    rgb = np.concatenate([y[..., None], iq], axis=-1) @ _YIQ_TO_RGB.T
    if clip:
        rgb = np.clip(rgb, 0.0, 1.0)
    return rgb.astype(_out_dtype(result))


# ----------------------------------------------------------------------------------------------------------
# Colour histogram matching


def _moments(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rgb.reshape(-1, 3).astype(np.float64)
    mu = x.mean(axis=0)
    d = x - mu
    return mu, d.T @ d / len(d)


def _floor_eigenvalues(cov: np.ndarray, eps: float) -> np.ndarray:
    """cov with its eigenvalues raised to at least eps (no change when all are >= eps)."""
    w, v = np.linalg.eigh(cov)
    if w.min() >= eps:
        return cov
    return (v * np.maximum(w, eps)) @ v.T


def _sym_power(cov: np.ndarray, power: float) -> np.ndarray:
    """cov^power for a symmetric positive-definite 3x3 matrix, by eigendecomposition."""
    w, v = np.linalg.eigh(cov)
    return (v * w**power) @ v.T


def color_transform(cov_style: np.ndarray, cov_content: np.ndarray, mode: str = "sym") -> np.ndarray:
    """A (3, 3) with A cov_style A^T = cov_content, both covariances symmetric positive definite.

    Gatys et al. 2017, section 5.2 ("colour histogram matching"); mode names follow their code:
      * ``"chol"``: A = L_c L_s^-1, with L the Cholesky factors (cov = L L^T).
      * ``"pca"``: A = cov_c^1/2 cov_s^-1/2 (the "Image Analogies" colour transfer of Hertzmann et al. 2001;
        whitening and recolouring along the principal axes, square roots by eigendecomposition).
      * ``"sym"``: A = cov_s^-1/2 (cov_s^1/2 cov_c cov_s^1/2)^1/2 cov_s^-1/2, the unique symmetric positive-
        definite solution: the linear map that moves colours least in mean squared distance (the optimal
        transport map between the two Gaussians).
    All three match the first two moments exactly; they differ in how they rotate the colours.
    """
    if mode not in HISTOGRAM_MODES:
        raise ValueError(f"mode must be one of {', '.join(HISTOGRAM_MODES)}, got {mode!r}")
    for name, cov in (("cov_style", cov_style), ("cov_content", cov_content)):
        if np.shape(cov) != (3, 3):
            raise ValueError(f"{name} must be (3, 3), got shape {np.shape(cov)}")
        if np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError(f"{name} is singular (a grey or constant image); use eps > 0")
    if mode == "chol":
        l_s = np.linalg.cholesky(cov_style)
        l_c = np.linalg.cholesky(cov_content)
        return l_c @ np.linalg.inv(l_s)
    if mode == "pca":
        return _sym_power(cov_content, 0.5) @ _sym_power(cov_style, -0.5)
    s_half = _sym_power(cov_style, 0.5)
    s_inv_half = _sym_power(cov_style, -0.5)
    middle = s_half @ cov_content @ s_half
    middle = _sym_power((middle + middle.T) / 2, 0.5)  # symmetrise away rounding before eigh
    return s_inv_half @ middle @ s_inv_half


def match_color_histogram(
    style_rgb: Any,
    content_rgb: Any,
    mode: str = "sym",
    *,
    eps: float = DEFAULT_EPS,
    clip: bool = True,
) -> np.ndarray:
    """Style image recoloured to the content's colour mean and covariance: ``--preserve_colors=histogram``.

    Each style pixel x (an RGB 3-vector) becomes x' = A (x - mu_s) + mu_c, with A from
    :func:`color_transform` (``mode`` ``"chol"``, ``"sym"`` or ``"pca"``).

    Regularisation: the eigenvalues of both covariances are floored at ``eps``, so grey or constant images
    (singular covariance) give a finite map, e.g. a constant style becomes the constant mu_c. Gatys' code adds
    ``eps * I`` instead; that biases the result's covariance by eps (I - A A^T), which is large when the style
    has a small colour variance in some direction (natural images often have eigenvalues near 1e-4), whereas
    the floor leaves the map exact whenever every eigenvalue is >= eps. ``eps=0`` disables the floor (a
    singular covariance is then a ValueError).

    Args:
      style_rgb: (..., 3) RGB in [0, 1], the image to recolour.
      content_rgb: (..., 3) RGB in [0, 1], whose colour statistics to take; any number of pixels.
      mode: ``"chol"``, ``"sym"`` (default) or ``"pca"``.
      eps: non-negative floor on the eigenvalues of both colour covariances (squared [0, 1] intensity).
      clip: clip to [0, 1] (the default, for use as an image); ``False`` returns the affine map itself, whose
        mean and covariance are the content's.

    Returns:
      NumPy array of the style's shape and floating dtype.
    """
    style = _as_numpy(style_rgb, "style_rgb")
    content = _as_numpy(content_rgb, "content_rgb")
    if mode not in HISTOGRAM_MODES:
        raise ValueError(f"mode must be one of {', '.join(HISTOGRAM_MODES)}, got {mode!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mu_s, cov_s = _moments(style)
    mu_c, cov_c = _moments(content)
    a = color_transform(_floor_eigenvalues(cov_s, eps), _floor_eigenvalues(cov_c, eps), mode)
    out = (style.astype(np.float64) - mu_s) @ a.T + mu_c
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(_out_dtype(style))
