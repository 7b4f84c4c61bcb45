"""Helpers shared by the stage functions: axial factor, progress lines."""

from __future__ import annotations

import logging
import time

from isonet.errors import InputError

logger = logging.getLogger("isonet")


def axial_factor(voxel_size, subsample=None, source="input") -> int:
    """Integer axial subsampling factor σ = voxel z / voxel x, or ``subsample`` when given.

    isonet keeps factors exact: a ratio that is not an integer (within 1 %) is an error rather
    than being rounded silently.
    """
    if subsample is not None:
        if int(subsample) != subsample or subsample < 1:
            raise InputError(f"{source}: subsample must be a positive integer, got {subsample}")
        return int(subsample)
    vz, vy, vx = voxel_size
    if abs(vy - vx) > 1e-3 * vx:
        raise InputError(f"{source}: lateral voxel sizes differ (y {vy} µm, x {vx} µm); resample to square pixels first")
    ratio = vz / vx
    if ratio < 1 - 1e-2 or abs(ratio - round(ratio)) > 1e-2 * ratio:
        raise InputError(
            f"{source}: voxel size ratio z/x = {vz}/{vx} = {ratio:.4g} is not an integer; "
            "set subsample: for this sample or resample z to an integer multiple of the pixel size"
        )
    return int(round(ratio))


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
