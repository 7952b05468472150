"""A training run of a feed-forward network: checks, data, devices, checkpoints, metrics and samples around the
pure step of :mod:`nst_jax.training`.

What a run writes under ``workdir`` (docs/feedforward.md)::

    model.msgpack         the trained network, its kind and config (:mod:`nst_jax.nets.model_file`)
    checkpoints/<step>/   orbax checkpoints: parameters, Adam state, step, key, normalisers, data position
    metrics.jsonl         one line per logged step: step, loss terms, images/s, skipped files
    tensorboard/          the same as TensorBoard events (tensorboardX)
    samples/              held-out images stylised every ``sample_every`` steps (PNG)

Devices: the global batch is split over every device (a mesh over ``jax.devices()``, the batch axis sharded,
parameters and the optimiser state replicated); the step is one jitted program, whose gradients of the batch
mean the partitioner reduces over the devices. With ``jax.distributed`` (``--multihost``) each process loads its
share of the batch and the mesh spans every process's devices.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nst_jax import config as cfg_lib
from nst_jax import data, image, loop, training, vgg
from nst_jax import weights as weights_lib
from nst_jax.errors import ConfigError, UserError
from nst_jax.nets import NETS, adain, model_file

BATCH_AXIS = "batch"
EXIT_DONE, EXIT_INTERRUPTED = 0, 130
FREE_FIELDS = ("steps", "log_every", "sample_every", "checkpoint_every", "workers", "workdir", "data", "style",
               "style_data", "weights")
"""Config fields a resumed run may change (the others must match the checkpoint's)."""
MIN_SIZE = 16  # relu4_1 (three poolings) keeps at least 2 x 2 positions


def problem(config: Any) -> training.TrainProblem:
    """The checked :class:`~nst_jax.training.TrainProblem` of a training config (ConfigError on a bad value)."""
    if config.net not in NETS:
        raise ConfigError(f"--net={config.net}: expected one of {', '.join(NETS)}")
    for name in ("size", "batch", "style_size", "log_every", "workers", "johnson_residual_blocks"):
        if not isinstance(config[name], int) or config[name] < 1:
            raise ConfigError(f"--{name}={config[name]}: must be an integer >= 1")
    for name in ("steps", "sample_every", "checkpoint_every", "holdout"):
        if not isinstance(config[name], int) or config[name] < 0:
            raise ConfigError(f"--{name}={config[name]}: must be an integer >= 0")
    if config.size < MIN_SIZE:
        raise ConfigError(f"--size={config.size}: must be at least {MIN_SIZE} (relu4_1 is 1/8 of it)")
    for name in ("lr", "content_weight", "style_weight", "tv_weight"):
        value = config[name]
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{name}={value}: must be a finite number >= 0")
    if config.lr <= 0:
        raise ConfigError(f"--lr={config.lr}: must be > 0")
    if config.pooling not in vgg.POOLINGS:
        raise ConfigError(f"--config.pooling={config.pooling}: expected max or avg")
    if config.source not in weights_lib.SOURCES:
        raise ConfigError(f"--config.source={config.source}: expected one of {', '.join(weights_lib.SOURCES)}")
    layers = {}
    for field in ("content_layers", "style_layers"):
        try:
            layers[field] = vgg.check_layers(cfg_lib.csv(config[field]))
        except ValueError as e:
            raise ConfigError(f"--config.{field}={config[field]}: {e}") from None
    if config.net == "adain":
        if layers["content_layers"] != (adain.ADAIN_LAYER,):
            raise ConfigError(f"--config.content_layers={config.content_layers}: adain's content loss is at "
                              f"{adain.ADAIN_LAYER} (against the AdaIN output)")
        deep = [n for n in layers["style_layers"] if vgg.LAYERS.index(n) > vgg.LAYERS.index(adain.ADAIN_LAYER)]
        if deep:
            raise ConfigError(f"--config.style_layers: {', '.join(deep)} lie past the encoder's {adain.ADAIN_LAYER}")
    layer_weights = cfg_lib.floats(config.layer_weights, "config.layer_weights")
    if len(layer_weights) != len(layers["style_layers"]):
        raise ConfigError(f"--config.layer_weights={config.layer_weights}: {len(layer_weights)} weight(s) for "
                          f"{len(layers['style_layers'])} style layer(s)")
    channels = tuple(config.johnson_channels)
    if len(channels) != 3 or not all(isinstance(c, int) and c >= 1 for c in channels):
        raise ConfigError(f"--config.johnson_channels={config.johnson_channels}: three integers >= 1")
    return training.TrainProblem(
        net=config.net, content_layers=layers["content_layers"], style_layers=layers["style_layers"],
        layer_weights=tuple(layer_weights), terms=cfg_lib.parse_terms(config), source=config.source,
        pooling=config.pooling, content_weight=float(config.content_weight),
        style_weight=float(config.style_weight), tv_weight=float(config.tv_weight), lr=float(config.lr),
        johnson_channels=channels, johnson_residual_blocks=int(config.johnson_residual_blocks))


def config_record(config: Any) -> dict[str, Any]:
    """The config as plain JSON values (what the model file and the checkpoints keep)."""
    return json.loads(json.dumps(config.to_dict(), default=list))


@functools.partial(jax.jit, static_argnums=0)
def _train_step(problem: training.TrainProblem, vgg_params: Any, style_target: Any, state: training.TrainState,
                batch: Any) -> tuple[training.TrainState, dict[str, jax.Array]]:
    return training.train_step(problem, vgg_params, style_target, state, batch)


_init = jax.jit(training.init, static_argnums=(0, 1))
_style_targets = jax.jit(training.style_targets, static_argnums=0)
_apply = jax.jit(training.apply, static_argnums=0)


class Inputs:
    """Everything a run reads, checked before anything is written: files, weights, style image(s)."""

    def __init__(self, config: Any, problem: training.TrainProblem):
        if not config.workdir:
            raise UserError("--workdir is required: the folder the model, checkpoints and metrics go to")
        if os.path.exists(config.workdir) and not os.path.isdir(config.workdir):
            raise UserError(f"--workdir={config.workdir}: is a file, not a folder")
        self.content_files, self.held_content = data.split_holdout(data.list_images(config.data, "--data"),
                                                                    config.holdout)
        self.style_rgb, self.style_files, self.held_style = None, [], []
        if config.net == "johnson":
            if config.style_data:
                raise UserError("--style_data is adain's style set; johnson trains one --style image")
            if not config.style:
                raise UserError("--net=johnson needs --style: the style image the network learns")
            self.style_rgb = image.load_image(config.style, config.style_size, min_side=image.MIN_INPUT_SIDE)
            if min(self.style_rgb.shape[:2]) < MIN_SIZE:
                raise UserError(f"--style={config.style}: {self.style_rgb.shape[1]}x{self.style_rgb.shape[0]} px "
                                f"at --config.style_size={config.style_size}; needs {MIN_SIZE} px a side")
        else:
            if config.style:
                raise UserError("--style is johnson's one style image; adain trains on a folder: --style_data")
            self.style_files, self.held_style = data.split_holdout(
                data.list_images(config.style_data, "--style_data"), config.holdout)
        self.weights = weights_lib.load(weights_lib.resolve(config.weights or None, config.source))
        if self.weights.source != problem.source:
            raise UserError(f"--weights={config.weights}: {self.weights.source} weights, but --config.source is "
                            f"{problem.source}")
        self.samples = self._held_out(config)

    def _held_out(self, config: Any) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
        """(name, content (H, W, 3), style or None) of the held-out images the samples show (unreadable skipped)."""
        out = []
        styles = [image.load_image(p, config.size) for p in self.held_style[:1]] if config.net == "adain" else [None]
        if config.net == "adain" and not styles:  # too few style files to hold one out: use the first
            styles = [data.crop(image.load_image(self.style_files[0]), config.size, np.random.default_rng(0))]
        for path in self.held_content:
            try:
                rgb = image.load_image(path, config.size)
            except UserError:
                continue
            if min(rgb.shape[:2]) >= 8:
                out.append((os.path.splitext(os.path.basename(path))[0], rgb, styles[0]))
        return out


def _mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (BATCH_AXIS,))


