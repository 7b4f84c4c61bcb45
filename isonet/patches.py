"""Training pairs from the lateral planes of the volume being restored.

A lateral (yx) plane is sharp. Degrading it as the microscope degrades the axial axis gives a
plane that looks like an axial slice, and the network learns to map it back to the sharp plane:
blur with the PSF rotated into the plane (its axial profile along x), keep the columns at
``phase + k·σ`` (the acquired planes), add the camera's noise to those samples, and upsample back
with the same cubic interpolation that later upsamples the volume along z.

A non-integer σ (4.5, 10/3) is degraded at its own step, not a rounded one. The phase is a whole
column, so the upsampled samples land on the plane's columns ``phase, phase + 1, ...`` and the
target is the sharp plane itself, never an interpolation of it; the acquired columns at
``phase + k·σ`` that fall between two columns are read from the blurred plane with the
band-limited interpolation of :func:`isonet.degrade.subsample_axis` (the blur makes that plane
smooth along x). With σ = ``num / den`` the offsets of the upsampled samples from their taps
repeat every ``num`` columns, so a patch is placed by its first column modulo ``num``; this is
the integer-σ offset when ``den = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import Camera, add_camera_noise
from .degrade import (blur2d_bands, blurred_shape, cubic_positions, exact_factor, factor_fraction, reflect_indices,
                      subsample_axis, subsampled_length, upsample_axis, upsampled_length)


@dataclass(frozen=True)
class Normalization:
    """Percentile normalisation ``(x - low) / (high - low)``, stored with the model for reuse."""

    low: float
    high: float
    percentiles: tuple[float, float] = (1.0, 99.8)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - np.float32(self.low)) / np.float32(self.high - self.low)).astype(
            np.float32, copy=False
        )

    def invert(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float32) * np.float32(self.high - self.low) + np.float32(self.low)).astype(
            np.float32, copy=False
        )

    def to_dict(self) -> dict:
        return {"low": float(self.low), "high": float(self.high), "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(float(d["low"]), float(d["high"]), tuple(d.get("percentiles", (1.0, 99.8))))


def fit_normalization(sample: np.ndarray, low: float = 1.0, high: float = 99.8) -> Normalization:
    """Percentiles of a sample of the volume (e.g. a subset of its planes).

    Examples
    --------
    >>> n = fit_normalization(np.arange(1001.0), 0, 100)
    >>> n.low, n.high, float(n.apply(500.0))
    (0.0, 1000.0, 0.5)
    """
    sample = np.asarray(sample)
    lo, hi = np.percentile(sample[np.isfinite(sample)], [low, high])
    if not hi > lo:
        raise ValueError(
            f"the volume is flat between its {low} and {high} percentiles ({lo}); nothing to restore"
        )
    return Normalization(float(lo), float(hi), (float(low), float(high)))


def acquire_plane(plane: np.ndarray, kernel: np.ndarray, factor, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """What the microscope acquires of a lateral plane turned axial: blurred, columns ``phase + k·σ``.

    Parameters
    ----------
    plane : ndarray (H, W)
        A lateral plane (normalised).
    kernel : ndarray (kh, kw)
        2D PSF kernel with the axial profile along x (:func:`isonet.psf.lateral_plane_kernel`).
    factor : int or float
        Axial subsampling factor σ >= 1, not necessarily an integer.
    phase : int
        The column the subsampling starts at, an integer in ``[0, σ)``.

    Returns
    -------
    samples : ndarray (H, n), float32
        The noise-free acquired columns of the blurred plane at ``phase, phase + σ, phase + 2σ, ...``
        (interpolated where ``phase + k·σ`` falls between two columns). The plane is blurred and
        subsampled in bands of rows (:func:`isonet.degrade.blur2d_bands`): the working memory
        is a band and one FFT tile, whatever the plane's size; the samples equal those of the
        whole blurred plane up to float32 rounding.
    target : ndarray (H, upsampled_length(n, σ)), float32
        The plane's columns from ``phase`` on, aligned with the samples upsampled by σ.
    """
    height, width = blurred_shape(plane.shape, kernel.shape)
    n = subsampled_length(width, factor, phase)
    if n < 2:
        raise ValueError(f"plane of width {plane.shape[1]} is too narrow to subsample by {factor}")
    # the subsampling runs along each row, so the blurred plane is reduced band by band, never held whole
    samples = np.empty((height, n), np.float32)
    for start, stop, rows in blur2d_bands(plane, kernel):
        samples[start:stop] = subsample_axis(rows, factor, axis=1, phase=phase)
    width = upsampled_length(samples.shape[1], factor)
    return samples, np.asarray(plane[:, phase : phase + width], dtype=np.float32)


def degrade_plane(
    plane: np.ndarray,
    kernel: np.ndarray,
    factor,
    phase: int,
    camera: Camera | None = None,
    norm: Normalization | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (input, target) pair from a whole lateral plane, degraded in acquisition order.

    Blur with the training kernel, keep the columns ``phase + k·σ`` (:func:`acquire_plane`), add
    the camera's shot and read noise to those acquired samples, and upsample them back with the
    cubic interpolation that upsamples the volume along z. The input then carries the noise of a
    real axial slice: its variance depends on the distance to the nearest acquired plane and it
    is correlated along the axial axis.

    Parameters
    ----------
    plane, kernel, factor, phase
        As in :func:`acquire_plane`.
    camera : Camera, optional
        Camera noise to add (None: noise-free).
    norm : Normalization
        The normalisation of ``plane`` (needed with ``camera``, to work in counts).
    rng : numpy.random.Generator
        Source of the noise (needed with ``camera``).

    Returns
    -------
    degraded, target : ndarray (H, W'), float32, aligned column for column.
    """
    samples, target = acquire_plane(plane, kernel, factor, phase)
    if camera is not None:
        samples = add_camera_noise(samples, camera, norm.low, norm.high, rng)
    return upsample_axis(samples, factor, axis=1), target


