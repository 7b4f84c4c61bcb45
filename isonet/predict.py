"""Axial restoration of a volume, block by block, identical to whole-volume inference.

The volume is upsampled along z by ``factor`` (cubic, acquired plane ``k`` on isotropic plane
``k * factor``, see :mod:`isonet.degrade`), the network is applied to every xz and every yz slice
and the two results are combined. Output extent: ``((Z - 1) * factor + 1, Y, X)`` voxels of size
``(dz / factor, dy, dx)``; isotropic plane ``m`` lies at ``z = m * dz / factor`` from acquired
plane 0.

Block-wise, each output block is computed from a window that extends ``halo`` voxels past it on
every side (mirrored at the volume's edges), the halo a multiple of the network's pooling grid
and at least its receptive radius, so every block sees exactly the pixels whole-volume inference
would see. Blocks must start on multiples of the network's size multiple (4 for IsoNet-2).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from .degrade import cubic_taps, reflect_indices, upsampled_length
from .patches import Normalization

COMBINE = ("mean", "geometric")
PRECISIONS = ("auto", "fp32", "bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → ``bf16`` on CUDA and on CPUs with native bf16, else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def iso_shape(shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    """Shape of the restored (isotropic) volume for an acquired volume of ``shape``."""
    z, y, x = shape
    return (upsampled_length(z, factor), int(y), int(x))


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode on ``device`` in channels-last layout (faster convolutions on CPU and GPU)."""
    return model.eval().to(device=device, memory_format=torch.channels_last)


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    slices: np.ndarray,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
) -> np.ndarray:
    """Apply a 2D network to a stack of slices ``(N, H, W)``; returns float32 ``(N, H, W)``.

    Slices are padded on the far side (mirrored) to the network's size multiple and cropped back.
    ``tta`` lists flips (tuples of slice axes: 0 lateral, 1 axial) to average over besides the
    slice as it is (test-time augmentation); they are applied after padding, so a pixel keeps
    its place on the pooling grid relative to the slice's end and block-wise inference stays
    identical to whole-volume inference.
    ``precision="bf16"`` runs under bfloat16 autocast (results differ from fp32 by about 1e-2 of
    the normalised range; see benchmarks/precision.py).
    """
    device = torch.device(device)
    m = int(getattr(model, "size_multiple", 1))
    n, h, w = slices.shape
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        slices = np.pad(slices, ((0, 0), (0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "edge")
    out = np.zeros((n, h, w), np.float32)
    dtype = torch.bfloat16 if precision == "bf16" else None
    variants = ((),) + tuple(tuple(f) for f in tta if tuple(f))
    for b in range(0, n, batch_size):
        for flip in variants:
            dims = tuple(2 + a for a in flip)
            xb = torch.from_numpy(np.ascontiguousarray(slices[b : b + batch_size], dtype=np.float32))[:, None]
            xb = xb.to(device)
            if dims:
                xb = torch.flip(xb, dims)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                yb = model(xb).float()
            if dims:
                yb = torch.flip(yb, dims)
            out[b : b + batch_size] += yb[:, 0, :h, :w].cpu().numpy()
    if len(variants) > 1:
        out /= np.float32(len(variants))
    return out


def read_window(
    source,
    factor: int,
    ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
    halo: tuple[int, int, int],
    norm: Normalization,
) -> np.ndarray:
    """Normalised, z-upsampled window of the isotropic volume around an output block.

    Parameters
    ----------
    source : array-like (Z, Y, X)
        The acquired volume (numpy array, zarr array, anything sliceable).
    factor : int
        Axial upsampling factor.
    ranges : ((z0, z1), (y0, y1), (x0, x1))
        The output block in isotropic coordinates.
    halo : (hz, hy, hx)
        Margin on each side; indices outside the volume are mirrored back into it.
    norm : Normalization

    Returns
    -------
    ndarray float32 of shape ``(z1 - z0 + 2 hz, y1 - y0 + 2 hy, x1 - x0 + 2 hx)``.
    """
    Z, Y, X = source.shape
    nz_iso = upsampled_length(Z, factor)
    (z0, z1), (y0, y1), (x0, x1) = ranges
    hz, hy, hx = halo
    zi = reflect_indices(np.arange(z0 - hz, z1 + hz), nz_iso)
    yi = reflect_indices(np.arange(y0 - hy, y1 + hy), Y)
    xi = reflect_indices(np.arange(x0 - hx, x1 + hx), X)
    taps, weights = cubic_taps(zi, Z, factor)
    za, zb = int(taps.min()), int(taps.max()) + 1
    ya, yb = int(yi.min()), int(yi.max()) + 1
    xa, xb = int(xi.min()), int(xi.max()) + 1
    raw = norm.apply(np.asarray(source[za:zb, ya:yb, xa:xb]))
    raw = raw[:, yi - ya][:, :, xi - xa]
    out = np.zeros((len(zi),) + raw.shape[1:], np.float32)
    for t in range(4):
        w = weights[:, t].astype(np.float32)
        nz = w != 0
        if np.any(nz):
            out[nz] += w[nz, None, None] * raw[taps[nz, t] - za]
    return out


def restore_window(
    model: nn.Module,
    window: np.ndarray,
    halo: tuple[int, int, int],
    combine: str = "mean",
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
    disagreement: bool = False,
):
    """Restore the interior of a normalised isotropic window (output still normalised).

    xz slices (one per interior y) and yz slices (one per interior x) are each turned so that z
    runs along the last axis, as in training, restored, and combined. With ``disagreement``,
    returns ``(restored, |xz - yz|)``: the two passes see the same voxel through differently
    oriented slices, and where the network is unsure they disagree.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    hz, hy, hx = halo
    lz, ly, lx = window.shape
    zs, ys, xs = slice(hz, lz - hz), slice(hy, ly - hy), slice(hx, lx - hx)
    # xz: slices over interior y, each (X, Z)
    xz = np.transpose(window[:, ys, :], (1, 2, 0))
    r_xz = predict_slices(model, xz, batch_size, device, precision, tta)[:, xs, zs]  # (y, x, z)
    # yz: slices over interior x, each (Y, Z)
    yz = np.transpose(window[:, :, xs], (2, 1, 0))
    r_yz = predict_slices(model, yz, batch_size, device, precision, tta)[:, ys, zs]  # (x, y, z)
    a = np.transpose(r_xz, (2, 0, 1))
    b = np.transpose(r_yz, (2, 1, 0))
    if combine == "mean":
        restored = 0.5 * (a + b)
    else:
        restored = np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None))
    return (restored, np.abs(a - b)) if disagreement else restored


def restore_block(
    model: nn.Module,
    source,
    factor: int,
    ranges,
    norm: Normalization,
    halo: int,
    combine: str = "mean",
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
    disagreement: bool = False,
):
    """Restored block of the isotropic volume, in the source's intensity units (float32).

    ``ranges`` is ``((z0, z1), (y0, y1), (x0, x1))`` in isotropic coordinates; the starts must be
    multiples of the network's size multiple for the result to match whole-volume inference.
    With ``disagreement``, returns ``(restored, |xz - yz|)``, the second also in intensity units.
    """
    m = int(getattr(model, "size_multiple", 1))
    if any(r[0] % m for r in ranges):
        raise ValueError(f"block starts {[r[0] for r in ranges]} must be multiples of {m} for this network")
    h = (halo, halo, halo)
    window = read_window(source, factor, ranges, h, norm)
    result = restore_window(model, window, h, combine, batch_size, device, precision, tta, disagreement)
    if not disagreement:
        return norm.invert(result)
    restored, spread = result
    return norm.invert(restored), (spread * np.float32(norm.high - norm.low)).astype(np.float32, copy=False)


def block_ranges(shape: tuple[int, ...], block: tuple[int, ...]) -> Iterator[tuple[tuple[int, int], ...]]:
    """All blocks of a regular grid over ``shape``, as ``((start, stop), ...)`` per axis."""
    grids = [range(0, s, b) for s, b in zip(shape, block)]
    for starts in np.ndindex(*[len(g) for g in grids]):
        yield tuple((g[i], min(g[i] + b, s)) for g, i, b, s in zip(grids, starts, block, shape))


def restore_volume(
    model: nn.Module,
    volume: np.ndarray,
    factor: int,
    norm: Normalization,
    halo: int,
    combine: str = "mean",
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
) -> np.ndarray:
    """Whole-volume restoration held in memory (small volumes, tests, reference)."""
    full = tuple((0, s) for s in iso_shape(volume.shape, factor))
    return restore_block(model, volume, factor, full, norm, halo, combine, batch_size, device, precision, tta)


def tta_flips(commuting_flips) -> tuple[tuple[int, ...], ...]:
    """Test-time flips of a slice from the axes along which the training kernel is symmetric.

    Every non-empty combination of the commuting axes (0: lateral, 1: axial), e.g. ``(0, 1)``
    gives ``((0,), (1,), (0, 1))``: with the slice itself, four predictions to average.

    Examples
    --------
    >>> tta_flips([0, 1])
    ((0,), (1,), (0, 1))
    >>> tta_flips([0])
    ((0,),)
    """
    axes = sorted({int(a) for a in commuting_flips})
    return tuple(c for r in range(1, len(axes) + 1) for c in itertools.combinations(axes, r))
