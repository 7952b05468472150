"""Applying a trained feed-forward network (``python -m nst_jax.train``'s model.msgpack): the Python API
:func:`load` and the command line.

    python -m nst_jax.fast --model=w/model.msgpack --content=photo.jpg --output=out.png
    python -m nst_jax.fast --model=w/model.msgpack --content=photo.jpg --style=a.jpg,b.jpg --style_blend=0.3,0.7 \
        --alpha=0.8 --output=out.png                                      # adain
    python -m nst_jax.fast --model=w/model.msgpack --content_dir=photos --output_dir=styled

From Python (e.g. per video frame)::

    stylize = nst_jax.fast.load("w/model.msgpack")
    out = stylize(frame)                                     # johnson: (H, W, 3) float RGB in [0, 1] -> same
    out = stylize(frame, styles=[painting], alpha=1.0)       # adain (blend=[...] weights several styles)

The result has the input's exact size (the network pads to its stride and crops back) and is clipped to [0, 1].
Each call runs one jitted program, compiled once per input shape and kept.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from nst_jax.errors import ConfigError, ImageError, UserError


class Stylizer:
    """A loaded model as a callable: ``stylizer(content, styles=None, alpha=1.0, blend=None) -> image``.

    Attributes:
      net: ``"johnson"`` or ``"adain"``; model: the :class:`~nst_jax.nets.model_file.Model`.
    """

    def __init__(self, model: Any):
        import jax

        from nst_jax.nets import model_file

        self.model = model
        self.net = model.net
        self._params = model_file.device_params(model)
        self._johnson = model_file.johnson_net(model.config)
        self._run = jax.jit(functools.partial(_forward, self.net, self._johnson, model.source,
                                              str(model.config.get("pooling", "max"))))

    def __call__(self, content: np.ndarray, styles: Sequence[np.ndarray] | None = None, alpha: float = 1.0,
                 blend: Sequence[float] | None = None) -> np.ndarray:
        """(H, W, 3) float RGB in [0, 1] -> (H, W, 3) float32 RGB in [0, 1].

        Args:
          styles: adain: one or more (H_k, W_k, 3) style images (each at least 8 px a side); johnson: none.
          alpha: adain's content/style trade-off in [0, 1] (0: the content's own features decoded).
          blend: adain: one weight per style (normalised to sum 1); default equal.
        """
        content = _check_image(content, "content")
        if self.net == "johnson":
            if styles:
                raise ConfigError("a johnson network has its style built in: give no styles")
            return np.asarray(self._run(self._params, content, (), (), 1.0))
        if not styles:
            raise ConfigError("an adain network needs a style image (styles=[...], --style=IMG)")
        styles = [_check_image(s, "style", 8) for s in styles]
        weights = _blend(blend, len(styles))
        if not (0.0 <= float(alpha) <= 1.0):
            raise ConfigError(f"--alpha={alpha}: must be between 0 and 1")
        return np.asarray(self._run(self._params, content, tuple(styles), weights, float(alpha)))


def _forward(net: str, johnson_net: Any, source: str, pooling: str, params: Any, content: Any, styles: Any,
             weights: Any, alpha: Any) -> Any:
    import jax.numpy as jnp

    from nst_jax.nets import adain, johnson

    x = jnp.asarray(content, jnp.float32)[None]
    if net == "johnson":
        out = johnson.stylize(params["net"], x, johnson_net)
    else:
        out = adain.stylize(params["net"], params["encoder"], x, [jnp.asarray(s, jnp.float32)[None] for s in styles],
                            weights, alpha, source=source, pooling=pooling)
    return jnp.clip(out[0], 0.0, 1.0)


def _check_image(rgb: Any, what: str, min_side: int = 1) -> np.ndarray:
    rgb = np.asarray(rgb, np.float32)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ImageError(f"{what} image must be (H, W, 3) RGB, got shape {rgb.shape}")
    if min(rgb.shape[:2]) < min_side:
        raise ImageError(f"{what} image is {rgb.shape[1]}x{rgb.shape[0]} px; needs at least {min_side} px a side")
    return rgb


def _blend(blend: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if blend is None or len(blend) == 0:
        return tuple([1.0 / n] * n)
    if len(blend) != n:
        raise ConfigError(f"--style_blend: {len(blend)} weight(s) for {n} style(s)")
    if any(not np.isfinite(w) or w < 0 for w in blend) or sum(blend) <= 0:
        raise ConfigError("--style_blend: weights must be finite, >= 0 and not all 0")
    return tuple(float(w) / sum(blend) for w in blend)


@functools.cache
def _cached(path: str, sha: str) -> Stylizer:
    from nst_jax.nets import model_file

    return Stylizer(model_file.load(path))


def load(path: str) -> Stylizer:
    """The model file at ``path`` as a :class:`Stylizer` (loaded and checked once per file and content: the same
    file loaded again gives the same compiled functions). Raises :class:`~nst_jax.errors.ModelError`."""
    from nst_jax.nets import model_file

    model = model_file.load(path)
    return _cached(os.path.abspath(path), model.params_sha256)


def describe(model: Any) -> str:
    """One line on a model: its network, steps, digest and the VGG-19 weights that trained it (a model trained
    with random weights says so)."""
    vgg = model.config.get("vgg_weights", {}).get("described", "VGG-19 weights not recorded")
    return f"{model.net} network, {model.step} training steps, sha256 {model.params_sha256[:12]}; trained with {vgg}"


def preserve(mode: str, out: np.ndarray, content: np.ndarray) -> np.ndarray:
    """``--preserve_colors`` after the network: ``luminance`` keeps the content's chroma (the result's luminance
    only), ``histogram`` recolours the result to the content's colour mean and covariance
    (:mod:`nst_jax.color`); ``none`` returns it unchanged."""
    from nst_jax import color

    if mode == "luminance":
        return np.asarray(color.recombine_luminance(out, content), np.float32)
    if mode == "histogram":
        return np.clip(color.match_color_histogram(out, content), 0.0, 1.0).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Command line: the flags are defined only when this module runs as a program, so `import nst_jax.fast` (the API)
# leaves absl's flags alone.


def define_flags() -> None:
    from absl import flags

    from nst_jax import color

    flags.DEFINE_string("model", None, "A model file of `python -m nst_jax.train` (WORKDIR/model.msgpack).")
    flags.DEFINE_string("content", None, "Content image.")
    flags.DEFINE_string("output", None, "Output image (.png or .jpg).")
    flags.DEFINE_string("content_dir", None, "Stylise every image in this folder (recursively) ...")
    flags.DEFINE_string("output_dir", None, "... into this folder, as <name>.png.")
    flags.DEFINE_string("style", None, "adain: style image(s), comma-separated to interpolate several.")
    flags.DEFINE_string("style_blend", None, "adain: weights of several styles, e.g. 0.3,0.7 (default: equal).")
    flags.DEFINE_float("alpha", 1.0, "adain: content/style trade-off in [0, 1].")
    flags.DEFINE_integer("size", None, "Long edge of the output in px (default: the input's own size).")
    flags.DEFINE_integer("style_size", None, "adain: long edge of the style images (default: the content's).")
    flags.DEFINE_enum("preserve_colors", "none", list(color.PRESERVE_COLORS),
                      "Keep the content's colours: luminance (its chroma) or histogram (its colour statistics).")


def _jobs(flags_: Any) -> list[tuple[str, str]]:
    """(content, output) pairs of the command, checked (nothing written)."""
    from nst_jax import data, outputs

    if flags_.content_dir:
        if flags_.content or flags_.output:
            raise UserError("--content_dir takes --output_dir, not --content/--output")
        if not flags_.output_dir:
            raise UserError("--content_dir needs --output_dir")
        if os.path.realpath(flags_.output_dir) == os.path.realpath(flags_.content_dir):
            raise UserError(f"--output_dir={flags_.output_dir}: must differ from --content_dir")
        files = data.list_images(flags_.content_dir, "--content_dir")
        names = [os.path.splitext(os.path.relpath(f, flags_.content_dir))[0].replace(os.sep, "__") for f in files]
        jobs = [(f, os.path.join(flags_.output_dir, n + ".png")) for f, n in zip(files, names, strict=True)]
    else:
        if flags_.output_dir:
            raise UserError("--output_dir needs --content_dir")
        if not flags_.content:
            raise UserError("--content is required (or --content_dir)")
        if not flags_.output:
            raise UserError("--output is required")
        jobs = [(flags_.content, flags_.output)]
    styles = [s for s in (flags_.style or "").split(",") if s]
    for _, output in jobs:
        outputs.check_output(output, [c for c, _ in jobs] + styles + [flags_.model])
    return jobs


def main(argv: list[str]) -> None:
    from absl import flags, logging

    from nst_jax import cli, image
    from nst_jax.config import floats

    logging.set_verbosity(logging.WARNING)  # one line on an error, nothing else
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s): {' '.join(argv[1:])} (flags take the form --name=value)")
    try:
        if not FLAGS.model:
            raise UserError("--model is required: a model file of python -m nst_jax.train")
        if FLAGS.size is not None and FLAGS.size < 1:
            raise UserError(f"--size={FLAGS.size}: must be >= 1")
        if FLAGS.style_size is not None and FLAGS.style_size < 8:
            raise UserError(f"--style_size={FLAGS.style_size}: must be >= 8")
        jobs = _jobs(FLAGS)
        stylizer = load(FLAGS.model)
        style_paths = [s for s in (FLAGS.style or "").split(",") if s]
        if stylizer.net == "johnson" and (style_paths or FLAGS.style_blend or FLAGS["alpha"].present):
            raise UserError("--style, --style_blend and --alpha are for adain networks; this is a johnson network "
                            "(its style is built in)")
        if stylizer.net == "adain" and not style_paths:
            raise UserError("an adain network needs --style=IMG (or IMG1,IMG2 to interpolate)")
        blend = floats(FLAGS.style_blend, "style_blend") if FLAGS.style_blend else None
        if stylizer.net == "adain":
            _blend(blend, len(style_paths))
            if not 0.0 <= FLAGS.alpha <= 1.0:
                raise UserError(f"--alpha={FLAGS.alpha}: must be between 0 and 1")
        styles_full = [image.load_image(p, min_side=8) for p in style_paths]
        contents = [image.load_image(c, FLAGS.size, min_side=1) for c, _ in jobs[:1]]  # the first checked early
        written = 0
        for i, (content_path, output) in enumerate(jobs):
            content = contents[0] if i == 0 else image.load_image(content_path, FLAGS.size)
            edge = FLAGS.style_size or max(content.shape[:2])
            styles = [image.resize_long_edge(s, max(edge, 8)) for s in styles_full]
            if FLAGS.preserve_colors == "histogram" and stylizer.net == "adain":
                from nst_jax import color

                styles = [color.match_color_histogram(s, content).astype(np.float32) for s in styles]
                out = stylizer(content, styles, FLAGS.alpha, blend)
            else:
                out = stylizer(content, styles or None, FLAGS.alpha, blend)
                out = preserve(FLAGS.preserve_colors, out, content)
            image.save_image(output, out)
            written += 1
    except UserError as e:
        cli.fail(str(e))
    where = jobs[0][1] if len(jobs) == 1 else os.path.dirname(jobs[0][1])
    print(f"wrote {written} image(s): {where} ({describe(stylizer.model)})", file=sys.stderr, flush=True)


def run() -> None:
    from absl import app

    from nst_jax import cli

    define_flags()
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