@dataclass
class TrainingPairs:
    """Patch pairs kept as noise-free acquired samples, degraded anew each time they are drawn.

    Patch ``i``'s input is the cubic upsampling of ``samples[i] + noise`` at the patch's columns:
    the acquired samples cover the patch plus the taps the cubic interpolation needs (one
    sample before, two after, mirrored at the plane's edges). For an integer σ that is
    ``upsample(samples[i] + noise)[:, offsets[i] + factor :][:, :P]``. :meth:`inputs` draws fresh
    camera noise each call, so a network never sees the same noisy input twice.

    Attributes
    ----------
    samples : ndarray (N, P, S), float32
        Noise-free acquired samples (normalised), the axial axis last.
    offsets : ndarray (N,), int
        Each patch's first column on the upsampled grid of its plane, modulo ``num`` of σ = ``num / den``
        (for an integer σ: its position after the first stored sample upsampled, minus σ). The
        first stored sample is the acquired sample before the one at or left of that column.
    targets : ndarray (N, P, P), float32
    factor : int or float
        σ, an int when integral (:func:`isonet.degrade.exact_factor`).
    camera : Camera or None
    norm : Normalization
    """

    samples: np.ndarray
    offsets: np.ndarray
    targets: np.ndarray
    factor: int | float
    camera: Camera | None
    norm: Normalization

    def __len__(self) -> int:
        return len(self.targets)

    def inputs(self, index, rng: np.random.Generator | None = None) -> np.ndarray:
        """Degraded inputs of the patches ``index`` (noise from ``rng``; noise-free without it)."""
        samples = self.samples[index]
        if self.camera is not None and rng is not None:
            samples = add_camera_noise(samples, self.camera, self.norm.low, self.norm.high, rng)
        offsets = np.asarray(self.offsets[index])
        k, weights = cubic_positions(offsets[..., None] + np.arange(self.targets.shape[-1]), self.factor)
        first = cubic_positions(offsets, self.factor)[0]
        taps = (k - first[..., None])[..., None, :]  # tap k - 1 within the stored samples, one row for all rows
        out = np.zeros(samples.shape[:-1] + taps.shape[-1:], np.float32)
        for t in range(4):  # the sum of upsample_axis, term for term
            w = weights[..., None, :, t].astype(np.float32)
            out += w * np.take_along_axis(samples, taps + t, axis=-1)
        return out

    def subset(self, index) -> TrainingPairs:
        return TrainingPairs(self.samples[index], self.offsets[index], self.targets[index], self.factor,
                             self.camera, self.norm)


