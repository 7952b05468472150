"""Prints the parity of nst_jax's VGG-19 with torchvision's on a seeded random network.

    python scripts/parity.py

A torchvision ``vgg19(weights=None)`` seeded with ``torch.manual_seed(0)`` is saved with ``torch.save``, read
back by the torch-free reader, converted, and both networks run on the same non-square input (1x3x72x56).
For each layer: max |ours - torch| / max |torch|, with max pooling and with the max pools swapped for
``AvgPool2d(2, 2)``. Needs torch and torchvision (the ``test`` extra).
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile

import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from nst_jax import vgg
from weights_converter.convert import to_flax
from weights_converter.pth_reader import read_state_dict

LAYERS = (
    "relu1_1",
    "relu2_1",
    "relu3_1",
    "relu4_1",
    "relu4_2",
    "relu5_1",
    "pool1",
    "pool2",
    "pool3",
    "pool4",
    "pool5",
)


def torch_features(features: torch.nn.Sequential, x: torch.Tensor) -> dict[str, np.ndarray]:
    out = {}
    with torch.no_grad():
        for index, name in enumerate(vgg.LAYERS):
            x = features[index](x.clone())  # clone: the ReLUs are in place
            if name in LAYERS:
                out[name] = x.permute(0, 2, 3, 1).numpy().copy()
    return out


def main() -> int:
    torch.manual_seed(0)
    model = torchvision.models.vgg19(weights=None).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vgg19-random.pth")
        torch.save(model.state_dict(), path)
        params = to_flax(read_state_dict(path, keep=lambda key: key.startswith("features.")))
    x = np.random.default_rng(0).standard_normal((1, 3, 72, 56)).astype(np.float32)
    avg = copy.deepcopy(model.features)
    for index, module in enumerate(avg):
        if isinstance(module, torch.nn.MaxPool2d):
            avg[index] = torch.nn.AvgPool2d(2, 2)
    worst = 0.0
    print(f"{'layer':8s} {'shape (NHWC)':18s} {'max pool':>10s} {'avg pool':>10s}")
    results = {}
    for pooling, features in (("max", model.features), ("avg", avg)):
        ref = torch_features(features, torch.from_numpy(x))
        ours = vgg.extract(params, jnp.asarray(x.transpose(0, 2, 3, 1)), LAYERS, pooling)
        for name in LAYERS:
            err = float(np.max(np.abs(np.asarray(ours[name]) - ref[name])) / np.max(np.abs(ref[name])))
            results[(name, pooling)] = (ref[name].shape, err)
            worst = max(worst, err)
    for name in LAYERS:
        shape = results[(name, "max")][0]
        print(
            f"{name:8s} {str(shape):18s} {results[(name, 'max')][1]:10.2e} {results[(name, 'avg')][1]:10.2e}"
        )
    print(f"worst relative error {worst:.2e} (tolerance 1e-4)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
