"""Stage ``convert``: any input volume (TIFF, OME-TIFF, ImageJ TIFF, OME-Zarr) to a chunked OME-Zarr.

The input is opened read-only and streamed in rows of whole chunks (``chunks[0]`` planes,
``chunks[1]`` rows, the full width), so memory holds one such row whatever the depth and height
of the volume. Every slab of float data is checked for NaN and
infinite values before it is written, and a volume whose voxels all hold one value is refused
once the last slab is read (its running minimum and maximum are kept). The output store is
written under a temporary name and moved into place only when complete, so a killed run or a
refused input leaves no store.

Data type policy: integer and floating point data keep their dtype (in native byte order);
``bool`` masks are stored as ``uint8`` 0/1, because downstream arithmetic and most viewers do not
handle a boolean zarr; complex, string, object and structured data are rejected.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import isonet
from isonet.errors import InputError
from isonet.stages.common import check_output_path, time_step_of
from isonet.storage import (
    atomic_path,
    build_pyramid,
    channel_axis,
    check_voxel_size,
    create_ome_zarr,
    omero_channels,
    open_hyperstack,
    open_volume,
    read_planes,
    time_axis,
    write_ome_zarr_metadata,
)
from isonet.storage.hyperstack import Hyperstack

logger = logging.getLogger(__name__)


def stored_dtype(dtype: Any, source: str | os.PathLike) -> np.dtype:
    """The dtype a volume of ``dtype`` is stored with, in native byte order.

    Parameters
    ----------
    dtype : numpy dtype-like
        Input data type.
    source : str or path
        Named in the error message.

    Returns
    -------
    dtype : numpy.dtype
        ``dtype`` itself for integers and floats, ``uint8`` for ``bool``.

    Raises
    ------
    InputError
        For complex, string, object, structured and other non-numeric data.

    Examples
    --------
    >>> stored_dtype(">u2", "a.tif"), stored_dtype(bool, "a.tif")
    (dtype('uint16'), dtype('uint8'))
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind in "iuf":
        # by kind and size: TIFF's int64 comes as 'q', which zarr does not take for 'int64' ('l')
        return np.dtype(f"{dtype.kind}{dtype.itemsize}")
    raise InputError(
        f"{source}: pixel type {dtype} is not supported; save the image as integer or float "
        "grayscale (e.g. uint16 or float32)"
    )


def _check_finite(slab: np.ndarray, z0: int, source: str | os.PathLike) -> None:
    if slab.dtype.kind != "f" or np.isfinite(slab).all():
        return
    for what, bad, fix in (("NaN", np.isnan, "fill or mask"), ("infinite", np.isinf, "clip or mask")):
        planes = np.flatnonzero(bad(slab).any(axis=(1, 2)))
        if planes.size:
            raise InputError(
                f"{source}: contains {what} values at z={z0 + int(planes[0])}; {fix} them before running isonet"
            )


def _chunks(chunks: Sequence[int], shape: tuple[int, ...]) -> tuple[int, int, int]:
    try:
        c = tuple(int(v) for v in chunks)
    except (TypeError, ValueError):
        c = ()
    if len(c) != 3 or min(c) < 1:
        raise InputError(f"chunks {chunks!r} is not valid; give three positive integers [z, y, x]")
    return tuple(min(v, s) for v, s in zip(c, shape))  # type: ignore[return-value]


