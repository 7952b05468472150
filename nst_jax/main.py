"""Command line: ``python -m nst_jax.main --kernel=gaussian --content=photo.jpg --style=painting.jpg``.

Flags below override the config's fields of the same name when given; any other field is set with
``--config.FIELD=VALUE`` (``--config=configs/paper_caffe.py`` picks another config file).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from nst_jax import cli

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, "default.py"), "Run configuration file.",
                                lock_config=True)
flags.DEFINE_string("kernel", None, "Style method gram|linear|poly|gaussian|bn, or a fusion such as linear,gaussian.")
flags.DEFINE_string("kernel_weights", None, "Fusion weights, one per method in --kernel, e.g. 0.5,0.5.")
flags.DEFINE_string("content", None, "Content image (default: a demo image drawn by the package).")
flags.DEFINE_string("style", None, "Style image (default: a demo painting drawn by the package).")
flags.DEFINE_string("output", None, "Output image, .png or .jpg; the run record goes beside it as .json.")
flags.DEFINE_integer("size", None, "Long edge of the output in pixels (default 512 on GPU/TPU, 256 on CPU).")
flags.DEFINE_integer("steps", None, "Optimisation steps.")
flags.DEFINE_string("optimizer", None, "adam|lbfgs|sgd_paper.")
flags.DEFINE_string("weights", None, "VGG-19 weights from `python -m weights_converter` (default: the cached file).")
flags.DEFINE_integer("seed", None, "Random seed (noise init, stochastic estimators).")
flags.DEFINE_float("style_weight", None, "Style weight (with --balance=auto: style/content gradient ratio).")
flags.DEFINE_float("content_weight", None, "Content weight.")
flags.DEFINE_float("tv_weight", None, "Total-variation weight.")
flags.DEFINE_string("init", None, "content|noise|IMAGE_FILE.")
flags.DEFINE_integer("save_every", None, "Save an intermediate image every N steps (0: never).")
flags.DEFINE_string("balance", None, "auto|none: equalise style and content gradients at the start, or not.")
flags.DEFINE_integer("style_size", None, "Long edge of the style image in pixels (default: the content's).")
flags.DEFINE_float("style_scale", None, "Style image size relative to --style_size or the content.")
flags.DEFINE_float("lr", None, "Adam learning rate.")
flags.DEFINE_integer("checkpoint_every", None, "Write OUTPUT.ckpt every N steps (and on Ctrl-C); 0: only on Ctrl-C.")
flags.DEFINE_bool("resume", None, "Continue an interrupted run from OUTPUT.ckpt.")
flags.DEFINE_string("preserve_colors", None, "none|luminance|histogram: keep the content's colours.")
flags.DEFINE_integer("scales", None, "Coarse to fine: run this many sizes, each twice the last, up to --size.")
flags.DEFINE_string("style_blend", None, "Weights of several styles (--style=a.jpg,b.jpg), e.g. 0.3,0.7.")
flags.DEFINE_bool("remat", None, "Rematerialise VGG blocks in the backward pass (less memory, more compute).")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "VGG compute dtype (parameters and losses stay float32).")
flags.DEFINE_integer("strips", None, "Compute VGG blocks 1-2 in this many horizontal strips: less memory for "
                     "large images, the same result (gram, linear, bn, poly at relu1_1/relu2_1).")
# Batch mode (nst_jax.batch): --content_dir switches it on; --style and --kernel then take ';'-separated lists.
flags.DEFINE_string("content_dir", None, "Batch mode: stylise every image in this folder (see nst_jax.batch).")
flags.DEFINE_string("output_dir", None, "Batch mode: where OUT/<content>__<style>__<method>.png and .json go.")
flags.DEFINE_bool("multihost", False, "Batch mode: join jax.distributed and split the jobs over the processes.")
flags.DEFINE_string("coordinator_address", None, "With --multihost: host:port of process 0 (default: from the "
                    "environment, as on a Cloud TPU pod slice).")
flags.DEFINE_integer("num_processes", None, "With --multihost: number of processes (default: from the environment).")
flags.DEFINE_integer("process_id", None, "With --multihost: this process's index (default: from the environment).")

FLAGS = flags.FLAGS
OVERRIDES = ("kernel", "kernel_weights", "content", "style", "output", "size", "steps", "optimizer", "weights",
             "seed", "style_weight", "content_weight", "tv_weight", "init", "save_every", "balance",
             "style_size", "style_scale", "lr", "checkpoint_every", "resume",
             "preserve_colors", "scales", "style_blend", "remat", "dtype", "strips")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s): {' '.join(argv[1:])} (flags take the form --name=value)")
    logging.set_verbosity(logging.WARNING)  # keep the terminal for the progress bar
    config = FLAGS.config
    with config.unlocked():
        for name in OVERRIDES:
            if FLAGS[name].present:
                config[name] = FLAGS[name].value
    if FLAGS.content_dir:
        from nst_jax import batch  # only batch mode needs it

        sys.exit(batch.run_cli(config, content_dir=FLAGS.content_dir, output_dir=FLAGS.output_dir or "",
                               multihost=FLAGS.multihost, coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id))
    if FLAGS.output_dir or FLAGS.multihost:
        cli.fail("--output_dir and --multihost are batch-mode flags: give --content_dir too")
    sys.exit(cli.run_one(config))


def run() -> None:
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
