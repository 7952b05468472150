"""The Johnson et al. feed-forward network and its training step in PyTorch: the twin :mod:`benchmarks.fast` times
nst_jax's :mod:`nst_jax.training` against.

The network is pytorch/examples fast_neural_style's ``TransformerNet`` (conv 9x9/32, conv 3x3/64 s2, conv 3x3/128
s2, five residual blocks, nearest 2x upsampling + conv 3x3/64, the same to 32, conv 9x9/3; reflection padding,
``InstanceNorm2d(affine=True)``, ReLU) laid out exactly as :class:`nst_jax.nets.johnson.TransformerNet`: the
same widths and block count (arguments), RGB in [0, 1] in and an unclipped output (pytorch/examples feeds
[0, 255]), and module names that mirror the Flax parameter tree, so :func:`from_flax` is a key-for-key map::

    params/conv1/conv/kernel (9, 9, 3, 32) HWIO  ->  conv1.conv.weight (32, 3, 9, 9) OIHW   (transpose(3, 2, 0, 1))
    params/in1/scale, bias                       ->  in1.weight, in1.bias
    params/res1/conv1/conv/kernel ...            ->  res1.conv1.conv.weight ...
    params/up1/conv/conv/kernel ...              ->  up1.conv.conv.weight ...

The training step (:class:`Trainer`) computes :func:`nst_jax.training.batch_loss` for johnson with one Gram term:
per image, ``content_weight * sum_l ||F_l(out) - F_l(content)||^2 / n_c + style_weight * sum_l w_l *
gram(F_l(out), G_l) / n_l + tv_weight * TV(out) / (H W)``, Gram as :func:`nst_jax.losses.gram_loss`
(1/(4 N^2) ||F^T F / M - G_S||^2, :func:`benchmarks.torch_baseline.gram`), the mean over the batch; the VGG-19
features of :func:`benchmarks.torch_baseline.load_features` after torchvision's ImageNet normalisation; then
``torch.optim.Adam`` (lr as the problem's; betas, eps and update as ``optax.adam``). The normalisers n are
nst_jax's :func:`nst_jax.training.reference_norms` (passed in, so both sides optimise one loss) or this twin's
own :func:`reference_norms`. Tensors are NCHW.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import torch_baseline as tb
from nst_jax import vgg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTIPLE = 4  # two stride-2 convolutions down, two 2x upsamplings up


class ConvLayer(nn.Module):
    """Reflection padding (kernel // 2), then a convolution (pytorch/examples' ``ConvLayer``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad,) * 4, mode="reflect"))


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x)))))."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.in1 = ConvLayer(c, c, 3), nn.InstanceNorm2d(c, affine=True)
        self.conv2, self.in2 = ConvLayer(c, c, 3), nn.InstanceNorm2d(c, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.in2(self.conv2(F.relu(self.in1(self.conv1(x)))))


class UpsampleConvLayer(nn.Module):
    """Nearest 2x upsampling, then a stride-1 :class:`ConvLayer`."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ConvLayer(cin, cout, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TransformerNet(nn.Module):
    """(B, 3, H, W) RGB in [0, 1], H and W multiples of 4 -> (B, 3, H, W), not clipped."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128), residual_blocks: int = 5) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.conv1, self.in1 = ConvLayer(3, c1, 9), nn.InstanceNorm2d(c1, affine=True)
        self.conv2, self.in2 = ConvLayer(c1, c2, 3, 2), nn.InstanceNorm2d(c2, affine=True)
        self.conv3, self.in3 = ConvLayer(c2, c3, 3, 2), nn.InstanceNorm2d(c3, affine=True)
        self.residual_blocks = residual_blocks
        for i in range(1, residual_blocks + 1):  # res1 ... res5, the Flax modules' names
            self.add_module(f"res{i}", ResidualBlock(c3))
        self.up1, self.in4 = UpsampleConvLayer(c3, c2), nn.InstanceNorm2d(c2, affine=True)
        self.up2, self.in5 = UpsampleConvLayer(c2, c1), nn.InstanceNorm2d(c1, affine=True)
        self.conv4 = ConvLayer(c1, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        y = F.relu(self.in2(self.conv2(y)))
        y = F.relu(self.in3(self.conv3(y)))
        for i in range(1, self.residual_blocks + 1):
            y = self.get_submodule(f"res{i}")(y)
        y = F.relu(self.in4(self.up1(y)))
        y = F.relu(self.in5(self.up2(y)))
        return self.conv4(y)


def stylize(net: TransformerNet, images: torch.Tensor) -> torch.Tensor:
    """``net`` on (B, 3, H, W) of any H, W: padded at the bottom and right by reflection to multiples of 4, the
    output cropped back (:func:`nst_jax.nets.johnson.stylize`; sides too short to reflect repeat the edge)."""
    h, w = images.shape[-2:]
    ph, pw = -h % MULTIPLE, -w % MULTIPLE
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    return net(images)[..., :h, :w]


def from_flax(net: TransformerNet, params: Any) -> dict[str, torch.Tensor]:
    """The state dict of ``net`` from nst_jax's TransformerNet parameters (``{"params": ...}`` or the inner tree).

    Raises:
      ValueError: naming every missing, unused or mis-shaped key.
    """
    tree = params.get("params", params)
    out, missing, wrong, used = {}, [], [], set()
    for key, ref in net.state_dict().items():
        *path, leaf = key.split(".")
        node = tree
        for name in path:
            node = node.get(name, {}) if isinstance(node, Mapping) else {}
        is_norm = isinstance(net.get_submodule(".".join(path)), nn.InstanceNorm2d)
        flax_leaf = {"weight": "scale" if is_norm else "kernel", "bias": "bias"}[leaf]
        if flax_leaf not in node:
            missing.append(key)
            continue
        used.add((*path, flax_leaf))
        array = np.array(node[flax_leaf], np.float32)  # a writable copy
        if array.ndim == 4:
            array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if tuple(array.shape) != tuple(ref.shape):
            wrong.append(f"{key} {tuple(array.shape)} (expected {tuple(ref.shape)})")
            continue
        out[key] = torch.from_numpy(np.ascontiguousarray(array))

    def leaves(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        if not isinstance(node, Mapping):
            return [prefix]
        return [p for k, v in node.items() for p in leaves(v, (*prefix, k))]

    unused = ["/".join(p) for p in leaves(tree) if p not in used]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"unused {', '.join(unused)}"] if unused else []) + ([f"wrong shape {', '.join(wrong)}"] if wrong else [])
    if problems:
        raise ValueError("the parameters are not this TransformerNet's: " + "; ".join(problems))
    return out


def to_nchw(images_bhwc: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) array -> (B, 3, H, W) float32 tensor on ``device``."""
    return torch.as_tensor(np.ascontiguousarray(np.asarray(images_bhwc, np.float32).transpose(0, 3, 1, 2))).to(device)


def _per_image_gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, C): each image's Gram matrix F^T F / M of its M = h w samples."""
    x = f.flatten(2)
    return x @ x.transpose(1, 2) / x.shape[-1]


def _gram_loss(f: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,): 1/(4 N^2) ||G_b - G_S||_F^2 of each image's features (B, N, h, w) against the style's (N, N)."""
    n = f.shape[1]
    return torch.square(_per_image_gram(f) - target).sum((1, 2)) / (4.0 * n * n)


def _tv(x: torch.Tensor) -> torch.Tensor:
    """(B,): each image's squared total variation (free boundary) / (H W), :func:`nst_jax.losses.total_variation`."""
    tv = (torch.square(x[..., 1:, :] - x[..., :-1, :]).sum((1, 2, 3))
          + torch.square(x[..., :, 1:] - x[..., :, :-1]).sum((1, 2, 3)))
    return tv / (x.shape[-2] * x.shape[-1])


class Trainer:
    """johnson's training step with a Gram style loss: the twin of :func:`nst_jax.training.train_step`.

    Args:
      net: the network (its parameters are trained in place).
      features: :func:`benchmarks.torch_baseline.load_features` cut at the deepest layer used.
      style: (H, W, 3) RGB in [0, 1], the one style image.
      content_layers, style_layers, layer_weights, content_weight, style_weight, tv_weight, lr: the problem's
        (:class:`nst_jax.training.TrainProblem`).
      norms: ``{"content": n_c, "style": {"0/<layer>": n_l}}`` (the state's ``norms``), or None to fix them from
        the first batch with :func:`reference_norms` (call :meth:`set_norms`).
    """

    def __init__(self, net: TransformerNet, features: nn.Sequential, style: np.ndarray, *,
                 content_layers: Sequence[str], style_layers: Sequence[str], layer_weights: Sequence[float],
                 content_weight: float, style_weight: float, tv_weight: float, lr: float,
                 norms: Mapping[str, Any] | None = None) -> None:
        self.net, self.features = net, features
        self.device = next(net.parameters()).device
        self.content_layers, self.style_layers = tuple(content_layers), tuple(style_layers)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.content_weight, self.style_weight, self.tv_weight = map(float, (content_weight, style_weight,
                                                                            tv_weight))
        self.layers = tuple(sorted(set(self.content_layers) | set(self.style_layers), key=vgg.LAYERS.index))
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.no_grad():
            feats = self.vgg(to_nchw(np.asarray(style)[None], self.device), self.style_layers)
            self.style_grams = {k: _per_image_gram(v)[0] for k, v in feats.items()}
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(lr))
        self.norms: dict[str, Any] | None = None
        if norms is not None:
            self.set_norms(norms)

    def set_norms(self, norms: Mapping[str, Any]) -> None:
        """Fixes the normalisers (:func:`reference_norms`' form, values floats or 0-d arrays)."""
        self.norms = {"content": float(norms["content"]),
                      "style": {k: float(v) for k, v in norms["style"].items()}}

    def vgg(self, rgb: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """{layer: (B, C, h, w)} of (B, 3, H, W) RGB in [0, 1] (torchvision's normalisation)."""
        return tb.extract(self.features, (rgb - self.mean) / self.std, layers)

    def loss(self, content: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the batch's mean loss, {"total", "content", "style", "tv"} means) of (B, 3, H, W) content."""
        if self.norms is None:
            raise ValueError("no normalisers: pass norms or call set_norms(reference_norms(...))")
        out = self.net(content)
        with torch.no_grad():
            target = self.vgg(content, self.content_layers)
        feats = self.vgg(out, self.layers)
        c = sum(torch.square(feats[n] - target[n]).sum((1, 2, 3)) for n in self.content_layers)
        s = sum(w * _gram_loss(feats[n], self.style_grams[n]) / self.norms["style"][f"0/{n}"]
                for n, w in zip(self.style_layers, self.layer_weights, strict=True))
        terms = {"content": self.content_weight * c / self.norms["content"], "style": self.style_weight * s,
                 "tv": self.tv_weight * _tv(out)}
        terms = {k: v.mean() for k, v in terms.items()}
        total = terms["content"] + terms["style"] + terms["tv"]
        return total, {"total": total, **terms}

    def step(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """One Adam step on the batch; the terms before it (detached, not synchronised)."""
        self.opt.zero_grad(set_to_none=True)
        total, terms = self.loss(content)
        total.backward()
        self.opt.step()
        return {k: v.detach() for k, v in terms.items()}


def reference_norms(trainer: Trainer, content: torch.Tensor) -> dict[str, Any]:
    """The twin of :func:`nst_jax.training.reference_norms` for one Gram term: n_c the batch's mean content loss of
    the network's current output, n_l the mean Gram loss at layer l of the content photos themselves to the
    style; each at least :data:`nst_jax.training.NORM_FLOOR`."""
    from nst_jax.training import NORM_FLOOR

    with torch.no_grad():
        out = trainer.net(content)
        f_out = trainer.vgg(out, trainer.content_layers)
        f_c = trainer.vgg(content, trainer.layers)
        c = sum(torch.square(f_out[n] - f_c[n]).sum((1, 2, 3)) for n in trainer.content_layers).mean()
        style = {f"0/{n}": _gram_loss(f_c[n], trainer.style_grams[n]).mean() for n in trainer.style_layers}
    floor = lambda v: max(abs(float(v)), NORM_FLOOR)  # noqa: E731
    return {"content": floor(c), "style": {k: floor(v) for k, v in style.items()}}


def compiled_step(trainer: Trainer, **compile_kwargs: Any) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """:meth:`Trainer.step` under ``torch.compile`` (PyTorch's recipe for a training step: the forward graph, its
    AOT backward graph at ``.backward()``, and the optimizer's update compiled as a graph of its own)."""
    return torch.compile(trainer.step, **compile_kwargs)
