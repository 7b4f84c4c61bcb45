"""Synthetic phantoms on the isotropic grid and the simulation of their anisotropic acquisition.

Phantoms follow the synthetic data of Weigert et al. (2017): textured ellipsoidal nuclei, packed
epithelium-like cell membranes, or both. They live on the isotropic grid (axes ``zyx``, voxel size
= lateral pixel size) with values in [0, 1]. :func:`simulate_acquisition` then images a phantom
as an anisotropic microscope would: blur with the (axially elongated) PSF, keep the z planes
every ``subsample`` voxels (an integer or not), Poisson shot noise, camera offset and gaussian
read noise.

All functions are pure: arrays and parameters in, arrays out, numpy and scipy only. Randomness
comes from ``np.random.default_rng(seed)``, so a given ``seed`` always gives the same result.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from isonet.degrade import exact_factor, subsample_axis
from isonet.errors import InputError

PHANTOM_KINDS = ("nuclei", "membranes", "both")

# Density of the paper's nuclei phantom: 1500 nuclei in a 512^3 volume.
_NUCLEI_PER_VOXEL = 1500 / 512**3


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_shape(shape, ndim: int | None = 3) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
        ok = all(o == s and o > 0 for o, s in zip(out, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok or (ndim is not None and len(out) != ndim) or len(out) == 0:
        want = f"{ndim} positive integers (z, y, x)" if ndim == 3 else "positive integers"
        raise InputError(f"shape must be {want}, got {shape!r}")
    return out


def _check_volume(volume, name: str) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"{name} must be a 3D array (z, y, x), got shape {volume.shape}")
    if not (np.issubdtype(volume.dtype, np.number) or volume.dtype == bool):
        raise InputError(f"{name} must be numeric, got dtype {volume.dtype}")
    return volume


def _check_fraction(value, name: str) -> float:
    if not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_positive(value, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise InputError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# perlin noise
# --------------------------------------------------------------------------------------------


def _interp_axis(t: np.ndarray, axis: int, cell: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Resample ``t`` along ``axis`` from lattice to voxels: ``k0 * t[cell] + k1 * t[cell + 1]``."""
    bshape = [1] * t.ndim
    bshape[axis] = -1
    out = np.take(t, cell, axis=axis)
    out *= kernel[0].reshape(bshape)
    out += np.take(t, cell + 1, axis=axis) * kernel[1].reshape(bshape)
    return out


