"""The style-transfer run of :mod:`nst_jax.transfer` in PyTorch: the baseline nst_jax is timed against.

Same algorithm, same numbers: the VGG-19 weights come from the same torchvision ``.pth``; the image variable
lives in the same preprocessed space, starts from the same image and is updated by Adam with the same settings
(``torch.optim.Adam`` and ``optax.adam`` share lr, betas (0.9, 0.999), eps 1e-8 and the update formula), then
clipped to the pixel range; the energy is the same sum of content, style and TV terms with the same per-layer
multipliers (passed in, computed once by nst_jax, so both frameworks optimise one energy). Style losses
(the twins of :func:`nst_jax.losses.style_loss`):

* gram:     1/(4 N^2) ||F^T F / M - G_S||_F^2
* linear:   ||mu_F - mu_S||^2                                  (MMD^2, linear kernel, closed form)
* poly:     ||G_F - G_S||_F^2 + 2c ||mu_F - mu_S||^2 with G = F^T F / M   (MMD^2, (x.y + c)^2, closed form)
* gaussian: the paper's linear-time paired estimator, gamma = 1 / mean squared distance of the sampled pairs
            (no gradient through gamma); the permutations may be passed in, so a run can replay nst_jax's
* bn:       1/N sum_c (mu_F,c - mu_S,c)^2 + (sd_F,c - sd_S,c)^2, population sd, sqrt with gradient 0 at 0
* swd:      mean over K unit directions p of mean_i (sort(F p)_i - q_i)^2, q the style's quantiles at F's
            levels; the directions may be passed in, so a run can replay nst_jax's
* w2:       ||mu_F - mu_S||^2 + tr C_F + tr C_S - 2 tr((C_S^1/2 C_F C_S^1/2)^1/2) by eigendecomposition, the
            eigenvalues at rounding level without gradient
* coral:    ||C_F - C_S||_F^2 / (4 N^2), population covariances
* mkmmd:    the Gaussian's paired estimator with the mean of B kernels, gamma_b = s_b x the bandwidth rule

What a PyTorch practitioner would do for speed, and is done here: weights frozen (``requires_grad_(False)``,
no weight gradients), the network cut after the deepest layer used, targets computed once under
``torch.inference_mode``, optional ``channels_last`` memory format, and optionally ``torch.compile`` of the
feature extractor (one graph per image size, shared by every method).

Tensors are NCHW (batch 1); one layer's samples are the (M, N) matrix of its M = h*w positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchvision

from nst_jax import losses, vgg

MKMMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclasses.dataclass(frozen=True)
class Term:
    """One style method with its fusion weight and parameters (``c`` for poly)."""

    method: str
    weight: float = 1.0
    c: float = 1.0


def load_features(
    pth: str, deepest: str, pooling: str = "max", device: str | torch.device = "cpu", channels_last: bool = False
) -> torch.nn.Sequential:
    """torchvision ``vgg19().features`` with the ``.pth``'s weights, cut after ``deepest``, frozen, eval mode.

    Args:
      pth: a torchvision VGG-19 state dict (``torch.save(model.state_dict())``), read with ``weights_only``.
      deepest: the last layer kept, a name of :data:`nst_jax.vgg.LAYERS` (their order is torchvision's).
      pooling: ``"max"`` (torchvision) or ``"avg"`` (2x2 average pooling, the paper's choice).
    """
    model = torchvision.models.vgg19()
    model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
    features = model.features[: vgg.LAYERS.index(deepest) + 1]
    if pooling == "avg":
        for i, module in enumerate(features):
            if isinstance(module, torch.nn.MaxPool2d):
                features[i] = torch.nn.AvgPool2d(2, 2)
    elif pooling != "max":
        raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
    features = features.requires_grad_(False).eval().to(device)
    if channels_last:
        features = features.to(memory_format=torch.channels_last)
    return features


def extract(features: torch.nn.Sequential, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """{layer: (1, C, h, w)} activations of the (1, 3, H, W) input at ``layers`` (names of vgg.LAYERS)."""
    wanted = {vgg.LAYERS.index(name): name for name in layers}
    out = {}
    for i, module in enumerate(features):
        x = module(x)
        if i in wanted:
            out[wanted[i]] = x
    return out


def samples(f: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) activations -> (h*w, C) sample matrix (a view in either memory format)."""
    return f[0].flatten(1).T


def gram(x: torch.Tensor) -> torch.Tensor:
    """(M, N) -> (N, N) Gram matrix normalised by M."""
    return x.T @ x / x.shape[0]


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    pos = v > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, v, torch.ones_like(v))), torch.zeros_like(v))


