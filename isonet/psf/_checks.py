"""Argument checks and small array helpers shared by the PSF modules."""

from __future__ import annotations

import numpy as np

from isonet.errors import InputError


def _odd(n: float) -> int:
    n = int(np.ceil(n))
    return n + 1 - n % 2


def _check_shape(shape, name: str = "shape") -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
        ok = len(shape) == 3
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be three integers (z, y, x), got {shape!r}")
    if any(s < 1 or s % 2 == 0 for s in shape):
        raise InputError(
            f"{name} must be positive and odd on every axis so that it has a centre voxel, got {shape}"
        )
    return shape


def _check_positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v) and v > 0):
            raise InputError(f"{name} must be a positive finite number, got {v!r}")


def _check_na(na_name: str, na: float, refractive_index: float) -> None:
    _check_positive(**{na_name: na, "refractive_index": refractive_index})
    if na >= refractive_index:
        raise InputError(f"{na_name}={na} must be smaller than refractive_index={refractive_index}")


def _check_array(a, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        axes = {1: "(n,)", 2: "(y, x)", 3: "(z, y, x)"}[ndim]
        raise InputError(f"{name} must be {ndim}D {axes}, got shape {a.shape}")
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {a.shape})")
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise InputError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite values; replace or crop them first")
    return a


def _check_psf(psf, name: str = "psf") -> np.ndarray:
    psf = _check_array(psf, 3, name)
    if any(s % 2 == 0 for s in psf.shape):
        raise InputError(f"{name} shape must be odd on every axis, got {psf.shape}")
    if psf.min() < 0 or psf.max() <= 0:
        raise InputError(f"{name} must be non-negative with a positive peak")
    return psf


def _normalise(h: np.ndarray) -> np.ndarray:
    h = np.clip(h, 0, None)
    return h / h.sum()


def _fit_shape(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Centre-crop or zero-pad an odd-shaped array to another odd shape, keeping the centre voxel."""
    out = np.zeros(shape, dtype=a.dtype)
    src, dst = [], []
    for n_in, n_out in zip(a.shape, shape):
        n = min(n_in, n_out)
        src.append(slice(n_in // 2 - n // 2, n_in // 2 + n // 2 + 1))
        dst.append(slice(n_out // 2 - n // 2, n_out // 2 + n // 2 + 1))
    out[tuple(dst)] = a[tuple(src)]
    return out
