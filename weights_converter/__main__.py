"""Converts a PyTorch VGG-19 checkpoint into the parameter file nst_jax loads.

    python -m weights_converter                      # download torchvision's IMAGENET1K_V1 VGG-19, convert it
    python -m weights_converter --checkpoint=vgg19-dcbb9e9d.pth
    python -m weights_converter --source=caffe --checkpoint=vgg19-d01eb7cb.pth

The output goes to ``$NST_JAX_CACHE`` (else ``$XDG_CACHE_HOME/nst_jax``, else ``~/.cache/nst_jax``) as
``vgg19-<source>.msgpack`` unless ``--output`` says otherwise; the main program finds it there. A downloaded
``.pth`` is deleted once converted. Errors a user can cause are printed as one line ``error: ...`` with exit
status 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from nst_jax.errors import UserError, WeightsError

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "A torch.save-d VGG-19 state dict (.pth). Default: download torchvision's IMAGENET1K_V1.",
)
# A plain string, not an enum flag, so a bad value is a one-line error with exit status 2 like every other.
_SOURCE = flags.DEFINE_string(
    "source",
    "torchvision",
    "Which preprocessing the weights expect: torchvision (ImageNet mean/std, RGB in [0, 1]) or caffe (BGR, "
    "0-255, mean pixel subtracted; jcjohnson's vgg19-d01eb7cb.pth).",
)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the parameters. Default: the cache folder.")
_SHA256 = flags.DEFINE_string(
    "sha256", None, "Full SHA-256 the checkpoint must have. Default for a download: the prefix in its name."
)


def run(checkpoint: str | None, source: str, output: str | None, sha256: str | None) -> str:
    """Downloads if needed, converts, writes; returns the output path."""
    if checkpoint and not os.path.isfile(checkpoint):
        what = "is a folder, not a file" if os.path.isdir(checkpoint) else "no such file"
        raise WeightsError(f"checkpoint {checkpoint}: {what}")
    # Imported here so the errors above come without the cost of importing JAX.
    from nst_jax import weights
    from weights_converter.convert import convert
    from weights_converter.download import URL, download

    if source not in weights.SOURCES:
        raise UserError(f"--source must be one of {', '.join(weights.SOURCES)}, not {source!r}")
    output = output or weights.default_path(source)
    downloaded = None
    if not checkpoint:
        if source != "torchvision":
            raise UserError(
                "--source=caffe needs --checkpoint=FILE (the Caffe VGG-19 conversion, e.g. "
                "vgg19-d01eb7cb.pth); only torchvision's weights are downloaded"
            )
        checkpoint = downloaded = download(URL, sha256=sha256)
    elif sha256 and weights.file_sha256(checkpoint) != sha256.lower():
        raise WeightsError(f"checkpoint {checkpoint}: its SHA-256 does not match --sha256={sha256}")
    convert(checkpoint, output, source)
    if downloaded:
        os.remove(downloaded)  # the converted file is what is kept; the .pth is 548 MB
    return output


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # JAX's notes (e.g. no TPU found) would add lines to a one-line error
    try:
        if len(argv) > 1:
            raise UserError(f"unexpected arguments {' '.join(argv[1:])}; use --checkpoint=FILE")
        output = run(_CHECKPOINT.value, _SOURCE.value, _OUTPUT.value, _SHA256.value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {output} (source: {_SOURCE.value})")


if __name__ == "__main__":
    app.run(main)
