"""Stage ``segment``: nuclei labels of the restored volume (intermodes, fill holes, EDT watershed)."""

from __future__ import annotations

import logging

import numpy as np

from isonet.segment import global_threshold, segment_nuclei, segmentation_summary
from isonet.storage import atomic_path, build_pyramid, create_ome_zarr, read_ome_zarr, write_json

logger = logging.getLogger(__name__)


def segment_stage(
    image_zarr, labels_zarr, summary_json=None, threshold: float | None = None, min_distance: int = 5,
    min_size: int = 64, pyramid_levels: int = 3,
) -> dict:
    """Segment the level-0 image of ``image_zarr`` into ``labels_zarr`` (OME-Zarr, int32).

    The whole volume is segmented in memory (a global threshold and a watershed whose basins may
    span any block); about 20 bytes per voxel.
    """
    array, voxel_size = read_ome_zarr(image_zarr)
    volume = np.asarray(array[:], dtype=np.float32)
    thr, method = global_threshold(volume) if threshold is None else (float(threshold), "given")
    labels = segment_nuclei(volume, threshold=thr, min_distance=min_distance, min_size=min_size)
    summary = {"threshold": thr, "threshold_method": method, **segmentation_summary(labels)}
    with atomic_path(labels_zarr) as tmp:
        _, level0 = create_ome_zarr(tmp, labels.shape, np.int32, array.chunks, voxel_size, name="labels",
                                    provenance={"stage": "segment", "source": str(image_zarr), **summary})
        level0[:] = labels
        build_pyramid(tmp, n_levels=pyramid_levels, method="nearest")
    if summary_json:
        write_json(summary_json, summary)
    logger.info("segment: %s threshold %.4g, %d objects -> %s", method, thr, summary["n_objects"], labels_zarr)
    return summary
