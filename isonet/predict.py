"""Axial restoration of a volume, block by block, identical to whole-volume inference.

The volume is upsampled along z by ``factor`` (cubic, acquired plane ``k`` on isotropic plane
``k * factor``, see :mod:`isonet.degrade`), the network is applied to every xz and every yz slice
and the two results are combined. Output extent: ``((Z - 1) * factor + 1, Y, X)`` voxels of size
``(dz / factor, dy, dx)``; isotropic plane ``m`` lies at ``z = m * dz / factor`` from acquired
plane 0.

Block-wise, each output block is computed from two windows, one per axial pass, that extend
``halo`` voxels past it only in the plane of that pass's slices (an xz slice needs context in x
and z, never in y): see :class:`BlockWindows`. Indices past the volume's edges are mirrored back
into it. The halo is a multiple of the network's pooling grid and at least its receptive radius,
so every block sees exactly the pixels whole-volume inference (one block with the same halo)
would see. Blocks must start on multiples of the network's size multiple (4 for IsoNet-2). With
``edges="clip"`` there is no halo past the volume's edges, for block-wise and whole-volume alike.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .degrade import cubic_taps, reflect_indices, upsampled_length
from .patches import Normalization

COMBINE = ("mean", "geometric")
EDGES = ("mirror", "clip")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Activation memory of IsoNet-2 per input pixel in a forward pass without gradients (float32
# feature maps alive at once, with margin); sizes the batches of auto_batch_size.
ACTIVATION_BYTES_PER_PIXEL = 1024
CPU_BATCH_BYTES = 1 << 30


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
    """``auto`` → ``bf16`` on CUDA GPUs and CPUs with native bf16, ``fp16`` on older CUDA GPUs, else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def iso_shape(shape: tuple[int, int, int], factor: int) -> tuple[int, int, int]:
    """Shape of the restored (isotropic) volume for an acquired volume of ``shape``."""
    z, y, x = shape
    return (upsampled_length(z, factor), int(y), int(x))


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode on ``device`` in channels-last layout (faster convolutions on CPU and GPU)."""
    return model.eval().to(device=device, memory_format=torch.channels_last)


def auto_batch_size(slice_shape: tuple[int, int], device: torch.device | str = "cpu") -> int:
    """Slices per forward pass for slices of ``slice_shape`` on ``device``.

    On CUDA, as many as fit in half the free GPU memory at about
    :data:`ACTIVATION_BYTES_PER_PIXEL` per pixel (at most 256); on a CPU, one per torch thread (so
    that every thread has work at every layer), fewer when their activations would pass 1 GiB.

    Examples
    --------
    >>> auto_batch_size((4096, 4096), "cpu")
    1
    """
    device = torch.device(device)
    pixels = max(1, int(slice_shape[0]) * int(slice_shape[1]))
    per_slice = ACTIVATION_BYTES_PER_PIXEL * pixels
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(256, free // 2 // per_slice)))
    return int(max(1, min(torch.get_num_threads(), CPU_BATCH_BYTES // per_slice)))


def _pad_to_multiple(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pad ``(N, 1, H, W)`` on the far side of H and W to multiples of ``m``, mirrored where the
    axis is longer than its pad, else repeating the edge (each axis decided on its own, so a
    slice pads the same way whatever the length of its other axis)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if pw:
        x = F.pad(x, (0, pw, 0, 0), mode="reflect" if w > pw else "replicate")
    if ph:
        x = F.pad(x, (0, 0, 0, ph), mode="reflect" if h > ph else "replicate")
    return x


@torch.no_grad()
def predict_tensor(
    model: nn.Module,
    slices: torch.Tensor,
    batch_size: int | None = None,
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
    crop: tuple[slice, slice] = (slice(None), slice(None)),
) -> torch.Tensor:
    """Apply a 2D network to slices ``(N, H, W)`` already on the model's device.

    Returns float32 ``(N, h, w)`` on that device: the restored slices cropped to ``crop`` (a pair
    of slices over H and W), so a caller that needs only their interior keeps no more. The
    batches are taken from ``slices`` as they are (a transposed view is fine) and padded on the
    far side to the network's size multiple. ``batch_size`` None picks :func:`auto_batch_size`.
    See :func:`predict_slices` for ``precision`` and ``tta``.
    """
    device = slices.device
    m = int(getattr(model, "size_multiple", 1))
    n, h, w = slices.shape
    hs, ws = range(h)[crop[0]], range(w)[crop[1]]
    if not batch_size:
        batch_size = auto_batch_size((h + (-h) % m, w + (-w) % m), device)
    out = torch.zeros((n, len(hs), len(ws)), dtype=torch.float32, device=device)
    dtype = _AUTOCAST[precision]
    variants = ((),) + tuple(tuple(f) for f in tta if tuple(f))
    for b in range(0, n, batch_size):
        xb = _pad_to_multiple(slices[b : b + batch_size, None].to(torch.float32), m)
        for flip in variants:
            dims = tuple(2 + a for a in flip)
            xi = torch.flip(xb, dims) if dims else xb
            xi = xi.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                yb = model(xi).float()
            if dims:
                yb = torch.flip(yb, dims)
            out[b : b + batch_size] += yb[:, 0, :h, :w][:, crop[0], crop[1]]
    if len(variants) > 1:
        out /= len(variants)
    return out


def predict_slices(
    model: nn.Module,
    slices: np.ndarray,
    batch_size: int | None = 8,
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
    ``precision="bf16"`` (or ``"fp16"``, CUDA) runs under autocast (results differ from fp32 by
    about 1e-2 of the normalised range; see benchmarks/inference.py). ``batch_size`` None picks
    :func:`auto_batch_size`.
    """
    x = torch.from_numpy(np.ascontiguousarray(slices, dtype=np.float32)).to(torch.device(device))
    return predict_tensor(model, x, batch_size, precision, tta).cpu().numpy()


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