def convert(input_path: str | os.PathLike, output_path: str | os.PathLike,
            chunks: Sequence[int] = (64, 256, 256), voxel_size: Sequence[float] | None = None,
            compression_level: int = 3, n_levels: int = 2,
            log: Callable[[str], None] | None = None, axes: str | None = None,
            channels: Sequence[int | str] | None = None, timepoints: Sequence[int] | None = None) -> dict:
    """Convert a volume or time-lapse to a chunked, zstd-compressed OME-Zarr (NGFF 0.5) with a 2x pyramid.

    A time-lapse and/or multi-channel image (OME-TIFF, ImageJ hyperstack, OME-Zarr with t/c
    axes) keeps its time and channel axes: the output is ``(t, c, z, y, x)`` (or ``(t, z, y, x)``,
    ``(c, z, y, x)``), with the time step as the t scale, the channel names in the ``omero``
    metadata and the acquisition record (:class:`isonet.storage.Acquisition`) in the group
    attribute ``isonet.acquisition``. It is read and written one ``(t, c)`` volume slab at a time.

    Parameters
    ----------
    input_path : str or path
        Anything :func:`isonet.storage.open_volume` reads: ``.tif``/``.tiff``/``.ome.tif``
        (ImageJ, OME or plain TIFF) or ``.zarr``. Opened read-only, never modified.
    output_path : str or path
        OME-Zarr store to write; replaced atomically if it exists.
    chunks : sequence of 3 int
        Chunk shape ``(z, y, x)`` (clipped to the volume); ``chunks[0]`` planes of ``chunks[1]``
        rows are read and written at a time.
    voxel_size : sequence of 3 float, optional
        ``(z, y, x)`` in µm; overrides the file's metadata. Needed when the file has none.
    compression_level : int
        zstd level.
    n_levels : int
        Resolution levels written, level 0 included (each 2x smaller in z, y and x).
    log : callable, optional
        Receives progress lines (``"convert: planes 64/256"``); default: ``logging`` at INFO.
    axes : str, optional
        The input's axes, one letter per axis from T, C, Z, Y, X (e.g. ``"TCZYX"``), for a file
        that does not say (see :func:`isonet.storage.open_hyperstack`).
    channels : sequence of int or str, optional
        Channels to keep (indices or names), in that order; all when None.
    timepoints : sequence of int, optional
        Time points to keep, in that order; all when None.

    Returns
    -------
    summary : dict
        ``input``, ``output``, ``shape``, ``dtype``, ``voxel_size``, ``voxel_size_source``
        (``"argument"`` or ``"file"``), ``chunks``, ``level_shapes``; for a time-lapse or
        multi-channel image also ``axes``, ``channels`` (names), ``timepoints``, ``time_step_s``.

    Raises
    ------
    InputError
        Unreadable, damaged or non-3D input, unsupported dtype, NaN/Inf values, all voxels equal,
        no voxel size, output equal to or inside the input, output an existing file or non-Zarr
        directory, or an unwritable output location.
    """
    say = log if log is not None else logger.info
    input_path = Path(input_path)
    output_path = check_output_path(output_path, [input_path], store=True)

    hyperstack = _open_hyperstack(input_path, axes)
    if hyperstack is not None:
        if axes is not None or channels is not None or timepoints is not None or hyperstack.axes and (
                hyperstack.n_times > 1 or hyperstack.n_channels > 1):
            try:
                return _convert_hyperstack(hyperstack, output_path, chunks, voxel_size, compression_level,
                                           n_levels, say, channels, timepoints)
            finally:
                hyperstack.close()
        hyperstack.close()
    volume, file_voxel_size, close = open_volume(input_path)
    try:
        shape = tuple(int(s) for s in volume.shape)
        dtype = stored_dtype(volume.dtype, input_path)
        voxel_size, source = _resolve_voxel_size(voxel_size, file_voxel_size, input_path, say)
        chunks = _chunks(chunks, shape)
        provenance = {
            "stage": "convert", "source": str(input_path), "source_dtype": str(np.dtype(volume.dtype)),
            "voxel_size_source": source, "isonet_version": isonet.__version__,
        }
        say(f"convert: {input_path} -> {output_path}: shape {shape} {dtype}, voxel size {voxel_size} µm, "
            f"chunks {chunks}")
        with atomic_path(output_path) as tmp:
            _, level0 = create_ome_zarr(tmp, shape, dtype, chunks, voxel_size,
                                        compression_level=compression_level, provenance=provenance)
            low, high = np.inf, -np.inf
            for z0 in range(0, shape[0], chunks[0]):
                z1 = min(z0 + chunks[0], shape[0])
                for y0 in range(0, shape[1], chunks[1]):  # one row of whole chunks at a time
                    y1 = min(y0 + chunks[1], shape[1])
                    block = read_planes(volume, z0, z1, input_path, rows=(y0, y1))
                    _check_finite(block, z0, input_path)
                    low, high = min(low, block.min()), max(high, block.max())
                    block = block.astype(dtype, copy=False)
                    for x0 in range(0, shape[2], chunks[2]):  # one chunk encoded at a time
                        level0[z0:z1, y0:y1, x0:x0 + chunks[2]] = block[:, :, x0:x0 + chunks[2]]
                say(f"convert: planes {z1}/{shape[0]}")
            if low == high:
                raise InputError(
                    f"{input_path}: every voxel has the value {low.item()}, there is nothing to restore; "
                    "check that this is the right file or channel"
                )
            level_shapes = build_pyramid(tmp, n_levels=n_levels, log=lambda m: say(f"convert: {m}"))
    finally:
        close()
    return {
        "input": str(input_path), "output": str(output_path), "shape": shape, "dtype": str(dtype),
        "voxel_size": tuple(voxel_size), "voxel_size_source": source, "chunks": chunks,
        "level_shapes": level_shapes,
    }