def _gradient_noise_octave(shape: tuple[int, ...], spacing: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """One octave of Perlin gradient noise (unnormalised, |value| <= sqrt(ndim) / 2).

    Perlin noise is ``sum_corners prod_b w_b * (g . (x - corner))``; the term for gradient
    component ``a`` is a separable product of 1D kernels (``d = w * offset`` on axis ``a``,
    ``w`` on the others) applied to the lattice field ``g_a``. So it is computed axis by axis
    from the small lattice up, never holding per-corner full-size arrays.
    """
    ndim = len(shape)
    cells, w, d, lattice = [], [], [], []
    for n, s in zip(shape, spacing):
        u = np.arange(n, dtype=np.float64) / s + rng.uniform()  # random phase per octave and axis
        c = np.floor(u).astype(np.intp)
        f = u - c
        fade = f * f * f * (f * (f * 6 - 15) + 10)
        cells.append(c)
        w.append(np.stack([1 - fade, fade]).astype(np.float32))
        d.append(np.stack([(1 - fade) * f, fade * (f - 1)]).astype(np.float32))
        lattice.append(int(c[-1]) + 2)
    g = rng.standard_normal((ndim, *lattice)).astype(np.float32)
    g /= np.maximum(np.sqrt((g * g).sum(axis=0)), 1e-12)
    if ndim == 1:
        return _interp_axis(g[0], 0, cells[0], d[0])
    parts = []
    for a in range(ndim):
        t = g[a]
        for b in range(ndim - 1, 0, -1):
            t = _interp_axis(t, b, cells[b], d[b] if a == b else w[b])
        parts.append(t)
    # axis 0 last, where arrays are full size: components 1.. share the same kernel, sum them first
    out = _interp_axis(parts[0], 0, cells[0], d[0])
    out += _interp_axis(sum(parts[1:]), 0, cells[0], w[0])
    return out


def perlin_noise(shape, scale=32.0, octaves: int = 3, persistence: float = 0.5, seed=None) -> np.ndarray:
    """Smooth Perlin gradient noise, rescaled to [0, 1].

    Octave ``o`` has lattice spacing ``scale / 2**o`` voxels and amplitude ``persistence**o``;
    each octave gets a random lattice phase, so no lattice point is aligned with voxel 0.
    The sum is rescaled so that its minimum is 0 and its maximum 1.

    Parameters
    ----------
    shape : tuple of int
        Output shape, usually ``(z, y, x)``; any number of dimensions.
    scale : float or tuple of float
        Lattice spacing of the coarsest octave in voxels (feature size), per axis or for all.
    octaves : int
        Number of octaves, >= 1.
    persistence : float
        Amplitude ratio between successive octaves, in (0, 1].
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``.

    Returns
    -------
    noise : ndarray, float32, shape ``shape``, values in [0, 1].

    Examples
    --------
    >>> p = perlin_noise((16, 32, 32), scale=8, seed=0)
    >>> p.shape, p.dtype, float(p.min()), float(p.max())
    ((16, 32, 32), dtype('float32'), 0.0, 1.0)
    >>> bool(np.array_equal(p, perlin_noise((16, 32, 32), scale=8, seed=0)))
    True
    """
    shape = _check_shape(shape, ndim=None)
    try:
        scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), (len(shape),))
    except (TypeError, ValueError):
        scales = np.array([np.nan])
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise InputError(f"scale must be a positive number or one per axis of shape {shape}, got {scale!r}")
    if isinstance(octaves, bool) or not isinstance(octaves, numbers.Integral) or octaves < 1:
        raise InputError(f"octaves must be an integer >= 1, got {octaves!r}")
    if not isinstance(persistence, numbers.Real) or not 0 < persistence <= 1:
        raise InputError(f"persistence must be a number in (0, 1], got {persistence!r}")
    rng = np.random.default_rng(seed)
    noise = np.zeros(shape, dtype=np.float32)
    for o in range(int(octaves)):
        octave = _gradient_noise_octave(shape, tuple(scales / 2**o), rng)
        octave *= np.float32(persistence**o)
        noise += octave
    lo, hi = noise.min(), noise.max()
    if hi - lo <= 0:
        noise.fill(0.5)
        return noise
    noise -= lo
    noise /= hi - lo
    np.clip(noise, 0, 1, out=noise)
    return noise


# --------------------------------------------------------------------------------------------
# phantoms
# --------------------------------------------------------------------------------------------


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))  # uniform (Haar) over orthogonal matrices


def _texture(shape, texture: float, scale: float, rng) -> np.ndarray | float:
    """Multiplicative texture ``1 - texture * (1 - perlin)``, in [1 - texture, 1]."""
    if texture == 0:
        return 1.0
    p = perlin_noise(shape, scale=scale, octaves=3, seed=rng)
    p -= 1
    p *= np.float32(texture)
    p += 1
    return p