@dataclass
class BlockWindows:
    """The two normalised, z-upsampled windows that restore one output block.

    Each axial pass is 2D, so each window carries a halo only in the plane of its slices:
    ``xz`` covers the block's y rows and extends past it in z and x; ``yz`` covers its x
    columns and extends in z and y. The corners that neither pass reads are never upsampled.

    Attributes
    ----------
    ranges : ((z0, z1), (y0, y1), (x0, x1))
        The output block in isotropic coordinates.
    xz : ndarray (z, y1 - y0, x)
    yz : ndarray (z, y, x1 - x0)
    origin : (z, y, x)
        Isotropic coordinates of the windows' first z plane, the ``yz`` window's first y row and
        the ``xz`` window's first x column (negative where a mirrored halo reaches past the edge).
    """

    ranges: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    xz: np.ndarray
    yz: np.ndarray
    origin: tuple[int, int, int]

    @property
    def nbytes(self) -> int:
        return self.xz.nbytes + self.yz.nbytes


def read_block_windows(source, factor: int, ranges, norm: Normalization, halo: int,
                       edges: str = "mirror") -> BlockWindows:
    """Read and upsample what the two axial passes need to restore the block at ``ranges``.

    ``halo`` voxels on each side in the plane of each pass. Past the volume's edges the halo is
    mirrored (``edges="mirror"``: whole-volume inference is one block with this halo) or left
    out (``"clip"``: slices end at the volume's edges and are only padded to the network's size
    multiple, as in CSBDeep; no network work on mirrored voxels).
    """
    if edges not in EDGES:
        raise ValueError(f"edges must be one of {', '.join(EDGES)}, got {edges!r}")
    (z0, z1), (y0, y1), (x0, x1) = ranges
    shape = (upsampled_length(source.shape[0], factor),) + tuple(source.shape[1:])

    def extent(start, stop, n):
        if edges == "clip":
            return max(0, start - halo), min(n, stop + halo)
        return start - halo, stop + halo

    zw, yw, xw = (extent(a, b, n) for (a, b), n in zip(ranges, shape))
    none = (0, 0, 0)
    xz = read_window(source, factor, (zw, (y0, y1), xw), none, norm)
    yz = read_window(source, factor, (zw, yw, (x0, x1)), none, norm)
    return BlockWindows(tuple(ranges), xz, yz, (zw[0], yw[0], xw[0]))


