"""Command line: train a feed-forward style-transfer network with any style method.

    python -m nst_jax.train --net=johnson --data=DIR --style=IMG --kernel=gram --workdir=w
    python -m nst_jax.train --net=adain --data=DIR --style_data=DIR --kernel=bn --workdir=w

The config is configs/train_johnson.py (``--net=adain`` without ``--config``: configs/train_adain.py); the flags
below override its fields of the same name, ``--config.FIELD=VALUE`` any other. Ctrl-C writes a checkpoint and
exits 130; ``--resume`` continues it. Apply the result with ``python -m nst_jax.fast --model=w/model.msgpack``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from nst_jax import cli, compile_cache
from nst_jax.errors import UserError

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")

config_flags.DEFINE_config_file("config", os.path.join(_CONFIGS, "train_johnson.py"),
                                "Training configuration file (--net=adain alone: configs/train_adain.py).",
                                lock_config=True)
flags.DEFINE_enum("net", None, ["johnson", "adain"], "The network: johnson (one style) or adain (any style).")
flags.DEFINE_string("data", None, "Folder of content images, searched recursively (jpg, png, webp, ...).")
flags.DEFINE_string("style", None, "johnson: the style image.")
flags.DEFINE_string("style_data", None, "adain: folder of style images, searched recursively.")
flags.DEFINE_string("kernel", None, "Style method, or a fusion such as gram+bn (any method of nst_jax.main).")
flags.DEFINE_integer("size", None, "Crop side in px: images resized so their short side is this, then cropped.")
flags.DEFINE_integer("batch", None, "Global batch, split over all devices (a multiple of their count).")
flags.DEFINE_integer("steps", None, "Optimisation steps.")
flags.DEFINE_string("workdir", None, "Folder of model.msgpack, checkpoints, metrics.jsonl, TensorBoard, samples.")
flags.DEFINE_string("weights", None, "VGG-19 weights from `python -m weights_converter` (default: the cached file).")
flags.DEFINE_bool("resume", False, "Continue from the newest checkpoint in --workdir.")
flags.DEFINE_bool("multihost", False, "Join jax.distributed: the batch is split over every process's devices.")
flags.DEFINE_string("coordinator_address", None, "With --multihost: host:port of process 0 (default: from the "
                    "environment).")
flags.DEFINE_integer("num_processes", None, "With --multihost: number of processes (default: from the environment).")
flags.DEFINE_integer("process_id", None, "With --multihost: this process's index (default: from the environment).")
FLAGS = flags.FLAGS
OVERRIDES = ("net", "data", "style", "style_data", "kernel", "size", "batch", "steps", "workdir", "weights")


def _config() -> object:
    """The config file's values, with ``--config.*`` and the flags above applied. ``--net=adain`` without
    ``--config`` reads configs/train_adain.py (and applies the ``--config.*`` overrides to it)."""
    config = FLAGS.config
    if FLAGS.net == "adain" and not FLAGS["config"].present:
        from configs import train_adain

        config = train_adain.get_config()
        for name in FLAGS:
            if name.startswith("config.") and FLAGS[name].present:
                with config.unlocked():
                    target, *path = name.split(".")[1:]
                    node = config
                    for part in [target, *path][:-1]:
                        node = node[part]
                    node[[target, *path][-1]] = FLAGS[name].value
    with config.unlocked():
        for name in OVERRIDES:
            if FLAGS[name].present:
                config[name] = FLAGS[name].value
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s): {' '.join(argv[1:])} (flags take the form --name=value)")
    logging.set_verbosity(logging.WARNING)
    config = _config()
    try:
        compile_cache.enable(None)
        cli._join_distributed(FLAGS.multihost, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        from nst_jax import report, trainer  # JAX and the networks: after the flags are known to be good

        with cli.StopOnInterrupt() as stop:
            bar = report.ProgressBar()
            status = trainer.run(config, resume=FLAGS.resume, should_stop=stop, progress=bar)
            bar.close()
    except UserError as e:
        cli.fail(str(e))
    if status == trainer.EXIT_INTERRUPTED:
        print(f"interrupted: checkpoint in {os.path.join(config.workdir, 'checkpoints')}; continue with the same "
              f"command and --resume", file=sys.stderr, flush=True)
    else:
        print(f"wrote {os.path.join(config.workdir, 'model.msgpack')} (apply it with python -m nst_jax.fast "
              f"--model={os.path.join(config.workdir, 'model.msgpack')})", file=sys.stderr, flush=True)
    sys.exit(status)


def run() -> None:
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
