"""Helpers shared by the stage functions: axial factor, progress lines."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from isonet.degrade import FACTOR_RTOL, axial_factor, isotropic_voxel_size, same_factor  # noqa: F401  (stages import them from here)
from isonet.errors import InputError

logger = logging.getLogger("isonet")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding Zarr (v3 or v2) metadata at its root."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def check_output_path(output: str | os.PathLike, inputs=(), store: bool = False) -> Path:
    """Refuse an output path that would overwrite an input or something other than an earlier output.

    A stage replaces its output atomically when it exists; that is safe for a store or file it
    wrote before, but not for a directory of other files given by mistake, nor for a path inside
    one of its inputs (writing there would change the input).

    Parameters
    ----------
    output : str or path
        Where the stage writes.
    inputs : sequence of str or path
        The stage's input files and stores.
    store : bool
        The output is a (Zarr) directory; else a single file.

    Returns
    -------
    output : Path

    Raises
    ------
    InputError
        ``output`` is an input, lies inside one or holds one; it exists as a file where a store
        is written, as a non-empty directory that is not a Zarr store, or as a non-empty
        directory where a file is written.

    Examples
    --------
    >>> check_output_path("out.zarr", ["in.tif"], store=True)
    PosixPath('out.zarr')
    """
    output = Path(output)
    target = output.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or source in target.parents or target in source.parents:
            raise InputError(
                f"{output}: output would overwrite or write inside the input {source}; choose another output path"
            )
    if not output.exists() and not output.is_symlink():
        return output
    if output.is_dir() and not output.is_symlink() and not any(output.iterdir()):
        return output  # an empty directory (e.g. made by a workflow manager) holds nothing to lose
    if store and not output.is_dir():
        raise InputError(f"{output}: exists and is not a directory (Zarr store); remove it or choose another path")
    if store and not is_zarr_store(output):
        raise InputError(
            f"{output}: exists and is not a Zarr store, so it is not replaced; remove it or choose another path"
        )
    if not store and output.is_dir():
        raise InputError(f"{output}: exists and is a directory; remove it or choose another output file name")
    return output


class Progress:
    """Logs ``label: i/n (pct), elapsed, ETA`` at most every ``every`` seconds and at the end."""

    def __init__(self, label: str, total: int, every: float = 5.0, log=None):
        self.label, self.total, self.every = label, max(int(total), 1), every
        self.log = log or logger.info
        self.t0 = self.last = time.perf_counter()
        self.done = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            el = now - self.t0
            eta = el / self.done * (self.total - self.done) if self.done else float("nan")
            self.log(
                f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f} %), "
                f"{el:.0f} s elapsed, ETA {eta:.0f} s"
            )


def time_step_of(increment: float | None, times: Sequence[int], say: Callable[[str], None]) -> float | None:
    """Seconds between the kept time points: evenly spaced ones keep a step, others have none."""
    steps = {b - a for a, b in zip(times, times[1:])}
    if increment is None or not times:
        return None
    if len(times) == 1:
        return increment
    if len(steps) == 1 and steps.pop() > 0:
        return increment * (times[1] - times[0])
    say(f"time points {list(times)} are not evenly spaced in increasing order; the t axis has no time step")
    return None