@torch.no_grad()
def restore_windows(
    model: nn.Module,
    windows: BlockWindows,
    combine: str = "mean",
    batch_size: int | None = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
    disagreement: bool = False,
):
    """Restore the block of ``windows`` (output still normalised), float32 ``(z, y, x)``.

    xz slices (one per block row y) and yz slices (one per block column x) are taken with z
    along their last axis, as in training, from the windows moved once to ``device``; only the
    block's part of each restored slice is kept, and the two passes are combined there. With
    ``disagreement``, returns ``(restored, |xz - yz|)`` (both normalised): the two passes see
    the same voxel through differently oriented slices, and where the network is unsure they
    disagree.
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    device = torch.device(device)
    (z0, z1), (y0, y1), (x0, x1) = windows.ranges
    oz, oy, ox = windows.origin
    zs = slice(z0 - oz, z1 - oz)
    xz = torch.from_numpy(windows.xz).to(device).permute(1, 2, 0)  # (y, x, z) slices
    a = predict_tensor(model, xz, batch_size, precision, tta, (slice(x0 - ox, x1 - ox), zs))
    a = a.permute(2, 0, 1)  # (z, y, x)
    yz = torch.from_numpy(windows.yz).to(device).permute(2, 1, 0)  # (x, y, z) slices
    b = predict_tensor(model, yz, batch_size, precision, tta, (slice(y0 - oy, y1 - oy), zs))
    b = b.permute(2, 1, 0)
    if combine == "mean":
        out = 0.5 * (a + b)
    else:
        out = torch.sqrt(a.clamp(min=0) * b.clamp(min=0))
    if disagreement:
        return out.cpu().numpy(), (a - b).abs().cpu().numpy()
    return out.cpu().numpy()


def restore_block(
    model: nn.Module,
    source,
    factor: int,
    ranges,
    norm: Normalization,
    halo: int,
    combine: str = "mean",
    batch_size: int | None = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
    edges: str = "mirror",
    disagreement: bool = False,
):
    """Restored block of the isotropic volume, in the source's intensity units (float32).

    ``ranges`` is ``((z0, z1), (y0, y1), (x0, x1))`` in isotropic coordinates; the starts must be
    multiples of the network's size multiple for the result to match whole-volume inference
    with the same ``halo`` and ``edges`` (see :func:`read_block_windows`). With
    ``disagreement``, returns ``(restored, |xz - yz|)``, the second also in intensity units.
    """
    check_block_start(model, ranges)
    windows = read_block_windows(source, factor, ranges, norm, halo, edges)
    result = restore_windows(model, windows, combine, batch_size, device, precision, tta, disagreement)
    if not disagreement:
        return norm.invert(result)
    restored, spread = result
    return norm.invert(restored), (spread * np.float32(norm.high - norm.low)).astype(np.float32, copy=False)


def check_block_start(model: nn.Module, ranges) -> None:
    """Raise ValueError unless every start of ``ranges`` lies on the network's pooling grid."""
    m = int(getattr(model, "size_multiple", 1))
    if any(r[0] % m for r in ranges):
        raise ValueError(f"block starts {[r[0] for r in ranges]} must be multiples of {m} for this network")


def block_ranges(shape: tuple[int, ...], block: tuple[int, ...]) -> Iterator[tuple[tuple[int, int], ...]]:
    """All blocks of a regular grid over ``shape``, as ``((start, stop), ...)`` per axis."""
    grids = [range(0, s, b) for s, b in zip(shape, block)]
    for starts in np.ndindex(*[len(g) for g in grids]):
        yield tuple((g[i], min(g[i] + b, s)) for g, i, b, s in zip(grids, starts, block, shape))


def central_slab(shape: tuple[int, int, int], planes: int, max_voxels: int, multiple: int = 1,
                 min_side: int = 1) -> tuple[tuple[int, int], ...]:
    """Ranges of the ``planes`` central planes of an isotropic volume of ``shape``, as ``((z0, z1), (y0, y1), (x0, x1))``.

    The planes are cropped laterally about their centre (the aspect ratio kept, at least
    ``min_side`` per side) when they would hold more than ``max_voxels`` voxels; starts are
    multiples of ``multiple`` (a network's size multiple, see :func:`check_block_start`).

    Examples
    --------
    >>> central_slab((256, 256, 256), 96, 2**24, 4)
    ((80, 176), (0, 256), (0, 256))
    >>> central_slab((64, 1024, 2048), 96, 2**22, 4)
    ((0, 64), (420, 601), (840, 1202))
    """
    nz, ny, nx = (int(s) for s in shape)
    planes = min(int(planes), nz)
    z0 = (nz - planes) // 2 // multiple * multiple
    scale = min(1.0, float(np.sqrt(max_voxels / (planes * ny * nx))))
    ranges = [(z0, z0 + planes)]
    for n in (ny, nx):
        side = min(n, max(int(min_side), int(n * scale)))
        start = (n - side) // 2 // multiple * multiple
        ranges.append((start, start + side))
    return tuple(ranges)


def restore_volume(
    model: nn.Module,
    volume: np.ndarray,
    factor: int,
    norm: Normalization,
    halo: int,
    combine: str = "mean",
    batch_size: int | None = 8,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    tta: tuple[tuple[int, ...], ...] = (),
    edges: str = "mirror",
) -> np.ndarray:
    """Whole-volume restoration held in memory (small volumes, tests, reference)."""
    full = tuple((0, s) for s in iso_shape(volume.shape, factor))
    return restore_block(model, volume, factor, full, norm, halo, combine, batch_size, device, precision, tta, edges)


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