def nuclei_phantom(
    shape,
    n_nuclei: int | None = None,
    radius=(10.0, 16.0),
    seed=None,
    texture: float = 0.5,
    texture_scale: float = 8.0,
    brightness=(0.7, 1.0),
    max_tries: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Textured, randomly oriented ellipsoidal nuclei that do not touch.

    Nuclei are placed one at a time at uniformly random centres inside the volume; a candidate
    is rejected if it comes within one voxel (26-neighbourhood) of a placed nucleus, if less
    than 8 of its voxels are in the volume, or if clipping at the border splits it. Every
    nucleus is computed only inside its bounding box. After ``max_tries`` candidates placement
    stops and a ``RuntimeWarning`` says how many nuclei were placed.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` on the isotropic grid.
    n_nuclei : int, optional
        Number of nuclei; default is the paper's density, ``round(1500 * prod(shape) / 512**3)``,
        at least 1.
    radius : float or (float, float)
        Range ``(min, max)`` of the three semi-axes in voxels, drawn uniformly and
        independently; a single number gives spheres.
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``.
    texture : float
        Perlin texture strength in [0, 1]: nucleus voxels are ``b * (1 - texture * (1 - p))``
        with ``b`` the nucleus brightness and ``p`` Perlin noise in [0, 1]. 0 gives flat nuclei;
        below 1 every nucleus voxel is > 0.
    texture_scale : float
        Feature size of the texture in voxels.
    brightness : (float, float)
        Range of the per-nucleus brightness ``b``, within (0, 1].
    max_tries : int, optional
        Candidate budget; default ``100 * n_nuclei + 1000``.

    Returns
    -------
    image : ndarray, float32, values in [0, 1], 0 outside nuclei.
    labels : ndarray, int32, nuclei labelled 1..N in placement order, 0 background.

    Examples
    --------
    >>> image, labels = nuclei_phantom((64, 96, 96), seed=1)
    >>> image.dtype, labels.dtype, int(labels.max())  # round(1500 * 64*96*96 / 512**3) = 7
    (dtype('float32'), dtype('int32'), 7)
    >>> bool(np.all(image[labels == 0] == 0) and np.all(image[labels > 0] > 0))
    True
    """
    shape = _check_shape(shape)
    if n_nuclei is None:
        n_nuclei = max(1, round(_NUCLEI_PER_VOXEL * math.prod(shape)))
    if isinstance(n_nuclei, bool) or not isinstance(n_nuclei, numbers.Integral) or n_nuclei < 0:
        raise InputError(f"n_nuclei must be an integer >= 0 or None, got {n_nuclei!r}")
    r = np.atleast_1d(np.asarray(radius, dtype=np.float64))
    r_lo, r_hi = (r[0], r[0]) if r.size == 1 else (r[0], r[-1])
    if r.size not in (1, 2) or not (0.5 <= r_lo <= r_hi < np.inf):
        raise InputError(f"radius must be a number or a (min, max) pair with 0.5 <= min <= max, got {radius!r}")
    texture = _check_fraction(texture, "texture")
    _check_positive(texture_scale, "texture_scale")
    b = np.asarray(brightness, dtype=np.float64)
    if b.shape != (2,) or not (0 < b[0] <= b[1] <= 1):
        raise InputError(f"brightness must be a (min, max) pair with 0 < min <= max <= 1, got {brightness!r}")
    if max_tries is None:
        max_tries = 100 * int(n_nuclei) + 1000

    rng = np.random.default_rng(seed)
    rng_place, rng_texture = rng.spawn(2)
    dims = np.array(shape)
    labels = np.zeros(shape, dtype=np.int32)
    # placed nuclei grown by one voxel: a candidate may not overlap it, so nuclei never touch
    occupied = np.zeros(shape, dtype=bool)
    ball = np.ones((3, 3, 3), dtype=bool)
    levels = [0.0]
    tries = 0
    while len(levels) <= n_nuclei and tries < max_tries:
        tries += 1
        semi = rng_place.uniform(r_lo, r_hi, 3)
        rot = _random_rotation(rng_place)
        centre = rng_place.uniform(0, dims - 1)
        level = rng_place.uniform(b[0], b[1])
        half = np.sqrt(((rot * semi) ** 2).sum(axis=1))  # bounding-box half extents
        lo = np.maximum(np.floor(centre - half).astype(int), 0)
        hi = np.minimum(np.ceil(centre + half).astype(int) + 1, dims)
        box = tuple(slice(a, z) for a, z in zip(lo, hi))
        q = (rot / semi**2) @ rot.T  # x^T q x <= 1 inside
        zz, yy, xx = (np.arange(a, z, dtype=np.float32) - c for a, z, c in zip(lo, hi, centre))
        zz, yy, xx = zz[:, None, None], yy[None, :, None], xx[None, None, :]
        form = (
            q[0, 0] * zz * zz + q[1, 1] * yy * yy + q[2, 2] * xx * xx
            + 2 * q[0, 1] * zz * yy + 2 * q[0, 2] * zz * xx + 2 * q[1, 2] * yy * xx
        )  # fmt: skip
        mask = form <= 1
        if mask.sum() < 8 or occupied[box][mask].any():
            continue
        clipped = np.any(centre - half < 0) or np.any(centre + half > dims - 1)
        if clipped and ndimage.label(mask)[1] != 1:
            continue
        labels[box][mask] = len(levels)
        levels.append(level)
        plo, phi = np.maximum(lo - 1, 0), np.minimum(hi + 1, dims)
        pad = tuple(slice(a, z) for a, z in zip(plo, phi))
        grown = np.zeros(phi - plo, dtype=bool)
        grown[tuple(slice(a - p, z - p) for a, z, p in zip(lo, hi, plo))] = mask
        occupied[pad] |= ndimage.binary_dilation(grown, structure=ball)
    placed = len(levels) - 1
    if placed < n_nuclei:
        warnings.warn(
            f"placed {placed} of {n_nuclei} nuclei in {shape} after {tries} tries; the volume is too full, "
            "ask for fewer or smaller nuclei",
            RuntimeWarning,
            stacklevel=2,
        )
    image = np.asarray(levels, dtype=np.float32)[labels]
    image *= _texture(shape, texture, texture_scale, rng_texture)
    return image, labels


def _two_nearest_seed_distances(shape, cell: int, jitter: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every voxel to its nearest and second-nearest seed of a jittered grid.

    One seed per ``cell**3`` block, at the block centre moved by up to ``jitter * cell / 2``
    per axis. The volume is processed as blocks, comparing each voxel with the seeds of the
    3x3x3 surrounding blocks (a ring of seeds outside the volume keeps borders unbiased). This
    is exact for ``jitter <= 0.6`` (checked against a k-d tree); at ``jitter = 1`` a few voxels
    in 10^5 get a second distance off by a few hundredths of a voxel.
    """
    nc = [-(-n // cell) for n in shape]
    centres = np.stack(
        np.meshgrid(*[(np.arange(-1, k + 1) + 0.5) * cell - 0.5 for k in nc], indexing="ij"), axis=-1
    )
    seeds = centres + rng.uniform(-0.5, 0.5, centres.shape) * jitter * cell
    local = np.arange(cell, dtype=np.float32)
    # voxel coordinates as (block, within-block) pairs, axes (nz, cell, ny, cell, nx, cell)
    coords = [(np.arange(k, dtype=np.float32)[:, None] * cell + local) for k in nc]
    full = (nc[0], cell, nc[1], cell, nc[2], cell)
    d1 = np.full(full, np.inf, dtype=np.float32)
    d2 = np.full(full, np.inf, dtype=np.float32)
    dist = np.empty(full, dtype=np.float32)
    tmp = np.empty(full, dtype=np.float32)
    for kz in range(3):
        for ky in range(3):
            for kx in range(3):
                s = seeds[kz : kz + nc[0], ky : ky + nc[1], kx : kx + nc[2]].astype(np.float32)
                dz = coords[0][:, :, None, None, None, None] - s[:, None, :, None, :, None, 0]
                dy = coords[1][None, None, :, :, None, None] - s[:, None, :, None, :, None, 1]
                dx = coords[2][None, None, None, None, :, :] - s[:, None, :, None, :, None, 2]
                np.add(dz * dz + dy * dy, dx * dx, out=dist)
                np.maximum(d1, dist, out=tmp)
                np.minimum(d2, tmp, out=d2)
                np.minimum(d1, dist, out=d1)
    crop = tuple(slice(0, n) for n in shape)
    d1 = np.sqrt(d1.reshape([k * cell for k in nc])[crop])
    d2 = np.sqrt(d2.reshape([k * cell for k in nc])[crop])
    return d1, d2


def membrane_phantom(
    shape,
    cell_size: float = 32,
    thickness: float = 2.0,
    seed=None,
    texture: float = 0.5,
    texture_scale: float = 16.0,
    jitter: float = 0.6,
) -> np.ndarray:
    """Packed epithelium-like cell membranes: the boundaries of a 3D Voronoi tessellation.

    Seeds sit on a grid of spacing ``cell_size``, each jittered randomly; a voxel lies on a
    membrane when its distances ``d1 <= d2`` to the two nearest seeds are nearly equal. The
    half difference ``(d2 - d1) / 2`` is about the distance to the cell boundary, so membranes
    are sheets ``thickness`` voxels thick with a one-voxel antialiased edge.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` on the isotropic grid.
    cell_size : float
        Seed grid spacing (typical cell diameter) in voxels, rounded to an integer >= 3.
    thickness : float
        Membrane thickness in voxels, > 0.
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``.
    texture : float
        Perlin texture strength in [0, 1], as in :func:`nuclei_phantom`.
    texture_scale : float
        Feature size of the texture in voxels.
    jitter : float
        Seed displacement in [0, 1] as a fraction of ``cell_size`` (0: cubic cells).

    Returns
    -------
    image : ndarray, float32, values in [0, 1], 1 on untextured membranes, 0 inside cells.

    Examples
    --------
    >>> m = membrane_phantom((32, 64, 64), cell_size=16, seed=0)
    >>> m.shape, m.dtype, 0.05 < float((m > 0.5).mean()) < 0.4
    ((32, 64, 64), dtype('float32'), True)
    """
    shape = _check_shape(shape)
    _check_positive(cell_size, "cell_size")
    cell = int(round(cell_size))
    if cell < 3:
        raise InputError(f"cell_size must be at least 3 voxels, got {cell_size!r}")
    thickness = _check_positive(thickness, "thickness")
    texture = _check_fraction(texture, "texture")
    _check_positive(texture_scale, "texture_scale")
    jitter = _check_fraction(jitter, "jitter")
    rng = np.random.default_rng(seed)
    rng_seeds, rng_texture = rng.spawn(2)
    d1, d2 = _two_nearest_seed_distances(shape, cell, jitter, rng_seeds)
    # sheet: 1 where (d2 - d1) / 2 <= thickness / 2 - 1/2, falling linearly to 0 over one voxel
    image = d1
    image -= d2
    image *= np.float32(0.5)
    image += np.float32(thickness / 2 + 0.5)
    np.clip(image, 0, 1, out=image)
    image *= _texture(shape, texture, texture_scale, rng_texture)
    return image


def mixed_phantom(
    shape,
    seed=None,
    n_nuclei: int | None = None,
    radius=(10.0, 16.0),
    cell_size: float = 32,
    thickness: float = 2.0,
    membrane_level: float = 0.3,
    texture: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei and dimmer cell membranes in one volume.

    Nuclei (as :func:`nuclei_phantom`) replace the membranes where they lie; elsewhere the
    image is the membrane phantom scaled by ``membrane_level``.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` on the isotropic grid.
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``.
    n_nuclei, radius : see :func:`nuclei_phantom`.
    cell_size, thickness : see :func:`membrane_phantom`.
    membrane_level : float
        Brightness of the membranes relative to the nuclei, in [0, 1].
    texture : float
        Texture strength of nuclei and membranes, in [0, 1].

    Returns
    -------
    image : ndarray, float32, values in [0, 1].
    labels : ndarray, int32, the nuclei labelled 1..N, 0 elsewhere (membranes included).

    Examples
    --------
    >>> image, labels = mixed_phantom((32, 96, 96), seed=0, cell_size=16)
    >>> image.shape, int(labels.max()), float(image[labels == 0].max()) <= 0.3
    ((32, 96, 96), 3, True)
    """
    membrane_level = _check_fraction(membrane_level, "membrane_level")
    rng_nuclei, rng_membranes = np.random.default_rng(seed).spawn(2)
    nuclei, labels = nuclei_phantom(shape, n_nuclei=n_nuclei, radius=radius, seed=rng_nuclei, texture=texture)
    membranes = membrane_phantom(shape, cell_size=cell_size, thickness=thickness, seed=rng_membranes, texture=texture)
    membranes *= np.float32(membrane_level)
    image = np.where(labels > 0, nuclei, membranes)
    return image, labels


def make_phantom(kind: str, shape, seed=None, **kw) -> tuple[np.ndarray, np.ndarray | None]:
    """Build a phantom by name.

    Parameters
    ----------
    kind : {"nuclei", "membranes", "both"}
        :func:`nuclei_phantom`, :func:`membrane_phantom` or :func:`mixed_phantom`.
    shape : tuple of int
        ``(z, y, x)`` on the isotropic grid.
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``.
    **kw
        Keyword arguments of the phantom function.

    Returns
    -------
    image : ndarray, float32, values in [0, 1].
    labels : ndarray, int32, or None
        Nuclei labels; None for membranes.

    Examples
    --------
    >>> image, labels = make_phantom("membranes", (16, 32, 32), seed=0, cell_size=8)
    >>> image.shape, labels is None
    ((16, 32, 32), True)
    """
    if kind == "nuclei":
        return nuclei_phantom(shape, seed=seed, **kw)
    if kind == "membranes":
        return membrane_phantom(shape, seed=seed, **kw), None
    if kind == "both":
        return mixed_phantom(shape, seed=seed, **kw)
    raise InputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(map(repr, PHANTOM_KINDS))}")


