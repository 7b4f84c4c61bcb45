"""Stage ``assemble``: restored volumes of a time-lapse, one per (time point, channel), into one TCZYX image.

``isonet predict --channel C --time T`` restores one volume of a time-lapse into a 3D store, so
that every (t, c) is an independent job (a cluster runs them in parallel, a rerun redoes only
the missing ones). This stage gathers them into one OME-Zarr with the axes of the converted
input (``t``, ``c``, ``z``, ``y``, ``x``), its time step, channel names and acquisition record,
copying one slab at a time, adds the pyramid and can export an ImageJ hyperstack TIFF.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import zarr

from isonet.errors import InputError
from isonet.provenance import package_versions
from isonet.stages.common import check_output_path, time_step_of
from isonet.storage import (
    atomic_path,
    build_pyramid,
    channel_axis,
    create_ome_zarr,
    export_hyperstack_tiff,
    image_axes,
    omero_channels,
    open_hyperstack,
    read_ome_zarr,
    read_planes,
    time_axis,
    write_ome_zarr_metadata,
)

logger = logging.getLogger(__name__)


def assemble_stage(source_zarr, parts: Sequence[tuple[int, int, str | os.PathLike]], output_zarr,
                   pyramid_levels: int = 3, tiff_path=None, chunks: Sequence[int] = (64, 128, 128)) -> dict:
    """Gather restored ``(t, c)`` volumes into one ``(t, c, z, y, x)`` OME-Zarr (axes as the source's).

    Parameters
    ----------
    source_zarr : str or path
        The converted input (``isonet convert``): its axes, time step, channel names and
        acquisition record are carried over.
    parts : sequence of (int, int, path)
        ``(time point, channel, restored 3D store)``, one for every time point and channel of
        the output: the time points and channels named form a complete grid.
    output_zarr : str or path
        OME-Zarr to write (atomically).
    pyramid_levels : int
        Resolution levels, level 0 included.
    tiff_path : str or path, optional
        Also export an ImageJ hyperstack TIFF (``TZCYX``) here.
    chunks : (z, y, x)
        Spatial chunk shape of the output (one time point and channel per chunk).

    Returns
    -------
    summary : dict
        ``shape``, ``axes``, ``timepoints``, ``channels`` (names), ``voxel_size``, ``time_step_s``, ``levels``.

    Raises
    ------
    InputError
        Missing or damaged parts, a grid with holes, parts of different shapes or voxel sizes.
    """
    output_zarr = check_output_path(output_zarr, [source_zarr] + [p for _, _, p in parts], store=True)
    if tiff_path:
        check_output_path(tiff_path, [source_zarr, output_zarr])
    source = open_hyperstack(source_zarr)
    source.close()
    names = source.acquisition.channel_names(source.n_channels)
    by_key = {}
    for t, c, path in parts:
        key = (int(t), int(c))
        if key in by_key:
            raise InputError(f"{path}: time point {t} of channel {c} is given twice (also {by_key[key]})")
        if not (0 <= key[0] < source.n_times and 0 <= key[1] < source.n_channels):
            raise InputError(f"{path}: time point {t} of channel {c} is not in {source_zarr} "
                             f"({source.n_times} time points, {source.n_channels} channels)")
        by_key[key] = path
    if not by_key:
        raise InputError(f"{output_zarr}: no restored volumes given; pass --part T C STORE for each")
    times = sorted({t for t, _ in by_key})
    chans = sorted({c for _, c in by_key})
    missing = [(t, c) for t in times for c in chans if (t, c) not in by_key]
    if missing:
        raise InputError(f"{output_zarr}: no restored volume for time point {missing[0][0]} of channel "
                         f"{missing[0][1]}; run `isonet predict --time {missing[0][0]} --channel {missing[0][1]}` "
                         "and pass it with --part")
    volumes = {key: read_ome_zarr(path) for key, path in by_key.items()}
    (first, voxel_size) = volumes[(times[0], chans[0])]
    for key, (array, vs) in volumes.items():
        if array.ndim != 3 or tuple(array.shape) != tuple(first.shape) or vs is None or \
                not np.allclose(vs, voxel_size, rtol=1e-6):
            raise InputError(f"{by_key[key]}: restored volume of shape {tuple(array.shape)}, voxel size {vs} differs "
                             f"from {by_key[(times[0], chans[0])]} ({tuple(first.shape)}, {voxel_size}); restore "
                             "every time point and channel with the same settings")
    keep_t = "t" in image_axes(source_zarr)
    keep_c = "c" in image_axes(source_zarr)
    time_step = time_step_of(source.acquisition.time_increment_s, times, logger.info) if keep_t else None
    leading = ([time_axis(time_step)] if keep_t else []) + ([channel_axis()] if keep_c else [])
    lead_shape = ((len(times),) if keep_t else ()) + ((len(chans),) if keep_c else ())
    spatial = tuple(int(s) for s in first.shape)
    out_chunks = (1,) * len(lead_shape) + tuple(min(int(c), s) for c, s in zip(chunks, spatial))
    acquisition = source.acquisition
    record = acquisition.to_dict()
    record["channels"] = [record["channels"][c] if c < len(record["channels"]) else {} for c in chans]
    record["voxel_size"] = list(voxel_size)
    record["time_increment_s"] = time_step
    provenance = {
        "stage": "assemble", "source": str(source_zarr), "timepoints": times, "source_channels": chans,
        "parts": {f"t{t}_c{c}": str(p) for (t, c), p in sorted(by_key.items())}, "acquisition": record,
        "versions": package_versions(),
    }
    ranges = []
    with atomic_path(output_zarr) as tmp:
        _, level0 = create_ome_zarr(tmp, lead_shape + spatial, first.dtype, out_chunks, voxel_size,
                                    name="restored", provenance=provenance, leading_axes=leading)
        for ci, c in enumerate(chans):
            low, high = np.inf, -np.inf
            for ti, t in enumerate(times):
                array, _ = volumes[(t, c)]
                lead = ((ti,) if keep_t else ()) + ((ci,) if keep_c else ())
                for z0 in range(0, spatial[0], out_chunks[-3]):
                    z1 = min(z0 + out_chunks[-3], spatial[0])
                    slab = read_planes(array, z0, z1, by_key[(t, c)])
                    low, high = min(low, float(slab.min())), max(high, float(slab.max()))
                    level0[lead + (slice(z0, z1),)] = slab
            ranges.append((low, high))
        write_ome_zarr_metadata(zarr.open_group(tmp, mode="r+"), voxel_size, 1, name="restored",
                                leading_axes=leading, omero=omero_channels([names[c] for c in chans], ranges))
        shapes = build_pyramid(tmp, n_levels=pyramid_levels, log=lambda m: logger.info("assemble: %s", m))
    logger.info("assemble: %s: %d time points x %d channels of %s, voxel size %s µm", output_zarr, len(times),
                len(chans), spatial, voxel_size)
    if tiff_path:
        array, _ = read_ome_zarr(output_zarr)
        export_hyperstack_tiff(array, image_axes(output_zarr), tiff_path, voxel_size, time_step)
        logger.info("assemble: exported %s", tiff_path)
    return {"shape": list(lead_shape + spatial), "axes": "".join(a["name"] for a in leading) + "zyx",
            "timepoints": times, "channels": [names[c] for c in chans], "voxel_size": list(voxel_size),
            "time_step_s": time_step, "levels": [list(s) for s in shapes]}
