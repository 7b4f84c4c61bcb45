"""Stage ``stitch``: the final restored OME-Zarr with its multiscale pyramid, and a TIFF export."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from isonet.storage import atomic_path, build_pyramid, export_tiff, read_ome_zarr

logger = logging.getLogger(__name__)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stitch_stage(predicted_zarr, output_zarr, pyramid_levels: int = 3, tiff_path=None, method: str = "mean") -> dict:
    """Copy the predicted store (hard links: no data are rewritten), add pyramid levels, export TIFF.

    ``method`` is ``"mean"`` for intensities and ``"nearest"`` for label images.
    """
    output_zarr = Path(output_zarr)
    with atomic_path(output_zarr) as tmp:
        shutil.copytree(predicted_zarr, tmp, copy_function=_link_or_copy)
        shapes = build_pyramid(tmp, n_levels=pyramid_levels, method=method, log=lambda m: logger.info("stitch: %s", m),
                               name=predicted_zarr)  # the copy's chunks are the predicted store's
    array, voxel_size = read_ome_zarr(output_zarr)
    logger.info("stitch: %s levels %s, voxel size %s µm", output_zarr, shapes, voxel_size)
    if tiff_path:
        export_tiff(array, tiff_path, voxel_size)
        logger.info("stitch: exported %s", tiff_path)
    return {"levels": [list(s) for s in shapes], "voxel_size": list(voxel_size)}