# --------------------------------------------------------------------------------------------
# acquisition
# --------------------------------------------------------------------------------------------


def _check_psf(psf, name: str = "psf") -> np.ndarray:
    psf = _check_volume(psf, name)
    if any(s % 2 == 0 for s in psf.shape):
        raise InputError(f"{name} must have an odd shape on every axis (a centre voxel), got {psf.shape}")
    if not np.all(np.isfinite(psf)) or psf.min() < 0:
        raise InputError(f"{name} must be finite and non-negative")
    total = float(psf.sum())
    if abs(total - 1) > 1e-3:
        raise InputError(f"{name} must sum to 1, got {total:.6g}; normalise it with psf / psf.sum()")
    return psf


def blur(volume, psf) -> np.ndarray:
    """Convolve a volume with a PSF on the same isotropic grid.

    FFT convolution with zero padding outside the volume (``scipy.signal.fftconvolve``,
    ``mode="same"``), in single precision; FFT round-off below zero is clipped.

    Parameters
    ----------
    volume : ndarray, 3D ``(z, y, x)``
    psf : ndarray, 3D, odd shape, non-negative, summing to 1

    Returns
    -------
    blurred : ndarray, float32, shape of ``volume``, values >= 0.

    Examples
    --------
    >>> from isonet.psf import gaussian_psf
    >>> v = np.zeros((33, 33, 33), np.float32); v[16, 16, 16] = 1
    >>> b = blur(v, gaussian_psf(1, 3))
    >>> b.dtype, round(float(b.sum()), 4), np.unravel_index(b.argmax(), b.shape)
    (dtype('float32'), 1.0, (np.int64(16), np.int64(16), np.int64(16)))
    """
    volume = _check_volume(volume, "volume")
    psf = _check_psf(psf)
    out = fftconvolve(volume.astype(np.float32, copy=False), psf.astype(np.float32), mode="same")
    out = out.astype(np.float32, copy=False)
    np.clip(out, 0, None, out=out)
    return out


