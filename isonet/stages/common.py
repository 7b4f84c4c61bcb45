"""Helpers shared by the stage functions: axial factor, progress lines."""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from fractions import Fraction
from collections.abc import Callable, Sequence
from pathlib import Path

from isonet.degrade import exact_factor
from isonet.errors import InputError

logger = logging.getLogger("isonet")


# relative tolerance between two axial factors, and between a voxel-size ratio and the simple
# fraction it stands for: voxel sizes in metadata carry rounding noise far below it, and a
# position error of 1e-6 of a plane per plane is far below anything an image shows
FACTOR_RTOL = 1e-6


def axial_factor(voxel_size, subsample=None, source="input") -> int | float:
    """Axial factor σ = voxel z / voxel x, or ``subsample`` when given; an int when integral.

    isonet keeps factors exact rather than rounding them: z 0.9 µm over xy 0.2 µm is σ = 4.5,
    1.3 / 0.325 is 4 and 1.0 / 0.3 is 10/3 (passed on as the float nearest to it, see
    :func:`isonet.degrade.factor_fraction`). A ratio within ``FACTOR_RTOL`` of a fraction with a
    denominator up to 1000 is that fraction (metadata stores 0.2 µm as 0.19999999 often enough).

    Raises
    ------
    InputError
        ``subsample`` is not a number >= 1, the lateral voxel sizes differ, or z / x is below 1.

    Examples
    --------
    >>> axial_factor((0.8, 0.2, 0.2)), axial_factor((0.9, 0.2, 0.2)), axial_factor((1.3, 0.325, 0.325))
    (4, 4.5, 4)
    >>> axial_factor((1.0, 0.3, 0.3)) == 10 / 3, axial_factor((0.8, 0.19999999, 0.19999999))
    (True, 4)
    """
    if subsample is not None:
        if isinstance(subsample, bool) or not isinstance(subsample, numbers.Real) or not subsample >= 1 \
                or not math.isfinite(subsample):
            raise InputError(f"{source}: subsample must be a number >= 1 (the z step in pixels), got {subsample}")
        return exact_factor(_simple_fraction(subsample))
    vz, vy, vx = voxel_size
    if abs(vy - vx) > 1e-3 * vx:
        raise InputError(f"{source}: lateral voxel sizes differ (y {vy} µm, x {vx} µm); resample to square pixels first")
    ratio = _simple_fraction(vz / vx)
    if ratio < 1:
        raise InputError(
            f"{source}: voxel size ratio z/x = {vz}/{vx} = {float(ratio):.4g} is below 1, so z is sampled more finely "
            "than x and there is nothing to restore; check the voxel sizes (z y x) or set subsample: for this sample"
        )
    return exact_factor(ratio)


def _simple_fraction(value) -> Fraction | float:
    """``value``, or the fraction with a denominator up to 1000 within ``FACTOR_RTOL`` of it."""
    near = Fraction(float(value)).limit_denominator(1000)
    return near if abs(near - Fraction(float(value))) <= FACTOR_RTOL * abs(value) else float(value)


def same_factor(a, b) -> bool:
    """Whether two axial factors agree within ``FACTOR_RTOL`` (relative)."""
    return abs(float(a) - float(b)) <= FACTOR_RTOL * max(abs(float(a)), abs(float(b)))


def isotropic_voxel_size(voxel_size, factor) -> tuple[float, float, float]:
    """Voxel size of a volume upsampled along z by σ: ``(dz / σ, dy, dx)``.

    When ``dz / σ`` is ``dx`` (within ``FACTOR_RTOL``), as it is whenever σ came from the voxel
    sizes, the z size is written as ``dx`` itself, not as a rounded quotient.

    Examples
    --------
    >>> isotropic_voxel_size((0.9, 0.2, 0.2), 4.5), isotropic_voxel_size((1.0, 0.3, 0.3), 10 / 3)
    ((0.2, 0.2, 0.2), (0.3, 0.3, 0.3))
    """
    vz, vy, vx = (float(v) for v in voxel_size)
    z = vz / float(factor)
    return (vx if abs(z - vx) <= FACTOR_RTOL * vx else z, vy, vx)


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
