"""Stage ``segment``: nuclei labels of the restored volume (intermodes, fill holes, EDT watershed), block by block.

A time-lapse is segmented one time point at a time, in one channel.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from isonet.errors import InputError
from isonet.segment import summary_of_sizes
from isonet.segment_blocks import DEFAULT_BLOCK, DEFAULT_HALO, DEFAULT_MAX_WINDOW, segment_nuclei_blocks
from isonet.stages.common import check_output_path
from isonet.stages.views import PlanesView
from isonet.storage import (
    WRITE_CONFIG,
    IndexedView,
    atomic_path,
    build_pyramid,
    channel_labels,
    create_labels,
    create_ome_zarr,
    image_axes,
    read_ome_zarr,
    write_json,
)
from isonet.storage.integrity import checksummed_compressors

logger = logging.getLogger(__name__)


def whole_chunks(block: Sequence[int], chunks: Sequence[int]) -> tuple[int, int, int]:
    """``block`` rounded up to whole chunks, so that every block writes whole chunks.

    Examples
    --------
    >>> whole_chunks((64, 100, 128), (32, 64, 64))
    (64, 128, 128)
    """
    return tuple(-(-int(b) // int(c)) * int(c) for b, c in zip(block, chunks))


def segment_to_zarr(volume, level0, threshold=None, block=DEFAULT_BLOCK, halo=DEFAULT_HALO,
                    min_distance: int = 5, min_size: int = 64, log=None, max_window=DEFAULT_MAX_WINDOW,
                    rule: str = "intermodes"):
    """Segment ``volume`` block by block into ``level0`` of a new OME-Zarr image.

    ``level0`` is the array :func:`isonet.storage.create_ome_zarr` (or
    :func:`isonet.storage.create_labels`) gave, opened to store every chunk, empty ones included,
    or an :class:`isonet.storage.IndexedView` of one time point of it. Provisional ids live in a temporary int64 array ``scratch`` next to it, removed at the end.
    Returns the result of :func:`isonet.segment_blocks.segment_nuclei_blocks`.
    """
    group = zarr.open_group(level0.store, mode="r+")
    scratch = group.create_array("scratch", shape=tuple(volume.shape), dtype=np.int64, chunks=tuple(level0.chunks),
                                 compressors=checksummed_compressors(1), fill_value=0, config=WRITE_CONFIG)
    try:
        return segment_nuclei_blocks(volume, level0, scratch, threshold=threshold,
                                     block=whole_chunks(block, level0.chunks), halo=halo,
                                     min_distance=min_distance, min_size=min_size, log=log,
                                     max_window=max_window, rule=rule)
    finally:
        del group["scratch"]


def segment_stage(
    image_zarr, labels_zarr, summary_json=None, threshold: float | None = None, min_distance: int = 5,
    min_size: int = 64, pyramid_levels: int = 3, block: Sequence[int] = DEFAULT_BLOCK, halo: int = DEFAULT_HALO,
    channel: int | str | None = None, max_window: int | None = DEFAULT_MAX_WINDOW,
) -> dict:
    """Segment the level-0 image of ``image_zarr`` into ``labels_zarr`` (OME-Zarr, int32).

    The volume is read and the labels written block by block
    (:func:`isonet.segment_blocks.segment_nuclei_blocks`): the labels equal those of a
    whole-volume segmentation, while memory follows ``block`` (rounded up to whole chunks of the
    image) and ``halo``, not the volume.

    A ``labels_zarr`` of the form ``<image_zarr>/labels/<name>`` is written as NGFF labels of the
    image (:func:`isonet.storage.create_labels`: ``image-label`` metadata, listed in the image's
    ``labels`` group, as many levels as the image), which viewers overlay on the image; any other
    path is a store of its own with ``pyramid_levels`` levels.

    A time-lapse or multi-channel image (axes ``t`` and/or ``c`` before z, y, x, as ``isonet
    assemble`` writes) is segmented one time point at a time, each with its own threshold, in
    one ``channel`` (index or name; needed when the image has several); its labels go into the
    image (``<image_zarr>/labels/<name>``), with the image's axes and length 1 along ``c``.
    The summary then lists every time point (``timepoints``) besides the total ``n_objects``.
    """
    in_image = Path(labels_zarr).parent.resolve() == (Path(image_zarr) / "labels").resolve()
    if not in_image:
        check_output_path(labels_zarr, [image_zarr], store=True)
    if summary_json:
        check_output_path(summary_json, [image_zarr, labels_zarr])
    array, voxel_size = read_ome_zarr(image_zarr)
    lead_axes = image_axes(image_zarr)[:-3] if voxel_size is not None and array.ndim > 3 else []
    if voxel_size is None or array.ndim != 3 + len(lead_axes) or set(lead_axes) - {"t", "c"}:
        raise InputError(
            f"{image_zarr}: segment needs an OME-Zarr image with voxel sizes and axes (t, c,) z, y, x, got shape "
            f"{tuple(array.shape)}; give the output of `isonet stitch`, `isonet assemble` or `isonet convert`"
        )
    if lead_axes and not in_image:
        raise InputError(f"{labels_zarr}: the labels of a time-lapse or multi-channel image go into the image; "
                         f"give {Path(image_zarr) / 'labels' / Path(labels_zarr).name}")
    chunks = tuple(array.chunks)
    provenance = {"stage": "segment", "source": str(image_zarr), "block": list(whole_chunks(block, chunks[-3:])),
                  "halo": int(halo), "max_window": max_window}
    if lead_axes:
        c, name = _channel_of(image_zarr, lead_axes, array.shape, channel)
        times = range(array.shape[lead_axes.index("t")]) if "t" in lead_axes else [None]
        volumes = [(t, tuple(t if a == "t" else c for a in lead_axes), tuple(t if a == "t" else 0 for a in lead_axes))
                   for t in times]
        shape = tuple(n if a == "t" else 1 for a, n in zip(lead_axes, array.shape)) + tuple(array.shape[-3:])
        provenance.update({"channel": c, "channel_name": name})
    else:
        if channel not in (None, 0, "0"):
            raise InputError(f"{image_zarr}: a 3D image has no channel {channel!r}; leave out --channel")
        volumes, shape = [(None, (), ())], tuple(array.shape)
    if in_image:
        writer = create_labels(image_zarr, Path(labels_zarr).name, shape, chunks, voxel_size, provenance=provenance)
    else:
        writer = _label_store(labels_zarr, array.shape, array.chunks, voxel_size, provenance, pyramid_levels)
    per_time = []
    with writer as level0:
        for t, source, target in volumes:
            volume = IndexedView(array, source) if source else array
            result = _segment_volume(image_zarr, volume, IndexedView(level0, target) if target else level0,
                                     threshold, block, halo, min_distance, min_size, max_window)
            per_time.append({**({"t": t} if t is not None else {}), "threshold": result["threshold"],
                             "threshold_method": result["threshold_method"], **summary_of_sizes(result["sizes"])})
            if t is not None:
                logger.info("segment: time point %d: %s threshold %.4g, %d objects", t,
                            result["threshold_method"], result["threshold"], per_time[-1]["n_objects"])
        if not lead_axes:
            summary = dict(per_time[0])
        else:
            summary = {"channel": provenance["channel"], "channel_name": provenance["channel_name"],
                       "n_objects": sum(p["n_objects"] for p in per_time), "timepoints": per_time}
        zarr.open_group(level0.store, mode="r+").update_attributes({"isonet": {**provenance, **summary}})
    if summary_json:
        write_json(summary_json, summary)
    logger.info("segment: %d objects -> %s", summary["n_objects"], labels_zarr)
    return summary


def _segment_volume(image_zarr, volume, target, threshold, block, halo, min_distance, min_size, max_window) -> dict:
    """Labels of one 3D volume into ``target``; InputErrors of the pure functions name the image."""
    try:
        return segment_to_zarr(PlanesView(volume, np.float32), target, threshold, block, halo,
                               min_distance, min_size, log=logger.warning, max_window=max_window)
    except InputError as err:  # the pure functions name the setting, not the file
        if str(err).startswith((str(image_zarr), str(Path(image_zarr)))):
            raise
        raise InputError(f"{image_zarr}: {err}") from None


def _channel_of(image_zarr, lead_axes: list[str], shape, channel) -> tuple[int, str]:
    """Index and name of the channel to segment (``channel`` an index or a name from ``omero``)."""
    n = int(shape[lead_axes.index("c")]) if "c" in lead_axes else 1
    labels = channel_labels(image_zarr)
    names = [(labels[i] if i < len(labels) else None) or f"c{i}" for i in range(n)]
    if channel is None:
        if n == 1:
            return 0, names[0]
        raise InputError(f"{image_zarr}: has {n} channels ({', '.join(names)}); choose the one to segment with "
                         "--channel (index or name)")
    if str(channel).isdigit() and int(channel) < n:
        return int(channel), names[int(channel)]
    if str(channel) in names:
        return names.index(str(channel)), str(channel)
    raise InputError(f"{image_zarr}: no channel {channel!r}; it has {n} ({', '.join(names)}): give an index from 0 "
                     "or one of these names")


@contextlib.contextmanager
def _label_store(path, shape, chunks, voxel_size, provenance, pyramid_levels):
    """A label image as an OME-Zarr store of its own, written atomically."""
    with atomic_path(path) as tmp:
        _, level0 = create_ome_zarr(tmp, shape, np.int32, chunks, voxel_size, name="labels", provenance=provenance)
        yield level0
        build_pyramid(tmp, n_levels=pyramid_levels, method="nearest")