def simulate_acquisition(
    gt,
    psf,
    subsample,
    photons: float = 1000.0,
    read_noise: float = 2.0,
    offset: float = 100.0,
    seed=None,
    dtype=np.uint16,
) -> np.ndarray:
    """Image an isotropic ground truth with an anisotropic microscope.

    ``gt`` is blurred with ``psf`` on the isotropic grid and sampled every ``subsample`` planes
    along z from plane 0: acquired plane ``k`` is the blurred volume at ``z = k * subsample``
    isotropic voxels. For an integer ``subsample`` that is isotropic plane ``k * subsample``; a
    non-integer one (4.5) puts some planes between isotropic planes, where the blurred volume is
    interpolated along z (quintic spline, :func:`isonet.degrade.subsample_axis`; the axial blur
    makes it smooth there). The
    blurred volume is scaled so that its brightest voxel (over all isotropic planes) has
    ``photons`` expected counts; the counts are Poisson distributed, then the camera adds
    ``offset`` and gaussian read noise of standard deviation ``read_noise`` counts. Integer
    ``dtype`` output is rounded and clipped to the dtype's range; float output is not clipped.

    Parameters
    ----------
    gt : ndarray, 3D ``(z, y, x)``
        Ground truth on the isotropic grid, non-negative.
    psf : ndarray, 3D
        Anisotropic PSF on the isotropic grid (odd shape, sums to 1).
    subsample : int or float
        Axial subsampling factor σ >= 1 (axial / lateral voxel size), not necessarily an integer.
    photons : float
        Expected counts of the brightest blurred voxel, > 0.
    read_noise : float
        Standard deviation of the gaussian read noise in counts, >= 0.
    offset : float
        Camera offset (baseline) in counts, >= 0.
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``.
    dtype : numpy dtype
        Output dtype, integer or float.

    Returns
    -------
    acquired : ndarray, ``dtype``, shape ``(floor((z - 1) / subsample) + 1, y, x)`` (``ceil(z / subsample)``
        planes for an integer ``subsample``).

    Examples
    --------
    >>> from isonet.psf import gaussian_psf
    >>> gt, _ = nuclei_phantom((64, 64, 64), seed=0)
    >>> a = simulate_acquisition(gt, gaussian_psf(2, 8), 4, seed=0)
    >>> a.shape, a.dtype, 90 < float(np.median(a)) < 110
    ((16, 64, 64), dtype('uint16'), True)
    """
    gt = _check_volume(gt, "gt")
    try:
        subsample = exact_factor(subsample)
    except ValueError:
        raise InputError(f"subsample must be a number >= 1, got {subsample!r}") from None
    photons = _check_positive(photons, "photons")
    read_noise = _check_positive(read_noise, "read_noise", allow_zero=True)
    offset = _check_positive(offset, "offset", allow_zero=True)
    try:
        dtype = np.dtype(dtype)
    except TypeError as err:
        raise InputError(f"dtype must be a numpy integer or float dtype, got {dtype!r}") from err
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"dtype must be a numpy integer or float dtype, got {dtype}")
    if gt.size and gt.min() < 0:
        raise InputError("gt must be non-negative (it is an emitter density)")
    rng = np.random.default_rng(seed)

    blurred = blur(gt, psf)
    peak = float(blurred.max()) if blurred.size else 0.0
    # between planes the spline can undershoot zero by a hair next to a sharp edge
    planes = np.clip(subsample_axis(blurred, subsample, axis=0).astype(np.float64), 0, None)
    expected = planes * (photons / peak) if peak > 0 else np.zeros_like(planes)
    counts = rng.poisson(expected).astype(np.float64)
    counts += offset
    if read_noise > 0:
        counts += rng.normal(0.0, read_noise, counts.shape)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        counts = np.clip(np.rint(counts), info.min, info.max)
    return counts.astype(dtype)


