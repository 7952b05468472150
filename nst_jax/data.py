"""Training images from a folder, with grain: listed recursively, shuffled by seed, decoded and randomly cropped
in background threads and prefetched, never the whole set in memory.

The stream is a :class:`grain.python.MapDataset`: the sorted file list, shuffled per epoch by ``seed``, repeated
without end, this process's share taken (every ``process_count``-th element), then decoded. Element i's crop is
drawn from ``numpy.random.default_rng([seed, i])``, so element i is the same image and crop however many threads
decode it and whenever it is read; the position in the stream (:meth:`Batches.state`, grain's iterator state
plus the count of skipped files) is all a checkpoint needs to continue it exactly.

An element that cannot be decoded (any :class:`~nst_jax.errors.ImageError`) is skipped and counted; a folder
with no image file, or whose every file fails, is an error (:class:`~nst_jax.errors.UserError`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import grain.python as grain
import numpy as np

from nst_jax import image
from nst_jax.errors import ImageError, UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm")


def list_images(folder: str, flag: str = "--data") -> list[str]:
    """Every image file under ``folder`` (recursively, by extension, sorted). UserError if there is none."""
    if not folder:
        raise UserError(f"{flag} is required: a folder of training images")
    if not os.path.isdir(folder):
        raise UserError(f"{flag}={folder}: no such folder")
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(folder, followlinks=True)
                   for name in names if name.lower().endswith(EXTENSIONS))
    if not files:
        raise UserError(f"{flag}={folder}: no image files ({', '.join(EXTENSIONS)}) in it or below it")
    return files


def split_holdout(files: Sequence[str], count: int) -> tuple[list[str], list[str]]:
    """(training files, held-out files): the last ``count`` files are held out, as long as one remains to train
    on (otherwise none are)."""
    count = count if len(files) > count else 0
    return list(files[: len(files) - count]), list(files[len(files) - count:])


def crop(rgb: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The image resized so its short side is ``size`` (aspect kept), then a random ``size`` x ``size`` crop."""
    h, w = rgb.shape[:2]
    scale = size / min(h, w)
    rgb = image.resize(rgb, (max(size, round(h * scale)), max(size, round(w * scale))))
    top = int(rng.integers(0, rgb.shape[0] - size + 1))
    left = int(rng.integers(0, rgb.shape[1] - size + 1))
    return rgb[top: top + size, left: left + size]


class _Decode(grain.MapTransform):
    """Index and path -> {"image": (size, size, 3) float32} or {"skipped": path}."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed

    def map(self, element: tuple[int, str]) -> dict[str, Any]:
        index, path = element
        try:
            rgb = image.load_image(path)
        except ImageError:
            return {"skipped": path}
        return {"image": crop(rgb, self.size, np.random.default_rng([self.seed, index]))}


def stream(files: Sequence[str], size: int, seed: int, *, process_index: int = 0, process_count: int = 1,
           threads: int = 4, prefetch: int = 16) -> grain.IterDataset:
    """The endless, shuffled, decoded stream of ``files`` (this process's share) as a grain IterDataset."""
    ds = grain.MapDataset.source(list(files)).shuffle(seed=seed).repeat(None)
    ds = ds.slice(slice(process_index, None, process_count)).map_with_index(lambda i, path: (i, path))
    ds = ds.map(_Decode(size, seed))
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, threads), prefetch_buffer_size=max(1, prefetch)))


class Batches:
    """Batches of crops from one or more folders' streams: ``next(b)`` -> {name: (batch, size, size, 3) float32}.

    Args:
      sources: {name: (files, seed)}, e.g. {"content": ...} or {"content": ..., "style": ...} (adain).
      batch: images per batch from each source (this process's share of the global batch).
      size: crop side in pixels.
    """

    def __init__(self, sources: dict[str, tuple[Sequence[str], int]], batch: int, size: int, *,
                 process_index: int = 0, process_count: int = 1, threads: int = 4):
        self.batch = batch
        self.files = {name: list(files) for name, (files, _) in sources.items()}
        self._datasets = {name: stream(files, size, seed, process_index=process_index, process_count=process_count,
                                       threads=threads, prefetch=2 * batch)
                          for name, (files, seed) in sources.items()}
        self._iters = {name: iter(ds) for name, ds in self._datasets.items()}
        self.skipped = 0
        self._failures_in_a_row = dict.fromkeys(sources, 0)

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return {name: np.stack([self._next_image(name) for _ in range(self.batch)]) for name in self._iters}

    def _next_image(self, name: str) -> np.ndarray:
        while True:
            element = next(self._iters[name])
            if "image" in element:
                self._failures_in_a_row[name] = 0
                return element["image"]
            self.skipped += 1
            self._failures_in_a_row[name] += 1
            if self._failures_in_a_row[name] >= len(self.files[name]):
                folder = os.path.commonpath(self.files[name]) if self.files[name] else ""
                raise UserError(f"no readable image among the {len(self.files[name])} file(s) of {name} data "
                                f"({folder})")

    def state(self) -> dict[str, Any]:
        """The position in every stream, JSON-serialisable (a checkpoint's ``data``)."""
        return {"skipped": self.skipped, "streams": {name: it.get_state() for name, it in self._iters.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Continues from :meth:`state`'s position."""
        self.skipped = int(state["skipped"])
        for name, it in self._iters.items():
            it.set_state(state["streams"][name])