def _checkpoint_manager(workdir: str) -> Any:
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def latest_checkpoint(workdir: str) -> int | None:
    """The step of the newest checkpoint under ``workdir``, or None."""
    folder = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    return max(steps) if steps else None


def _save_checkpoint(manager: Any, state: training.TrainState, batches: data.Batches, config: Any) -> None:
    import orbax.checkpoint as ocp
    from flax import serialization

    tree = serialization.to_state_dict(jax.device_get(state._asdict()))
    meta = {"data": batches.state(), "config": config_record(config)}
    manager.save(int(state.step), args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                           meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()


def _restore_checkpoint(manager: Any, step: int, template: training.TrainState, config: Any
                        ) -> tuple[training.TrainState, dict[str, Any]]:
    import orbax.checkpoint as ocp
    from flax import serialization

    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                             meta=ocp.args.JsonRestore()))
    meta = restored["meta"]
    saved, now = meta["config"], config_record(config)
    changed = sorted(k for k in set(saved) | set(now) if k not in FREE_FIELDS and saved.get(k) != now.get(k))
    if changed:
        raise UserError(f"--resume: the checkpoint in {config.workdir} was trained with other values of "
                        f"{', '.join(changed)} (only {', '.join(FREE_FIELDS)} may change)")
    tree = serialization.from_state_dict(jax.device_get(template._asdict()), restored["state"])
    return training.TrainState(**tree), meta["data"]