@dataclass(frozen=True)
class SyntheticDataset:
    """A phantom and its simulated acquisition.

    Attributes
    ----------
    kind : str
        Phantom kind (see :func:`make_phantom`).
    gt : ndarray, float32
        Phantom on the isotropic grid, values in [0, 1].
    iso_gt : ndarray, float32
        ``blur(gt, psf_iso)``: what a microscope with the isotropic target PSF would see,
        the reference a restoration is compared with.
    acquired : ndarray
        Simulated anisotropic acquisition, ``floor((z - 1) / subsample) + 1`` planes.
    labels : ndarray, int32, or None
        Nuclei labels of ``gt`` (None for membranes).
    subsample : int or float
        Axial subsampling factor of ``acquired`` (int when integral).
    """

    kind: str
    gt: np.ndarray
    iso_gt: np.ndarray
    acquired: np.ndarray
    labels: np.ndarray | None
    subsample: int | float


def make_dataset(
    kind: str,
    shape,
    psf,
    psf_iso,
    subsample,
    seed=None,
    photons: float = 1000.0,
    read_noise: float = 2.0,
    offset: float = 100.0,
    **phantom_kw,
) -> SyntheticDataset:
    """Phantom, its isotropic reference and its simulated anisotropic acquisition.

    Parameters
    ----------
    kind : {"nuclei", "membranes", "both"}
        Phantom kind, see :func:`make_phantom`.
    shape : tuple of int
        ``(z, y, x)`` of the phantom on the isotropic grid.
    psf : ndarray, 3D
        Anisotropic acquisition PSF on the isotropic grid.
    psf_iso : ndarray, 3D
        Isotropic target PSF on the isotropic grid.
    subsample : int or float
        Axial subsampling factor σ >= 1, not necessarily an integer.
    seed : int, numpy.random.Generator or None
        Passed to ``np.random.default_rng``; phantom and noise use independent streams.
    photons, read_noise, offset : float
        See :func:`simulate_acquisition`.
    **phantom_kw
        Keyword arguments of the phantom function.

    Returns
    -------
    SyntheticDataset

    Examples
    --------
    >>> from isonet.psf import gaussian_psf
    >>> ds = make_dataset("nuclei", (32, 64, 64), gaussian_psf(2, 8), gaussian_psf(2, 2), 4, seed=0)
    >>> ds.gt.shape, ds.iso_gt.shape, ds.acquired.shape, int(ds.labels.max())
    ((32, 64, 64), (32, 64, 64), (8, 64, 64), 1)
    """
    _check_psf(psf_iso, "psf_iso")
    rng_phantom, rng_noise = np.random.default_rng(seed).spawn(2)
    gt, labels = make_phantom(kind, shape, seed=rng_phantom, **phantom_kw)
    acquired = simulate_acquisition(
        gt, psf, subsample, photons=photons, read_noise=read_noise, offset=offset, seed=rng_noise
    )
    return SyntheticDataset(
        kind=kind, gt=gt, iso_gt=blur(gt, psf_iso), acquired=acquired, labels=labels, subsample=exact_factor(subsample)
    )
