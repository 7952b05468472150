"""One image over several devices: its rows sharded over a mesh of the local devices (``--shard_image``).

Batch mode spreads many jobs over the devices and ``--strips`` fits a large image into one device; this splits
one image's work over all of them. The image, its optimiser state and every VGG activation are split by rows
over a one-axis :class:`jax.sharding.Mesh` (axis ``"rows"``, ``NamedSharding(mesh, P(..., "rows", None,
None))``); the network's parameters, the style targets, the multipliers and the random keys are replicated.
Nothing here is hand-written communication: the step functions of :mod:`nst_jax.transfer` are compiled with
``jax.jit`` over arguments placed with those shardings, and XLA's SPMD partitioner does the rest:

* convolutions split by rows, each device exchanging one row per side with its neighbours per 3x3 layer (the
  halo); poolings stay local because every device's share of rows is a multiple of 2**p, p the poolings down
  to the deepest layer (:func:`nst_jax.transfer.aligned_rows`; the padding rows are zeroed after every layer,
  as :mod:`nst_jax.strips` does, so they act as the convolutions' zero padding);
* sums over positions (content loss, Gram matrices, means, covariances, sums of squares, TV) become
  per-device partial sums and an all-reduce;
* the pairwise and sampling estimators (the Gaussian's and mkmmd's random pairs, swd's sorted projections, the
  rff features and the tiled full and unbiased sums) use all of a layer's samples at once: the partitioner
  makes that layer's samples whole on every device (all-gathers for the full and rff estimators; for the
  paired estimator and swd it completes their index gathers and sorts without an all-gather) and scatters
  their gradient back by rows. The draws are then exactly the single run's (the same key, the same
  permutation of the same M samples), so a sharded run equals the single-device run up to the order of float
  sums for every method (W2's eigendecompositions amplify that rounding, as with strips); the price is up to
  one whole activation per style layer of these methods per device (relu1_1: 64 floats per pixel).

Heights that do not split evenly are padded: the state is held with :attr:`ImageRows.padded` rows (the image's
rows, then zero rows), each compiled function cuts it to the image's ``rows`` on entry and pads its results
back on exit, so every computation between sees exactly the single run's arrays.

With ``--multihost`` (:func:`run_devices`) the mesh holds every process's devices (a TPU slice): each process
places its own copy of the inputs on its own devices, gathers the other processes' rows when the state comes
back to the host, and the processes agree on stopping (:meth:`ImageRows.agree`).

Not combined with ``--strips`` (a strip's slab would cut across devices' shares) nor with batch mode (which
already gives each device jobs of its own): :func:`nst_jax.config.check` and the command line say so.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nst_jax import transfer

MESH_AXIS = "rows"


@dataclasses.dataclass(frozen=True)
class ImageRows:
    """How one run's image of ``rows`` x ``width`` pixels lies over ``mesh``: padded to ``padded`` rows,
    ``padded // devices`` rows a device. Hashable: a static argument of the compiled functions below.

    Image-shaped leaves of a tree are those whose last three axes are (rows, width, 3) (unpadded) or
    (padded, width, 3): the image, Adam's moments, L-BFGS's history (with a leading axis), a style image of
    the content's size. Everything else is replicated."""

    mesh: Mesh
    rows: int
    width: int
    padded: int

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    def problem(self, problem: transfer.Problem) -> transfer.Problem:
        """``problem`` with VGG's input padded to whole, pooling-aligned shares of rows."""
        return dataclasses.replace(problem, shard_rows=self.devices)

    def _rows_axis(self, a: Any, rows: int) -> bool:
        return getattr(a, "ndim", 0) >= 3 and tuple(a.shape[-3:]) == (rows, self.width, 3)

    def sharding(self, a: Any) -> NamedSharding:
        """Rows over the mesh for a padded image-shaped leaf, replicated for anything else."""
        if self._rows_axis(a, self.padded):
            return NamedSharding(self.mesh, P(*([None] * (a.ndim - 3)), MESH_AXIS, None, None))
        return NamedSharding(self.mesh, P())

    def pad(self, tree: Any) -> Any:
        """Image-shaped leaves padded with zero rows to ``padded`` (inside a compiled function or not)."""
        def one(a):
            if not self._rows_axis(a, self.rows) or self.padded == self.rows:
                return a
            return jnp.pad(a, [(0, 0)] * (a.ndim - 3) + [(0, self.padded - self.rows), (0, 0), (0, 0)])
        return jax.tree.map(one, tree)

    def unpad(self, tree: Any) -> Any:
        """Padded image-shaped leaves cut to the image's rows."""
        return jax.tree.map(lambda a: a[..., : self.rows, :, :] if self._rows_axis(a, self.padded) else a, tree)

    def constrain(self, tree: Any) -> Any:
        """Inside a compiled function: each leaf held as :meth:`sharding` says."""
        return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, self.sharding(a)), tree)

    @property
    def processes(self) -> int:
        """How many processes own the mesh's devices: more than 1 for one image over a TPU slice
        (``--multihost``), where every process runs this same program on its own copy of the inputs."""
        return len({d.process_index for d in self.mesh.devices.flat})

    def put(self, tree: Any) -> Any:
        """Host or device arrays padded and placed: rows over the mesh, or replicated."""
        padded = self.pad(tree)
        return jax.tree.map(lambda a: _put(a, self.sharding(a)), padded)

    def stacked(self, tree: Any) -> Any:
        """The run's arrays (a job axis of one) placed as :meth:`put` does (:class:`nst_jax.placement.Placement`)."""
        return self.put(tree)

    def replicated(self, tree: Any) -> Any:
        return jax.tree.map(lambda a: _put(a, NamedSharding(self.mesh, P())), tree)

    def readable(self, tree: Any) -> Any:
        """What a callback after a chunk reads: the arrays on the host, the rows gathered (:meth:`host`)."""
        return self.host(tree)

    def function(self, name: str, problem: transfer.Problem) -> Any:
        """The compiled function ``name`` (``targets``, ``norms`` or ``energy``) of this layout."""
        fn = {"targets": self.targets, "norms": self.gradient_norms, "energy": self.energy}[name]
        return functools.partial(fn, problem)

    def host(self, tree: Any) -> Any:
        """A tree of placed arrays on the host (NumPy), image-shaped leaves cut to the image's rows. Over several
        processes each process gathers the rows the others hold (a collective: every process calls it)."""
        return self.unpad(jax.tree.map(_fetch, tree))

    def agree(self, flag: bool) -> bool:
        """True on every process when it is True on any (a collective over several processes): a stop that one
        process sees (Ctrl-C, the preview's button) must stop all of them at the same step."""
        return any(self.same_everywhere(int(bool(flag))))

    def same_everywhere(self, value: int) -> list[int]:
        """Every process's ``value`` (a collective over several processes; ``[value]`` for one)."""
        if self.processes == 1:
            return [int(value)]
        from jax.experimental import multihost_utils  # only multi-process runs need it
        return [int(v) for v in np.ravel(multihost_utils.process_allgather(np.asarray(int(value), np.int64)))]

    def shard_shapes(self, a: jax.Array) -> list[tuple[int, ...]]:
        """The shape of each device's piece of a placed array."""
        return [tuple(s.data.shape) for s in a.addressable_shards]

    # The run's compiled functions, with the signatures of :mod:`nst_jax.job`'s per-job ones: a job axis of one
    # on the job's arrays (images, targets, multipliers, state), none on the shared ones (parameters, keys).

    def targets(self, problem: transfer.Problem, params: Any, content: jax.Array, styles: Sequence[jax.Array],
                masks: None = None) -> dict[str, Any]:
        if masks is not None:
            raise ValueError("masks (spatial control) are not split over devices")  # config.check says so first
        with jax.set_mesh(self.mesh):  # traced knowing its mesh (see below)
            return _TARGETS(self, problem, *self.put((params, content, list(styles))))

    def gradient_norms(self, problem: transfer.Problem, params: Any, tgt: Any, base: Any, x_ref: jax.Array,
                       key: jax.Array) -> jax.Array:
        with jax.set_mesh(self.mesh):
            return _NORMS(self, problem, *self.put((params, tgt, base, x_ref)), self.replicated(key))

    def energy(self, problem: transfer.Problem, params: Any, tgt: Any, scales: Any, x: jax.Array, key: jax.Array,
               step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        with jax.set_mesh(self.mesh):
            return _ENERGY(self, problem, *self.put((params, tgt, scales, x)), self.replicated(key), step)

    def compile_chunk(self, problem: transfer.Problem, settings: transfer.StepSettings, length: int,
                      state: transfer.LoopState, params: Any, tgt: Any, scales: Any, key: jax.Array) -> Any:
        """The compiled chunk of steps with its report (:func:`nst_jax.transfer.chunk_report`), called as
        ``compiled(state, params, tgt, scales, key)`` with the state placed by :meth:`put` (and donated)."""
        with jax.set_mesh(self.mesh):
            return _CHUNK.lower(self, problem, settings, length, state, params, tgt, scales, key).compile()


def run_devices() -> list[jax.Device]:
    """The devices one image is split over: the local devices, or every process's after
    ``jax.distributed.initialize`` (``--multihost``: one image over every chip of a TPU slice)."""
    return list(jax.devices() if jax.process_count() > 1 else jax.local_devices())


def over(devices: Sequence[jax.Device], problem: transfer.Problem, shape: Sequence[int]) -> ImageRows:
    """The layout of an image of ``shape`` (H, W, 3) over ``devices`` for ``problem``."""
    try:  # neighbouring shares of rows on neighbouring chips (a TPU slice's interconnect), where it knows how
        ordered = mesh_utils.create_device_mesh((len(devices),), devices=list(devices))
    except (ValueError, NotImplementedError, AssertionError):
        ordered = np.asarray(devices)
    mesh = Mesh(ordered, (MESH_AXIS,))
    rows, width = int(shape[0]), int(shape[1])
    # One device: nothing to align (transfer.features pads only for shard_rows > 1).
    padded = rows if len(devices) == 1 else transfer.aligned_rows(
        dataclasses.replace(problem, shard_rows=len(devices)), rows)
    return ImageRows(mesh, rows, width, padded)


def _put(a: Any, sharding: NamedSharding) -> jax.Array:
    """``jax.device_put``, also onto devices of other processes: there each process places its own host copy
    of the (identical) value, so device arrays go through the host and random keys through their data."""
    if sharding.is_fully_addressable or (isinstance(a, jax.Array) and not a.is_fully_addressable):
        return jax.device_put(a, sharding)  # local, or already placed over the processes' devices
    if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
        data = _put(np.asarray(jax.random.key_data(a)), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    return jax.device_put(np.asarray(a), sharding)


def _fetch(a: Any) -> np.ndarray:
    """A placed array on the host: other processes' rows gathered where the array spans them."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.sharding.is_fully_replicated:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def _one(tree: Any) -> Any:
    return jax.tree.map(lambda a: a[0], tree)


def _stack(tree: Any) -> Any:
    return jax.tree.map(lambda a: a[None], tree)


def _wrap(fn: Any, layout: ImageRows, *args: Any) -> Any:
    """``fn`` on the arguments cut to the image's rows, its results padded back and placed."""
    return layout.constrain(layout.pad(fn(*layout.unpad(args))))


def _targets(layout: ImageRows, problem: transfer.Problem, params: Any, content: jax.Array,
             styles: Sequence[jax.Array]) -> dict[str, Any]:
    return _wrap(lambda p, c, st: _stack(transfer.targets(problem, p, c[0], [s[0] for s in st])), layout,
                 params, content, styles)


def _norms(layout: ImageRows, problem: transfer.Problem, params: Any, tgt: Any, base: Any, x_ref: jax.Array,
           key: jax.Array) -> jax.Array:
    return _wrap(lambda p, t, b, x: transfer.gradient_norms(problem, p, _one(t), b, x, key)[None], layout,
                 params, tgt, base, x_ref)


def _energy(layout: ImageRows, problem: transfer.Problem, params: Any, tgt: Any, scales: Any, x: jax.Array,
            key: jax.Array, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    def one(p, t, s, y):
        return _stack(transfer.energy(problem, p, _one(t), _one(s), y[0], jax.random.fold_in(key, step[0])))
    return _wrap(one, layout, params, tgt, scales, x)


def _chunk(layout: ImageRows, problem: transfer.Problem, settings: transfer.StepSettings, length: int,
           state: transfer.LoopState, params: Any, tgt: Any, scales: Any, key: jax.Array) -> Any:
    def one(st, p, t, s):
        return _stack(transfer.chunk_report(problem, settings, length, _one(st), p, _one(t), _one(s), key))
    return _wrap(one, layout, state, params, tgt, scales)


# Compiled (and traced) inside ``jax.set_mesh(layout.mesh)``: a function that would call back into Python from
# every device of a CPU mesh at once sees the mesh and does not (nst_jax.losses.wasserstein.column_order).
_TARGETS = jax.jit(_targets, static_argnums=(0, 1))
_NORMS = jax.jit(_norms, static_argnums=(0, 1))
_ENERGY = jax.jit(_energy, static_argnums=(0, 1))
_CHUNK = jax.jit(_chunk, static_argnums=(0, 1, 2, 3), donate_argnums=4)