def sample_training_pairs(
    planes,
    kernel: np.ndarray,
    factor,
    n_patches: int,
    patch_size: int = 64,
    foreground_threshold: float | None = None,
    foreground_fraction: float = 0.8,
    both_lateral_axes: bool = True,
    seed: int = 0,
    camera: Camera | None = None,
    norm: Normalization | None = None,
) -> TrainingPairs:
    """Sample ``n_patches`` patch pairs from lateral planes, as noise-free acquired samples.

    Parameters
    ----------
    planes : sequence of ndarray (H, W)
        Normalised lateral planes of the volume.
    kernel, factor
        As in :func:`acquire_plane`.
    n_patches : int
        Number of patch pairs to return (spread evenly over the planes).
    patch_size : int
        Square patch side, a multiple of 4.
    foreground_threshold : float, optional
        Patches centred on a target value above it are preferred (``foreground_fraction`` of them).
    both_lateral_axes : bool
        Also use the plane transposed, so that y as well as x plays the axial axis.
    seed : int
    camera : Camera, optional
        The camera whose noise :meth:`TrainingPairs.inputs` adds (None: noise-free inputs).
    norm : Normalization, optional
        The normalisation of ``planes`` (needed with ``camera``).

    Returns
    -------
    TrainingPairs; inputs and targets are ``patch_size`` square with the axial axis last.
    """
    if patch_size % 4:
        raise ValueError(f"patch_size must be a multiple of 4, got {patch_size}")
    if camera is not None and norm is None:
        raise ValueError("camera noise needs the planes' normalisation (norm)")
    planes = list(planes)
    if not planes:
        raise ValueError("no planes to sample training patches from")
    rng = np.random.default_rng(seed)
    per_plane = np.full(len(planes), n_patches // len(planes))
    per_plane[rng.choice(len(planes), n_patches % len(planes), replace=False)] += 1
    f = factor_fraction(factor)
    # stored samples per patch: the taps of its columns, wherever the patch starts
    width = ((patch_size - 1) * f.denominator + f.numerator - 1) // f.numerator + 4
    S = np.empty((n_patches, patch_size, width), np.float32)
    Y = np.empty((n_patches, patch_size, patch_size), np.float32)
    offsets = np.empty(n_patches, np.int64)
    i = 0
    for plane, count in zip(planes, per_plane):
        if count == 0:
            continue
        if min(plane.shape) < patch_size + factor:
            raise ValueError(
                f"lateral planes of shape {plane.shape} are too small for patch_size {patch_size}; lower patch_size"
            )
        if both_lateral_axes and rng.random() < 0.5:
            plane = plane.T
        samples, target = acquire_plane(plane, kernel, factor, int(rng.integers(math.ceil(f))))
        ys, xs = _patch_corners(target, count, patch_size, foreground_threshold, foreground_fraction, rng)
        for y0, x0 in zip(ys, xs):
            offsets[i] = int(x0) % f.numerator
            k0 = int(x0) * f.denominator // f.numerator  # the acquired sample at or left of x0
            cols = reflect_indices(np.arange(k0 - 1, k0 - 1 + width), samples.shape[1])
            S[i] = samples[y0 : y0 + patch_size, cols]
            Y[i] = target[y0 : y0 + patch_size, x0 : x0 + patch_size]
            i += 1
    return TrainingPairs(S, offsets, Y, exact_factor(factor), camera, norm)


def pairs_from_planes(
    planes,
    kernel: np.ndarray,
    factor,
    n_patches: int,
    patch_size: int = 64,
    foreground_percentile: float = 90.0,
    foreground_fraction: float = 0.8,
    validation_fraction: float = 0.1,
    seed: int = 0,
    camera: Camera | None = None,
    norm: Normalization | None = None,
):
    """Training pairs and held-out validation pairs from normalised lateral planes.

    A ``validation_fraction`` of the planes (:func:`split_planes`) gives only the validation
    pairs (``round(n_patches * validation_fraction)``, at least one), degraded once with a fixed
    noise draw so that losses compare across epochs; the others give ``n_patches`` training pairs
    (:func:`sample_training_pairs`). Patches centred above the ``foreground_percentile`` of the
    planes make up ``foreground_fraction`` of each.

    Returns
    -------
    pairs : TrainingPairs
    validation : (inputs, targets) or None (no validation planes)
    info : dict
        ``threshold`` (the foreground value), ``train_planes`` and ``validation_planes`` (indices).
    """
    planes = list(planes)
    stride = max(1, int(np.sqrt(planes[0].size * len(planes) / 4e6)))  # a few million samples suffice
    threshold = float(np.percentile(np.stack([p[::stride, ::stride] for p in planes]), foreground_percentile))
    train_idx, val_idx = split_planes(len(planes), validation_fraction)
    common = dict(kernel=kernel, factor=factor, patch_size=patch_size, foreground_threshold=threshold,
                  foreground_fraction=foreground_fraction, camera=camera, norm=norm)
    pairs = sample_training_pairs([planes[i] for i in train_idx], n_patches=n_patches, seed=seed, **common)
    validation = None
    n_val = max(1, int(round(n_patches * validation_fraction))) if len(val_idx) else 0
    if n_val:
        val = sample_training_pairs([planes[i] for i in val_idx], n_patches=n_val, seed=seed + 1, **common)
        validation = (val.inputs(np.arange(len(val)), np.random.default_rng([seed, 1 << 20])), val.targets)
    return pairs, validation, {"threshold": threshold, "train_planes": train_idx, "validation_planes": val_idx}


def split_planes(n_planes: int, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out validation planes, the validation planes spread evenly.

    No training patch comes from a validation plane, so the validation loss measures how the
    network does on planes it has not seen (neighbouring planes still share structure through
    the axial blur). At least one plane of each kind when ``validation_fraction > 0``.

    Examples
    --------
    >>> train, val = split_planes(20, 0.1)
    >>> val.tolist(), len(train)
    ([5, 15], 18)
    """
    if n_planes < 2 and validation_fraction > 0:
        raise ValueError(f"{n_planes} plane(s): too few to hold validation planes out; set validation_fraction 0")
    n_val = min(n_planes - 1, max(1, int(round(n_planes * validation_fraction)))) if validation_fraction > 0 else 0
    # centres of n_val equal shares of the stack, away from its ends
    val = np.unique(((np.arange(n_val) + 0.5) * n_planes / max(n_val, 1)).astype(int))
    return np.setdiff1d(np.arange(n_planes), val), val


def _patch_corners(target, count, size, threshold, fraction, rng):
    h, w = target.shape
    half = size // 2
    ys = rng.integers(0, h - size + 1, count)
    xs = rng.integers(0, w - size + 1, count)
    if threshold is None:
        return ys, xs
    centres = target[half : h - size + half + 1, half : w - size + half + 1] > threshold
    fy, fx = np.nonzero(centres)
    if len(fy) == 0:
        return ys, xs
    use_fg = rng.random(count) < fraction
    pick = rng.integers(0, len(fy), int(use_fg.sum()))
    ys[use_fg] = fy[pick]
    xs[use_fg] = fx[pick]
    return ys, xs