def _trim_metrics(path: str, step: int) -> None:
    """Drops the lines of steps after ``step`` (logged after the checkpoint a run resumes from)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(kept)


def run(config: Any, *, resume: bool = False, should_stop: Callable[[], bool] = lambda: False,
        progress: Callable[[loop.Progress], None] | None = None) -> int:
    """Trains as ``config`` says; returns 0 (done: model.msgpack written) or 130 (stopped: checkpoint written).

    Raises:
      UserError: a bad config, missing or unreadable data, weights or style; a batch the devices cannot split;
        ``resume`` without a checkpoint, or a new run in a workdir that has one. Nothing is written then.
    """
    prob = problem(config)
    inputs = Inputs(config, prob)
    devices = jax.device_count()
    if config.batch % devices:
        raise UserError(f"--batch={config.batch}: must be a multiple of the {devices} device(s)")
    if config.batch % jax.process_count():
        raise UserError(f"--batch={config.batch}: must be a multiple of the {jax.process_count()} processes")
    found = latest_checkpoint(config.workdir)
    if resume and found is None:
        raise UserError(f"--resume: no checkpoint in {config.workdir}/checkpoints")
    if not resume and found is not None:
        raise UserError(f"--workdir={config.workdir} holds a checkpoint (step {found}): pass --resume to continue "
                        f"it, or choose another --workdir")
    lead = jax.process_index() == 0
    mesh = _mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))

    vgg_params = inputs.weights.params
    if prob.net == "adain":
        vgg_params = adain.encoder_params(vgg_params)
    vgg_params = jax.device_put(vgg_params, replicated)
    sources = {"content": (inputs.content_files, config.seed)}
    if prob.net == "adain":
        sources["style"] = (inputs.style_files, config.seed + 1)
    batches = data.Batches(sources, config.batch // jax.process_count(), config.size,
                           process_index=jax.process_index(), process_count=jax.process_count(),
                           threads=config.workers)

    def global_batch(local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}

    # The first batch before the workdir exists: a folder with no readable image is refused with nothing written.
    first = None if resume else global_batch(next(batches))
    style_target = None
    if prob.net == "johnson":
        style_target = jax.device_put(_style_targets(prob, vgg_params, jnp.asarray(inputs.style_rgb)), replicated)
    manager = _checkpoint_manager(config.workdir)  # creates the workdir: every input has been checked
    metrics_path = os.path.join(config.workdir, "metrics.jsonl")
    if resume:
        template = jax.eval_shape(lambda: training.TrainState(
            params=training.init_params(prob, jax.random.key(0)),
            opt_state=prob.optimizer().init(training.init_params(prob, jax.random.key(0))),
            step=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(0),
            norms={"content": jnp.zeros(()), "style": dict.fromkeys(prob.scale_keys(), jnp.zeros(()))}))
        template = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template)
        state, data_state = _restore_checkpoint(manager, found, template, config)
        batches.restore(data_state)
        if lead:
            _trim_metrics(metrics_path, found)
        pending = None
    else:
        pending = first
        state = _init(prob, int(config.seed), vgg_params, pending, style_target)
    state = jax.device_put(state, replicated)

    writer = None
    if lead:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(os.path.join(config.workdir, "tensorboard"))
    start = int(state.step)
    steps = int(config.steps)
    last_saved = start if resume else -1
    t_log, images_since = time.perf_counter(), 0
    try:
        with open(metrics_path, "a") as metrics:
            while int(state.step) < steps:
                if should_stop():
                    _save_checkpoint(manager, state, batches, config)
                    return EXIT_INTERRUPTED
                batch = pending if pending is not None else global_batch(next(batches))
                pending = None
                state, terms = _train_step(prob, vgg_params, style_target, state, batch)
                step = int(state.step)
                images_since += config.batch
                if step % config.log_every == 0 or step == steps:
                    values = {k: float(v) for k, v in jax.device_get(terms).items()}
                    if not all(math.isfinite(v) for v in values.values()):
                        _save_checkpoint(manager, state, batches, config)
                        raise UserError(f"the loss became non-finite at step {step} ({values}); try a smaller --lr")
                    now = time.perf_counter()
                    rate = images_since / max(now - t_log, 1e-9)
                    t_log, images_since = now, 0
                    if lead:
                        line = {"step": step, "loss": values, "images_per_s": rate, "skipped": batches.skipped}
                        metrics.write(json.dumps(line) + "\n")
                        metrics.flush()
                        for k, v in values.items():
                            writer.add_scalar(f"loss/{k}", v, step)
                        writer.add_scalar("images_per_s", rate, step)
                        writer.add_scalar("skipped_files", batches.skipped, step)
                    if progress:
                        progress(loop.Progress(step=step, steps=steps, losses=values, rate=rate / config.batch,
                                              start_step=start))
                if config.sample_every and step % config.sample_every == 0 and lead:
                    write_samples(config, prob, state, vgg_params, inputs, step)
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    _save_checkpoint(manager, state, batches, config)
                    last_saved = step
        if last_saved != int(state.step):
            _save_checkpoint(manager, state, batches, config)
        if lead:
            write_samples(config, prob, state, vgg_params, inputs, int(state.step))
            params = {"net": jax.device_get(state.params)}
            if prob.net == "adain":
                params["encoder"] = jax.device_get(vgg_params)
            w = inputs.weights  # which VGG-19 weights trained it: a model of random weights says so wherever shown
            trained_with = {"vgg_weights": {"path": w.path, "sha256": w.sha256, "origin": w.origin,
                                            "described": weights_lib.describe(w)}}
            model_file.save(os.path.join(config.workdir, "model.msgpack"), prob.net, params, prob.source,
                            {**config_record(config), **trained_with}, int(state.step))
        return EXIT_DONE
    finally:
        if writer is not None:
            writer.close()
        manager.close()


def write_samples(config: Any, prob: training.TrainProblem, state: training.TrainState, vgg_params: Any,
                  inputs: Inputs, step: int) -> None:
    """The held-out images stylised by the current network: ``samples/step_<step>_<name>.png``."""
    folder = os.path.join(config.workdir, "samples")
    for name, rgb, style in inputs.samples:
        out = _apply(prob, state.params, vgg_params, jnp.asarray(rgb[None]),
                     None if style is None else jnp.asarray(style[None]))
        image.save_image(os.path.join(folder, f"step_{step:07d}_{name}.png"), np.asarray(out[0]))