def _open_hyperstack(path: Path, axes: str | None) -> Hyperstack | None:
    """The input as a hyperstack; None where only the 3D reader can tell (its errors say what is wrong)."""
    try:
        return open_hyperstack(path, axes)
    except InputError:
        if axes is not None:
            raise
        return None


def _selection(wanted: Sequence[int | str] | None, n: int, what: str, names: Sequence[str],
               source: Path, option: str) -> list[int]:
    """Indices of the wanted time points or channels (by index or name), checked."""
    if wanted is None:
        return list(range(n))
    chosen: list[int] = []
    for item in wanted:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
        elif text in names:
            index = list(names).index(text)
        else:
            listed = f" ({', '.join(names)})" if names else ""
            raise InputError(f"{source}: no {what} {item!r}; the image has {n}{listed}: fix {option}")
        if not 0 <= index < n:
            raise InputError(f"{source}: no {what} {index}; the image has {n} (0 to {n - 1}): fix {option}")
        if index in chosen:
            raise InputError(f"{source}: {what} {index} is selected twice; fix {option}")
        chosen.append(index)
    if not chosen:
        raise InputError(f"{source}: no {what} selected; fix {option} or leave it out for all")
    return chosen


def _convert_hyperstack(stack: Hyperstack, output_path: Path, chunks: Sequence[int],
                        voxel_size: Sequence[float] | None, compression_level: int, n_levels: int,
                        say: Callable[[str], None], channels: Sequence[int | str] | None,
                        timepoints: Sequence[int] | None) -> dict:
    """Write a (t, c, z, y, x) hyperstack as an OME-Zarr keeping its t and c axes, one volume slab at a time."""
    input_path = stack.path
    acquisition = stack.acquisition
    names = acquisition.channel_names(stack.n_channels)
    times = _selection(timepoints, stack.n_times, "time point", [], input_path, "--timepoints")
    chans = _selection(channels, stack.n_channels, "channel", names, input_path, "--channels")
    spatial = tuple(int(s) for s in stack.array.shape[2:])
    dtype = stored_dtype(stack.array.dtype, input_path)
    file_voxel_size = stack.voxel_size
    voxel_size, source = _resolve_voxel_size(voxel_size, file_voxel_size, input_path, say)
    keep_t = "T" in stack.axes and stack.n_times > 1
    keep_c = "C" in stack.axes and stack.n_channels > 1
    time_step = time_step_of(acquisition.time_increment_s, times, say)
    leading = ([time_axis(time_step)] if keep_t else []) + ([channel_axis()] if keep_c else [])
    lead_shape = ((len(times),) if keep_t else ()) + ((len(chans),) if keep_c else ())
    shape = lead_shape + spatial
    spatial_chunks = _chunks(chunks, spatial)
    out_chunks = (1,) * len(lead_shape) + spatial_chunks
    kept = dataclasses.replace(
        acquisition, channels=tuple(acquisition.channel(c) for c in chans), voxel_size=tuple(voxel_size),
        time_increment_s=time_step,
    )
    provenance = {
        "stage": "convert", "source": str(input_path), "source_dtype": str(np.dtype(stack.array.dtype)),
        "voxel_size_source": source, "isonet_version": isonet.__version__,
        "source_timepoints": times, "source_channels": chans, "acquisition": kept.to_dict(),
    }
    axes_label = "".join(a["name"] for a in leading) + "zyx"
    say(f"convert: {input_path} -> {output_path}: axes {axes_label} shape {shape} {dtype}, voxel size "
        f"{voxel_size} µm, time step {time_step} s, channels {[names[c] for c in chans]}, "
        f"chunks {out_chunks}")
    ranges = []
    with atomic_path(output_path) as tmp:
        _, level0 = create_ome_zarr(tmp, shape, dtype, out_chunks, voxel_size, compression_level=compression_level,
                                    provenance=provenance, leading_axes=leading)
        for ci, c in enumerate(chans):
            low, high = np.inf, -np.inf
            for ti, t in enumerate(times):
                volume = stack.volume(t, c)
                lead = ((ti,) if keep_t else ()) + ((ci,) if keep_c else ())
                where = f"{input_path} (t={t}, c={c})"
                for z0 in range(0, spatial[0], spatial_chunks[0]):
                    z1 = min(z0 + spatial_chunks[0], spatial[0])
                    slab = read_planes(volume, z0, z1, where)
                    _check_finite(slab, z0, where)
                    low, high = min(low, slab.min()), max(high, slab.max())
                    level0[lead + (slice(z0, z1),)] = slab.astype(dtype, copy=False)
                say(f"convert: time point {t} of channel {names[c]} written")
            if low == high:
                raise InputError(
                    f"{input_path}: every voxel of channel {names[c]} has the value {low.item()}, there is "
                    "nothing to restore; check that this is the right file, or leave the channel out with --channels"
                )
            ranges.append((low.item(), high.item()))
        write_ome_zarr_metadata(zarr.open_group(tmp, mode="r+"), voxel_size, 1, leading_axes=leading,
                                omero=omero_channels([names[c] for c in chans], ranges))
        level_shapes = build_pyramid(tmp, n_levels=n_levels, log=lambda m: say(f"convert: {m}"))
    return {
        "input": str(input_path), "output": str(output_path), "shape": shape, "dtype": str(dtype),
        "voxel_size": tuple(voxel_size), "voxel_size_source": source, "chunks": out_chunks,
        "level_shapes": level_shapes, "axes": axes_label, "channels": [names[c] for c in chans],
        "timepoints": times, "time_step_s": time_step,
    }


def _resolve_voxel_size(voxel_size, file_voxel_size, input_path, say):
    """The voxel size to write and where it came from: the argument (over the file's, said so), else the file's."""
    if voxel_size is not None:
        voxel_size = check_voxel_size(voxel_size, input_path)
        if file_voxel_size is not None and not np.allclose(voxel_size, file_voxel_size, rtol=1e-6):
            say(f"convert: voxel size {voxel_size} µm overrides {file_voxel_size} µm from {input_path}")
        return voxel_size, "argument"
    if file_voxel_size is not None:
        return file_voxel_size, "file"
    raise InputError(
        f"{input_path}: no valid voxel size in the file metadata (missing, zero, negative or not finite); "
        "set voxel_size: [z, y, x] (µm) for this sample in the config"
    )
