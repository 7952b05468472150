"""Where a run's arrays live and which compiled functions compute on them: one interface, two layouts.

* :class:`JobMesh`: a stack of jobs (a single run is a batch of one) split over a mesh's ``"jobs"`` axis, the
  shared arrays (parameters, keys) replicated; each device computes its jobs one after another with one job's
  own functions (:func:`nst_jax.transfer.each_job` under ``jax.shard_map``), so a job of a batch gets its
  single run's floats, bit for bit.
* :class:`nst_jax.shard.ImageRows` (``--shard_image``): one run's image split by rows over a mesh.

Both implement :class:`Placement`, which the driver (:mod:`nst_jax.job`) uses without knowing which it has.
The compiled functions are ``jax.jit`` of the pure ones with the :class:`~nst_jax.transfer.Problem` and
:class:`~nst_jax.transfer.StepSettings` static, so runs of the same problem in one process (a notebook, the
comparison, batch rounds, tests) reuse jit's compilations.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nst_jax import transfer

JOB_AXIS = "jobs"
"""The mesh axis a batch's job axis is split over."""


class Placement(Protocol):
    """Where a run's arrays go and the compiled functions of its layout. Every array of a job (images,
    targets, multipliers, the loop state) has a leading job axis; the shared ones (parameters, keys) do not."""

    def problem(self, problem: transfer.Problem) -> transfer.Problem:
        """The problem as this layout computes it (e.g. VGG's input padded to whole shares of rows)."""

    def stacked(self, tree: Any) -> Any:
        """Host arrays with a job axis, placed."""

    def replicated(self, tree: Any) -> Any:
        """Shared host arrays, placed on every device."""

    def host(self, tree: Any) -> Any:
        """Placed arrays on the host (NumPy), as the run's shapes (an image's padding cut off)."""

    def readable(self, tree: Any) -> Any:
        """Placed arrays as a callback after a chunk may read them: as they are, or gathered on the host."""

    def function(self, name: str, problem: transfer.Problem) -> Callable[..., Any]:
        """The compiled per-job function ``name``: ``targets``, ``norms`` or ``energy``."""

    def compile_chunk(self, problem: transfer.Problem, settings: transfer.StepSettings, length: int,
                      *args: Any) -> Any:
        """The compiled :func:`nst_jax.transfer.chunk_report`, called as ``compiled(state, params, tgt, scales,
        key)`` (the state donated)."""


@dataclasses.dataclass
class JobMesh:
    """The job axis split over ``mesh``'s ``"jobs"`` axis (default: the default device alone), the shared
    arrays replicated. A :class:`Placement`."""

    mesh: Mesh | None = None

    def __post_init__(self) -> None:
        if self.mesh is None:
            self.mesh = Mesh(np.asarray(jax.devices()[:1]), (JOB_AXIS,))

    def problem(self, problem: transfer.Problem) -> transfer.Problem:
        return problem

    def stacked(self, tree: Any) -> Any:
        return jax.device_put(tree, NamedSharding(self.mesh, P(JOB_AXIS)))

    def replicated(self, tree: Any) -> Any:
        return jax.device_put(tree, NamedSharding(self.mesh, P()))

    def host(self, tree: Any) -> Any:
        return jax.device_get(tree)

    def readable(self, tree: Any) -> Any:
        return tree

    def function(self, name: str, problem: transfer.Problem) -> Callable[..., Any]:
        return _batched(name, problem, self.mesh)

    def compile_chunk(self, problem: transfer.Problem, settings: transfer.StepSettings, length: int,
                      *args: Any) -> Any:
        return _batched("chunk", problem, self.mesh, settings, length).lower(*args).compile()


def _energy_at(problem: transfer.Problem, params: Any, tgt: Any, scales: Any, x: jax.Array, key: jax.Array,
               step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    return transfer.energy(problem, params, tgt, scales, x, jax.random.fold_in(key, step))


def _on_devices(fn: Callable[..., Any], in_axes: tuple[int | None, ...], mesh: Mesh, name: str,
                donate: tuple[int, ...] = ()) -> Callable[..., Any]:
    """``fn`` of one job run for each job of a stack split over ``mesh``'s job axis: each device computes its
    own jobs one by one with ``fn``'s own computation (:func:`nst_jax.transfer.each_job`), so a batch job gets
    its single run's floats; nothing moves between devices. Arguments with ``in_axes`` None are replicated."""
    specs = tuple(P(JOB_AXIS) if axis == 0 else P() for axis in in_axes)
    per_device = jax.shard_map(transfer.each_job(fn, in_axes), mesh=mesh, in_specs=specs, out_specs=P(JOB_AXIS),
                               check_vma=False)

    def named(*args: Any) -> Any:
        return per_device(*args)

    named.__name__ = name  # the compiled program's name (logs, the compilation cache's entries: jit_chunk-...)
    return jax.jit(named, donate_argnums=donate)


@functools.lru_cache(maxsize=64)
def _batched(name: str, problem: transfer.Problem, mesh: Mesh, settings: transfer.StepSettings | None = None,
             length: int = 0) -> Callable[..., Any]:
    """The compiled per-device function ``name`` of a batch (cached per problem, settings and mesh)."""
    if name == "chunk":
        return _on_devices(functools.partial(transfer.chunk_report, problem, settings, length),
                           (0, None, 0, 0, None), mesh, name, (0,))
    fn, axes = {
        "targets": (transfer.targets, (None, 0, 0, None)),  # masks (spatial control): single runs only
        "norms": (transfer.gradient_norms, (None, 0, None, None, None)),
        "energy": (_energy_at, (None, 0, 0, 0, None, 0)),
    }[name]
    return _on_devices(functools.partial(fn, problem), axes, mesh, name)
