"""Stage ``segment``: nuclei labels of the restored volume (intermodes, fill holes, EDT watershed)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from isonet.errors import InputError
from isonet.segment import global_threshold, segment_nuclei, segmentation_summary
from isonet.stages.common import check_output_path
from isonet.storage import (
    atomic_path, build_pyramid, create_labels, create_ome_zarr, read_ome_zarr, read_planes, write_json,
)

logger = logging.getLogger(__name__)


def segment_stage(
    image_zarr, labels_zarr, summary_json=None, threshold: float | None = None, min_distance: int = 5,
    min_size: int = 64, pyramid_levels: int = 3,
) -> dict:
    """Segment the level-0 image of ``image_zarr`` into ``labels_zarr`` (OME-Zarr, int32).

    A ``labels_zarr`` of the form ``<image_zarr>/labels/<name>`` is written as NGFF labels of the
    image (:func:`isonet.storage.create_labels`: ``image-label`` metadata, listed in the image's
    ``labels`` group, as many levels as the image), which viewers overlay on the image; any other
    path is a store of its own with ``pyramid_levels`` levels.

    The whole volume is segmented in memory (a global threshold and a watershed whose basins may
    span any block); about 20 bytes per voxel.
    """
    in_image = Path(labels_zarr).parent.resolve() == (Path(image_zarr) / "labels").resolve()
    if not in_image:
        check_output_path(labels_zarr, [image_zarr], store=True)
    if summary_json:
        check_output_path(summary_json, [image_zarr, labels_zarr])
    array, voxel_size = read_ome_zarr(image_zarr)
    if voxel_size is None or array.ndim != 3:
        raise InputError(
            f"{image_zarr}: segment needs a 3D OME-Zarr image with voxel sizes, got shape {tuple(array.shape)}; "
            "give the output of `isonet stitch` or `isonet convert`"
        )
    volume = read_planes(array, 0, array.shape[0], image_zarr).astype(np.float32, copy=False)
    if not np.isfinite(volume).all():
        raise InputError(f"{image_zarr}: contains NaN or infinite values; fill or clip them before segmenting")
    try:
        thr, method = global_threshold(volume) if threshold is None else (float(threshold), "given")
        labels = segment_nuclei(volume, threshold=thr, min_distance=min_distance, min_size=min_size)
    except InputError as err:  # the pure functions name the setting, not the file
        raise InputError(f"{image_zarr}: {err}") from None
    summary = {"threshold": thr, "threshold_method": method, **segmentation_summary(labels)}
    provenance = {"stage": "segment", "source": str(image_zarr), **summary}
    if in_image:
        writer = create_labels(image_zarr, Path(labels_zarr).name, labels.shape, array.chunks, voxel_size,
                               provenance=provenance)
    else:
        writer = _label_store(labels_zarr, labels.shape, array.chunks, voxel_size, provenance, pyramid_levels)
    with writer as level0:
        level0[:] = labels
    if summary_json:
        write_json(summary_json, summary)
    logger.info("segment: %s threshold %.4g, %d objects -> %s", method, thr, summary["n_objects"], labels_zarr)
    return summary


@contextlib.contextmanager
def _label_store(path, shape, chunks, voxel_size, provenance, pyramid_levels):
    """A label image as an OME-Zarr store of its own, written atomically."""
    with atomic_path(path) as tmp:
        _, level0 = create_ome_zarr(tmp, shape, np.int32, chunks, voxel_size, name="labels", provenance=provenance)
        yield level0
        build_pyramid(tmp, n_levels=pyramid_levels, method="nearest")
