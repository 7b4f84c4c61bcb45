"""The camera's noise: a Poisson-Gaussian model, given by the user or estimated from the volume.

A camera pixel reads ``counts = offset + gain * Poisson(photons) + N(0, read_noise²)``, so the
variance of a reading grows linearly with its mean above the black level::

    var(counts) = gain * (mean - offset) + read_noise²

The training pairs need this model to put onto the simulated acquired samples the noise a real
acquisition puts onto them (:func:`isonet.patches.degrade_plane`). When the user does not know
the camera, :func:`estimate_camera` fits the line from the volume itself, as in Foi et al.
(2008, "Practical Poissonian-Gaussian noise modeling and fitting for single-image raw-data"):
a high-pass residual measures the local noise, a low-pass the local mean, and the variance of
the residual within narrow bins of the mean gives points on the line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CAMERA_SOURCES = ("config", "estimated", "synthetic")


@dataclass(frozen=True)
class Camera:
    """Poisson-Gaussian camera model, in the volume's counts.

    Attributes
    ----------
    gain : float
        Counts per detected photon (the slope of variance against mean).
    offset : float
        Black level: the reading with no light.
    read_noise : float
        Standard deviation of the gaussian read noise, counts.
    source : str
        Where the values come from: ``config`` (the user), ``estimated`` (:func:`estimate_camera`)
        or ``synthetic`` (the simulated acquisition's own camera).
    """

    gain: float
    offset: float
    read_noise: float
    source: str = "config"

    def variance(self, counts: np.ndarray) -> np.ndarray:
        """Variance of a reading whose noise-free value is ``counts``."""
        signal = np.clip(np.asarray(counts, dtype=np.float32) - np.float32(self.offset), 0, None)
        return np.float32(self.gain) * signal + np.float32(self.read_noise) ** 2

    def to_dict(self) -> dict:
        return {"gain": float(self.gain), "offset": float(self.offset), "read_noise": float(self.read_noise),
                "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(float(d.get("gain", 1.0)), float(d["offset"]), float(d["read_noise"]), str(d.get("source", "config")))


def add_camera_noise(samples: np.ndarray, camera: Camera, low: float, high: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Noisy readings of noise-free samples given in normalised units ``(counts - low) / (high - low)``.

    The Poisson part is approximated by a gaussian of the same variance (exact in mean and
    variance; the distributions differ visibly only below a few photons).

    Examples
    --------
    >>> x = np.full(100_000, 0.5, np.float32)  # 200 counts: 100 above the black level
    >>> noisy = add_camera_noise(x, Camera(1.0, 100.0, 2.0), 100.0, 300.0, np.random.default_rng(0))
    >>> round(float(noisy.std() * 200), 1)  # sqrt(100 + 4) counts
    10.2
    """
    scale = np.float32(high - low)
    counts = np.asarray(samples, dtype=np.float32) * scale + np.float32(low)
    sigma = np.sqrt(camera.variance(counts)) / scale
    return (samples + sigma * rng.standard_normal(np.shape(samples), dtype=np.float32)).astype(np.float32)


def noise_samples(planes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local mean, a unit-gain noise residual and the local gradient at interior pixels of each plane.

    The residual ``(4 x - sum of the 4 neighbours) / sqrt(20)`` cancels locally linear signal
    and has the variance of the pixel noise when that noise is white; the mean is over the
    pixel's 5×5 neighbourhood; the gradient magnitude (gaussian, 1.5 px) flags edges, where
    signal leaks into the residual.
    """
    means, residuals, gradients = [], [], []
    for p in planes:
        p = np.asarray(p, dtype=np.float64)
        if min(p.shape) < 7:
            continue
        r = (4 * p[1:-1, 1:-1] - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]) / np.sqrt(20.0)
        m = ndimage.uniform_filter(p, 5, mode="reflect")[1:-1, 1:-1]
        means.append(m.ravel())
        residuals.append(r.ravel())
        gradients.append(ndimage.gaussian_gradient_magnitude(p, 1.5)[1:-1, 1:-1].ravel())
    if not means:
        raise ValueError("planes of at least 7x7 pixels are needed to estimate the camera noise")
    return np.concatenate(means), np.concatenate(residuals), np.concatenate(gradients)


def estimate_camera(planes, n_bins: int = 48, max_samples: int = 2_000_000, seed: int = 0) -> Camera:
    """Fit the Poisson-Gaussian model to lateral planes of a raw volume (counts, not normalised).

    Pixels are binned by their local mean (equal-count bins); within a bin the residual's robust
    variance (:func:`robust_variance`) is one point of
    ``var = gain * mean + c``, fitted by weighted least squares (weights: the points' inverse
    variance), using in each bin the flatter half of its pixels and dropping bins more than 3 robust standard deviations off the line. The black
    level is the dark background's level (from the 0.5th percentile of the local means, where there
    is a background);
    the read noise is the fitted standard deviation there.

    Parameters
    ----------
    planes : sequence of ndarray (H, W)
        Lateral planes of the acquisition, in its counts. A lateral plane holds independent
        pixel noise; axial slices of an upsampled volume do not.
    n_bins : int
        Number of intensity bins.
    max_samples : int
        Pixels used at most (a random subset beyond that).
    seed : int
        Seed of that subset.

    Returns
    -------
    Camera (``source="estimated"``). The gain is 0 when the variance does not grow with the mean
    (e.g. data already denoised or float data scaled to [0, 1] with pure gaussian noise).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:256, :256]
    >>> photons = 300 * np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / (2 * 30.0**2))
    >>> raw = 100 + 2.0 * rng.poisson(photons) + rng.normal(0, 3, photons.shape)
    >>> cam = estimate_camera([raw])
    >>> bool(abs(cam.gain - 2) < 0.2 and abs(cam.offset - 100) < 5 and abs(cam.read_noise - 3) < 0.5)
    True
    """
    m, r, g = noise_samples(planes)
    if m.size > max_samples:
        pick = np.random.default_rng(seed).choice(m.size, max_samples, replace=False)
        m, r, g = m[pick], r[pick], g[pick]
    low = float(np.percentile(m, 0.5))
    # 0.5th percentile of the dark local means, moved up by 2.576 of their standard deviations
    # (a mean of 25 pixels) to the dark level itself
    offset = low + 2.576 * float(np.sqrt(robust_variance(r[m <= np.percentile(m, 5)]) / 25))
    # bins equally wide in the mean: a sparse bright foreground still gets its share of points
    edges = np.linspace(low, float(np.percentile(m, 99.9)), n_bins + 1)
    which = np.searchsorted(edges, m, side="right") - 1
    xs, vs, ns = [], [], []
    for b in range(n_bins):
        sel = which == b
        if sel.sum() < 200:
            continue
        flat = sel & (g <= np.median(g[sel]))  # the flatter half of the bin
        rb = r[flat]
        xs.append(float(np.median(m[flat])))
        vs.append(robust_variance(rb))
        ns.append(rb.size)
    xs, vs, ns = np.array(xs), np.array(vs), np.array(ns)
    if len(xs) < 2 or np.ptp(xs) == 0:
        sd = float(np.sqrt(np.median(vs))) if len(vs) else 0.0
        return Camera(0.0, offset, sd, "estimated")
    keep = np.ones(len(xs), bool)
    for _ in range(3):
        w = ns[keep] / np.maximum(vs[keep], 1e-12) ** 2
        A = np.stack([xs[keep], np.ones(keep.sum())], axis=1)
        coef = np.linalg.lstsq(A * np.sqrt(w)[:, None], vs[keep] * np.sqrt(w), rcond=None)[0]
        resid = (vs - (coef[0] * xs + coef[1])) / np.maximum(vs * np.sqrt(2.0 / ns), 1e-12)
        new_keep = np.abs(resid) < 3
        if new_keep.sum() < 2 or np.array_equal(new_keep, keep):
            break
        keep = new_keep
    gain = max(float(coef[0]), 0.0)
    read_var = float(gain * offset + coef[1]) if gain > 0 else float(np.median(vs[keep]))
    return Camera(gain, offset, float(np.sqrt(max(read_var, 0.0))), "estimated")


def robust_variance(r: np.ndarray) -> float:
    """Variance of the gaussian core of ``r``: iteratively clipped at 3 standard deviations.

    Unlike the median absolute deviation it stays unbiased on integer (rounded) readings; the
    factor 1 / 0.9733 undoes the clipping of a gaussian's tails.
    """
    r = np.asarray(r, dtype=np.float64)
    centre, var = float(np.median(r)), float(np.var(r))
    for _ in range(10):
        core = r[np.abs(r - centre) <= 3 * np.sqrt(var)]
        if core.size < 2:
            break
        new = float(np.var(core)) / 0.9733
        centre = float(np.mean(core))
        if abs(new - var) <= 1e-4 * var:
            var = new
            break
        var = new
    return var
