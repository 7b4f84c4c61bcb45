"""Training pairs from the lateral planes of the volume being restored.

A lateral (yx) plane is sharp. Blurring it with the PSF rotated into the plane (its axial profile
along x), keeping every ``factor``-th column and upsampling back with the same cubic
interpolation that later upsamples the volume along z gives a plane that looks like an axial
slice; the network learns to map it back to the sharp plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .degrade import blur2d, subsample_upsample


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


def degrade_plane(plane: np.ndarray, kernel: np.ndarray, factor: int, phase: int) -> tuple[np.ndarray, np.ndarray]:
    """One (input, target) pair from a whole lateral plane.

    Parameters
    ----------
    plane : ndarray (H, W)
        A lateral plane (normalised).
    kernel : ndarray (kh, kw)
        2D PSF kernel with the axial profile along x (:func:`isonet.psf.lateral_plane_kernel`).
    factor : int
        Axial subsampling factor σ.
    phase : int
        Which column the subsampling starts at, in ``[0, factor)``.

    Returns
    -------
    degraded, target : ndarray (H, W'), float32, aligned column for column.
    """
    blurred = blur2d(plane, kernel)
    degraded, start = subsample_upsample(blurred, factor, axis=1, phase=phase)
    target = plane[:, start : start + degraded.shape[1]].astype(np.float32)
    return degraded, target


def sample_training_pairs(
    planes,
    kernel: np.ndarray,
    factor: int,
    n_patches: int,
    patch_size: int = 64,
    foreground_threshold: float | None = None,
    foreground_fraction: float = 0.8,
    both_lateral_axes: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``n_patches`` (input, target) patches from lateral planes.

    Parameters
    ----------
    planes : sequence of ndarray (H, W)
        Normalised lateral planes of the volume.
    kernel, factor
        As in :func:`degrade_plane`.
    n_patches : int
        Number of patch pairs to return (spread evenly over the planes).
    patch_size : int
        Square patch side, a multiple of 4.
    foreground_threshold : float, optional
        Patches centred on a target value above it are preferred (``foreground_fraction`` of them).
    both_lateral_axes : bool
        Also use the plane transposed, so that y as well as x plays the axial axis.
    seed : int

    Returns
    -------
    X, Y : ndarray (n_patches, patch_size, patch_size), float32. The axial axis is the last one.
    """
    if patch_size % 4:
        raise ValueError(f"patch_size must be a multiple of 4, got {patch_size}")
    planes = list(planes)
    if not planes:
        raise ValueError("no planes to sample training patches from")
    rng = np.random.default_rng(seed)
    per_plane = np.full(len(planes), n_patches // len(planes))
    per_plane[rng.choice(len(planes), n_patches % len(planes), replace=False)] += 1
    X = np.empty((n_patches, patch_size, patch_size), np.float32)
    Y = np.empty_like(X)
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
        degraded, target = degrade_plane(plane, kernel, factor, int(rng.integers(factor)))
        h, w = target.shape
        ys, xs = _patch_corners(target, count, patch_size, foreground_threshold, foreground_fraction, rng)
        for y0, x0 in zip(ys, xs):
            X[i] = degraded[y0 : y0 + patch_size, x0 : x0 + patch_size]
            Y[i] = target[y0 : y0 + patch_size, x0 : x0 + patch_size]
            i += 1
    return X, Y


def add_camera_noise(
    X: np.ndarray, norm: Normalization, offset: float, read_noise: float, gain: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Training inputs with the camera's shot and read noise added (normalised units).

    Blurring a lateral plane averages its noise away, while a real axial slice carries the full
    noise of every acquired plane; a network trained on smooth inputs sharpens that noise
    instead of removing it. Each input pixel gets gaussian noise of the camera's variance at its
    intensity, ``gain * (counts - offset) + read_noise**2`` (Poisson approximated by a gaussian),
    as CSBDeep's ``anisotropic_distortions(poisson_noise=True, gauss_sigma=...)`` does.

    Parameters
    ----------
    X : ndarray
        Normalised training inputs.
    norm : Normalization
        The normalisation that produced ``X`` (to get back to camera counts).
    offset, read_noise : float
        Camera offset and read-noise standard deviation, in counts.
    gain : float
        Counts per detected photon.

    Examples
    --------
    >>> X = np.full((2000, 4, 4), 0.5, np.float32)
    >>> noisy = add_camera_noise(X, Normalization(100.0, 300.0), offset=100, read_noise=2, seed=0)
    >>> round(float(noisy.std() * 200), 1)  # sqrt(100 + 4) counts
    10.2
    """
    scale = float(norm.high - norm.low)
    signal = np.clip(norm.invert(X) - np.float32(offset), 0, None)
    sigma = np.sqrt(np.float32(gain) * signal + np.float32(read_noise) ** 2) / np.float32(scale)
    rng = np.random.default_rng(seed + 1)
    return (X + sigma * rng.standard_normal(X.shape, dtype=np.float32)).astype(np.float32)


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