def bn_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population standard deviation of (M, N) samples."""
    mu = x.mean(0)
    return mu, _safe_sqrt(torch.square(x - mu).mean(0))


def _safe_inverse(v: torch.Tensor) -> torch.Tensor:
    pos = v > 0
    return torch.where(pos, 1.0 / torch.where(pos, v, torch.ones_like(v)), torch.ones_like(v))


def _gaussian_rows(a: torch.Tensor, b: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    # a.a + b.b - 2 a.b, clamped at 0: the expansion nst_jax.kernels.gaussian uses; several bandwidths: the mean.
    sq = torch.clamp((a * a).sum(1) + (b * b).sum(1) - 2.0 * (a * b).sum(1), min=0.0)
    if gamma.ndim == 1:
        return torch.exp(-gamma[None, :] * sq[:, None]).mean(1)
    return torch.exp(-gamma * sq)


def gaussian_linear_time(
    x: torch.Tensor, y: torch.Tensor, perm_x: torch.Tensor, perm_y: torch.Tensor,
    scales: Sequence[float] | None = None,
) -> torch.Tensor:
    """The paper's paired MMD^2 estimator with the Gaussian kernel and its bandwidth rule (times each of
    ``scales``, the multi-kernel MMD, if given).

    Args:
      x: (M, N); y: (M', N).
      perm_x, perm_y: permutations (at least 2K entries each, K = min(M // 2, M' // 2)) of the rows of x and
        y: rows perm[0::2] are paired with rows perm[1::2].
    """
    k = min(x.shape[0] // 2, y.shape[0] // 2)
    xs, ys = x[perm_x[: 2 * k]], y[perm_y[: 2 * k]]
    x0, x1, y0, y1 = xs[0::2], xs[1::2], ys[0::2], ys[1::2]
    with torch.no_grad():
        pairs = ((x0, x1), (y0, y1), (x0, y1), (y0, x1))
        mean_sq = torch.cat([torch.square(a - b).sum(1) for a, b in pairs]).mean()
        gamma = _safe_inverse(mean_sq)
        if scales is not None:
            gamma = gamma * torch.tensor(scales, dtype=x.dtype, device=x.device)
    h = (_gaussian_rows(x0, x1, gamma) + _gaussian_rows(y0, y1, gamma)
         - _gaussian_rows(x0, y1, gamma) - _gaussian_rows(y0, x1, gamma))
    return h.mean()


def covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population covariance of (M, N) samples."""
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / x.shape[0]


def _sqrt_trace(a: torch.Tensor) -> torch.Tensor:
    # sum sqrt(lambda_i); eigenvalues at the spectrum's rounding level give no gradient (nst_jax's sqrt_trace).
    a = 0.5 * (a + a.T)
    w = torch.linalg.eigvalsh(a)
    keep = w > a.shape[0] * torch.finfo(a.dtype).eps * w.abs().max().detach()
    kept = torch.sqrt(torch.where(keep, w, torch.ones_like(w)))
    return torch.where(keep, kept, torch.sqrt(torch.clamp(w, min=0.0)).detach()).sum()


def _psd_sqrt(c: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(c)
    return (v * torch.sqrt(torch.clamp(w, min=0.0))) @ v.T


def _quantiles(sorted_y: torch.Tensor, m: int) -> torch.Tensor:
    mp = sorted_y.shape[0]
    if m == mp:
        return sorted_y
    t = np.clip((np.arange(m) + 0.5) * (mp / m) - 0.5, 0.0, mp - 1)
    j0 = np.floor(t).astype(np.int64)
    j1 = np.minimum(j0 + 1, mp - 1)
    w = torch.as_tensor(t - j0, dtype=sorted_y.dtype, device=sorted_y.device)[:, None]
    return sorted_y[torch.as_tensor(j0)] * (1.0 - w) + sorted_y[torch.as_tensor(j1)] * w


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Mean over the (N, K) directions p of the squared 1-D W2 of the projections (sorting)."""
    px = torch.sort(x @ p, dim=0).values
    return torch.square(px - _quantiles(torch.sort(y @ p, dim=0).values, x.shape[0])).mean()


def _moments_target(term: Term, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"gram": gram(y), "mean": y.mean(0)}


def _bn_target(term: Term, y: torch.Tensor) -> dict[str, torch.Tensor]:
    mu, sd = bn_stats(y)
    return {"mean": mu, "sd": sd}


def _w2_target(term: Term, y: torch.Tensor) -> dict[str, torch.Tensor]:
    mu, c = covariance(y)
    return {"mean": mu, "cov_sqrt": _psd_sqrt(c), "trace": torch.trace(c)}


def _gram_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    n = x.shape[1]
    return torch.square(gram(x) - target["gram"]).sum() / (4.0 * n * n)


def _linear_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    return torch.square(x.mean(0) - target["mean"]).sum()


def _poly_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    return (torch.square(gram(x) - target["gram"]).sum()
            + 2.0 * term.c * torch.square(x.mean(0) - target["mean"]).sum())


def _bn_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    mu, sd = bn_stats(x)
    return (torch.square(mu - target["mean"]) + torch.square(sd - target["sd"])).mean()


def _gaussian_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    y = target["samples"]
    if perms is None:
        perms = (torch.randperm(x.shape[0], device=x.device), torch.randperm(y.shape[0], device=y.device))
    return gaussian_linear_time(x, y, *perms, scales=MKMMD_SCALES if term.method == "mkmmd" else None)


def _swd_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    if perms is None:
        perms = torch.randn(x.shape[1], x.shape[1], device=x.device)
        perms = perms / perms.norm(dim=0, keepdim=True)
    return sliced_wasserstein(x, target["samples"], perms)


def _w2_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    mu, c = covariance(x)
    s = target["cov_sqrt"]
    return (torch.square(mu - target["mean"]).sum() + torch.trace(c) + target["trace"]
            - 2.0 * _sqrt_trace(s @ c @ s))


def _coral_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor], perms: Any) -> torch.Tensor:
    n = x.shape[1]
    return torch.square(covariance(x)[1] - target["cov"]).sum() / (4.0 * n * n)


def _samples_target(term: Term, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"samples": y}


# The twins: per method, its style target and its loss (the twins of the method's target and loss in nst_jax).
TWINS: dict[str, tuple[Callable[..., dict[str, torch.Tensor]], Callable[..., torch.Tensor]]] = {
    "gram": (_moments_target, _gram_loss),
    "linear": (lambda term, y: {"mean": y.mean(0)}, _linear_loss),
    "poly": (_moments_target, _poly_loss),
    "bn": (_bn_target, _bn_loss),
    "w2": (_w2_target, _w2_loss),
    "coral": (lambda term, y: {"cov": covariance(y)[1]}, _coral_loss),
    "gaussian": (_samples_target, _gaussian_loss),
    "mkmmd": (_samples_target, _gaussian_loss),
    "swd": (_samples_target, _swd_loss),
}
METHODS: tuple[str, ...] = tuple(m for m in losses.METHODS if m in TWINS)
"""The methods of nst_jax's registry that have a PyTorch twin here, in the registry's order."""


def _twin(term: Term) -> tuple[Callable[..., dict[str, torch.Tensor]], Callable[..., torch.Tensor]]:
    if term.method not in TWINS:
        raise ValueError(f"unknown style method {term.method!r} (no PyTorch twin); known: {', '.join(METHODS)}")
    return TWINS[term.method]


def style_target(term: Term, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Style-side statistics of one layer (computed once): y (M', N) -> tensors."""
    return _twin(term)[0](term, y)


def style_loss(term: Term, x: torch.Tensor, target: Mapping[str, torch.Tensor],
               perms: Any = None) -> torch.Tensor:
    """One layer's style loss of the generated samples x (M, N); the twin of nst_jax.losses.style_loss.

    ``perms``: the Gaussian's and mkmmd's row permutations, or swd's (N, K) directions (drawn here if None)."""
    return _twin(term)[1](term, x, target, perms)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences of adjacent pixels (free boundary), (1, 3, H, W) -> scalar."""
    return (torch.square(x[..., 1:, :] - x[..., :-1, :]).sum()
            + torch.square(x[..., :, 1:] - x[..., :, :-1]).sum())


def to_nchw(image_hwc: np.ndarray, device: str | torch.device, channels_last: bool) -> torch.Tensor:
    """(H, W, 3) array -> (1, 3, H, W) float32 tensor on ``device``."""
    t = torch.as_tensor(np.ascontiguousarray(np.asarray(image_hwc, np.float32).transpose(2, 0, 1)))[None]
    t = t.to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def make_extractor(
    features: torch.nn.Sequential, layers: Sequence[str], compile: bool = False
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """x -> :func:`extract` (features, x, layers), under ``torch.compile`` if asked (compiled on first call)."""
    layers = tuple(layers)

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return extract(features, x, layers)

    return torch.compile(run) if compile else run


Perms = Mapping[tuple[int, str], Any]
"""{(term index, layer): (permutation of x's rows, permutation of y's rows)} for the Gaussian and mkmmd terms,
or the (N, K) directions of an swd term."""


class StyleTransfer:
    """The optimisation problem and its Adam loop in PyTorch.

    Args:
      features: from :func:`load_features` (already in the wanted memory format and device).
      content, style: (H, W, 3) preprocessed images; init: the starting image (same space).
      content_layers, style_layers, layer_weights: as in ``configs/default.py``.
      terms: the style methods.
      content_scale: multiplier of sum ||F - P||^2 (the content weight).
      style_scales: {(term index, layer): multiplier} (style weight x balance factor x the paper's constant).
      tv_weight, lr: as in the config; low, high: per-channel pixel range in preprocessed units.
      compile: ``torch.compile`` the feature extractor (forward and backward graphs).
      extractor: a callable x -> {layer: activations} to use instead of :func:`extract` (e.g. one
        :func:`make_extractor` shared by several runs of one image size, so it is compiled once).
    """

    def __init__(
        self,
        features: torch.nn.Sequential,
        content: np.ndarray,
        style: np.ndarray,
        init: np.ndarray,
        *,
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        layer_weights: Sequence[float],
        terms: Sequence[Term],
        content_scale: float,
        style_scales: Mapping[tuple[int, str], float],
        tv_weight: float,
        lr: float,
        low: Sequence[float],
        high: Sequence[float],
        channels_last: bool = False,
        compile: bool = False,
        extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.device = next(features.parameters()).device
        self.channels_last = channels_last
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        self.layer_weights = dict(zip(self.style_layers, layer_weights, strict=True))
        self.layers = tuple(sorted(set(self.content_layers) | set(self.style_layers), key=vgg.LAYERS.index))
        self.terms = tuple(terms)
        self.content_scale = float(content_scale)
        self.style_scales = {k: float(v) for k, v in style_scales.items()}
        self.tv_weight = float(tv_weight)
        self.lr = float(lr)
        self.low = torch.tensor(low, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.high = torch.tensor(high, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._extract = extractor or make_extractor(features, self.layers, compile=compile)
        with torch.inference_mode():
            c = extract(features, to_nchw(content, self.device, channels_last), self.content_layers)
            s = extract(features, to_nchw(style, self.device, channels_last), self.style_layers)
            content_t = {k: v for k, v in c.items() if k in self.content_layers}
            style_t = {name: [style_target(t, samples(s[name])) for t in self.terms] for name in self.style_layers}
        # Clones outside inference mode: inference tensors may not be saved for the backward pass.
        self.content_targets = {k: v.clone() for k, v in content_t.items()}
        self.style_targets = {k: [{n: v.clone() for n, v in d.items()} for d in ts] for k, ts in style_t.items()}
        self.init = to_nchw(init, self.device, channels_last)
        self.reset()

    def reset(self) -> None:
        """The image back to ``init``, a fresh Adam state (betas 0.9, 0.999, eps 1e-8, as optax.adam)."""
        self.x = self.init.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.x], lr=self.lr)

    def energy(self, x: torch.Tensor, perms: Perms | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, {"content", "style", "tv"}) at the (1, 3, H, W) image x."""
        return self.energy_of_features(x, self._extract(x), perms)

    def energy_of_features(self, x: torch.Tensor, feats: Mapping[str, torch.Tensor], perms: Perms | None = None
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`energy` from the image and its features (float32) at :attr:`layers`."""
        content = sum(torch.square(feats[n] - self.content_targets[n]).sum() for n in self.content_layers)
        content = self.content_scale * content
        style = torch.zeros((), device=x.device)
        for name in self.style_layers:
            xs = samples(feats[name])
            for ti, term in enumerate(self.terms):
                p = None if perms is None else perms.get((ti, name))
                value = style_loss(term, xs, self.style_targets[name][ti], p)
                style = style + self.layer_weights[name] * term.weight * self.style_scales[(ti, name)] * value
        tv = self.tv_weight * total_variation(x) if self.tv_weight else torch.zeros((), device=x.device)
        return content + style + tv, {"content": content, "style": style, "tv": tv}

    def step(self, perms: Perms | None = None) -> dict[str, torch.Tensor]:
        """One Adam step and the clip to the pixel range; returns the loss terms at the image before the step
        (detached tensors, not synchronised: call ``.item()`` or synchronise to wait)."""
        self.opt.zero_grad(set_to_none=True)
        total, terms = self.energy(self.x, perms)
        total.backward()
        self.opt.step()
        with torch.no_grad():
            self.x.clamp_(self.low, self.high)
        return {"total": total.detach(), **{k: v.detach() for k, v in terms.items()}}

    def image(self) -> np.ndarray:
        """The current image, (H, W, 3) preprocessed, as a NumPy array."""
        return self.x.detach()[0].permute(1, 2, 0).cpu().numpy()


def perms_to_torch(perms: Mapping[Any, Any], device: str | torch.device) -> Perms:
    """nst_jax's random draws as tensors on ``device``, to replay them: NumPy permutation pairs (the Gaussian's
    and mkmmd's pairs) -> int64 tensors; an (N, K) direction matrix (swd) -> float32."""
    def one(v: Any) -> Any:
        if isinstance(v, tuple):
            return tuple(torch.as_tensor(np.array(a), dtype=torch.long, device=device) for a in v)
        return torch.as_tensor(np.array(v), dtype=torch.float32, device=device)

    return {k: one(v) for k, v in perms.items()}


class WholeStep:
    """The strongest PyTorch baseline: the whole step (forward, losses, backward, Adam update, clamp) as one pure
    function of tensors under ``torch.compile``, with the same ``reset`` / ``step`` / ``image`` as
    :class:`StyleTransfer` (whose problem, targets and multipliers it uses).

    Why a pure function rather than ``loss.backward(); opt.step()`` under ``torch.compile``: the gradient is
    taken with ``torch.func.grad_and_value`` and the update is Adam's formula written out (exactly
    ``torch.optim.Adam``'s non-fused update: ``m.lerp_(g, 1 - b1)``, ``v = b2 v + (1 - b2) g^2``, step size
    lr / (1 - b1^t), denominator sqrt(v) / sqrt(1 - b2^t) + eps), so Dynamo traces forward, backward and update
    into one graph (``fullgraph=True``: no graph break at ``.backward()`` or inside the optimizer) and Inductor
    fuses the update and the clamp into the backward's last kernels. The step counter is a tensor, so the bias
    corrections never recompile. PyTorch's recipe for compiling ``optimizer.step()`` (wrap the step in
    ``torch.compile``; a tensor learning rate; ``capturable=True`` for CUDA graphs) compiles the optimizer as a
    graph of its own, after the backward graph; this is the one-graph form of the same thing.

    Args:
      ts: the problem (its feature extractor must be the plain one, not a compiled extractor).
      features: the network of ``ts`` (from :func:`load_features`).
      mode: ``torch.compile`` mode: ``"max-autotune"`` (Triton/cuDNN autotuning and CUDA graphs; the GPU
        default), ``"reduce-overhead"`` (CUDA graphs only) or ``None`` (default; the CPU's).
      bf16: run the network under ``torch.autocast(dtype=torch.bfloat16)`` (features back to float32 for the
        losses), as nst_jax's ``--dtype=bfloat16`` runs VGG-19 in bfloat16 and the losses in float32.

    With CUDA graphs a replay overwrites the previous replay's outputs, so :meth:`step` copies the new state into
    the persistent ``x``, ``m``, ``v`` (three small copies) and returns clones of the loss terms.
    """

    def __init__(self, ts: StyleTransfer, features: torch.nn.Sequential, *, mode: str | None = None,
                 bf16: bool = False, fullgraph: bool = True, backend: str = "inductor") -> None:
        self.ts = ts
        self.device = ts.device
        self.mode = mode
        self.cudagraphs = ts.device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        layers, device_type = ts.layers, ts.device.type
        lr, b1, b2, eps = ts.lr, 0.9, 0.999, 1e-8
        low, high = ts.low, ts.high

        def energy(x: torch.Tensor, perms: Perms | None):
            if bf16:
                with torch.autocast(device_type, dtype=torch.bfloat16):
                    feats = extract(features, x, layers)
                feats = {k: v.float() for k, v in feats.items()}
            else:
                feats = extract(features, x, layers)
            total, terms = ts.energy_of_features(x, feats, perms)
            return total, torch.stack([total.detach(), terms["content"].detach(), terms["style"].detach(),
                                       terms["tv"].detach()])

        def step(x, m, v, t, perms):
            g, (_, terms) = torch.func.grad_and_value(energy, has_aux=True)(x, perms)
            t = t + 1
            m = torch.lerp(m, g, 1 - b1)
            v = v * b2 + (1 - b2) * g * g
            step_size = lr / (1 - torch.pow(b1, t))
            denom = torch.sqrt(v) / torch.sqrt(1 - torch.pow(b2, t)) + eps
            x = torch.clamp(x - step_size * m / denom, low, high)
            return x, m, v, t, terms

        self._step = torch.compile(step, mode=mode, fullgraph=fullgraph, backend=backend)
        self.reset()

    def reset(self) -> None:
        """The image back to ``init``, a fresh Adam state."""
        self.x = self.ts.init.clone()
        self.m, self.v = torch.zeros_like(self.x), torch.zeros_like(self.x)
        self.t = torch.zeros((), dtype=torch.float32, device=self.device)

    def step(self, perms: Perms | None = None) -> dict[str, torch.Tensor]:
        """One step; the loss terms at the image before it (not synchronised)."""
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        x, m, v, t, terms = self._step(self.x, self.m, self.v, self.t, perms)
        if self.cudagraphs:  # the next replay reuses these outputs' memory
            self.x.copy_(x), self.m.copy_(m), self.v.copy_(v), self.t.copy_(t)
            terms = terms.clone()
        else:
            self.x, self.m, self.v, self.t = x, m, v, t
        return dict(zip(("total", "content", "style", "tv"), terms, strict=True))

    def image(self) -> np.ndarray:
        """The current image, (H, W, 3) preprocessed."""
        return self.x.detach()[0].permute(1, 2, 0).float().cpu().numpy()
