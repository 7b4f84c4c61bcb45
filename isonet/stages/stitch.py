"""Stage ``stitch``: the final restored OME-Zarr with its multiscale pyramid, and a TIFF export."""

from __future__ import annotations

import logging
import os
import shutil

import zarr

from isonet.provenance import package_versions
from isonet.stages.common import check_output_path
from isonet.storage import atomic_path, build_pyramid, export_tiff, read_ome_zarr

logger = logging.getLogger(__name__)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def stitch_stage(predicted_zarr, output_zarr, pyramid_levels: int = 3, tiff_path=None, method: str = "mean") -> dict:
    """Copy the predicted store (hard links: no data are rewritten), add pyramid levels, export TIFF.

    ``method`` is ``"mean"`` for intensities and ``"nearest"`` for label images. The ``isonet``
    attribute of the predicted store (its provenance) is kept, with this stage's settings added
    under ``isonet.stitch``.
    """
    output_zarr = check_output_path(output_zarr, [predicted_zarr], store=True)
    read_ome_zarr(predicted_zarr)  # an OME-Zarr image, before anything is copied
    if tiff_path:
        check_output_path(tiff_path, [predicted_zarr, output_zarr])
    with atomic_path(output_zarr) as tmp:
        shutil.copytree(predicted_zarr, tmp, copy_function=_link_or_copy)
        shapes = build_pyramid(tmp, n_levels=pyramid_levels, method=method, log=lambda m: logger.info("stitch: %s", m),
                               name=predicted_zarr)  # the copy's chunks are the predicted store's
        _add_stitch_provenance(tmp, predicted_zarr, pyramid_levels, method)
    array, voxel_size = read_ome_zarr(output_zarr)
    logger.info("stitch: %s levels %s, voxel size %s µm", output_zarr, shapes, voxel_size)
    if tiff_path:
        export_tiff(array, tiff_path, voxel_size)
        logger.info("stitch: exported %s", tiff_path)
    return {"levels": [list(s) for s in shapes], "voxel_size": list(voxel_size)}


def _add_stitch_provenance(store, predicted_zarr, pyramid_levels: int, method: str) -> None:
    group = zarr.open_group(store, mode="r+")
    record = dict(group.attrs.get("isonet") or {})
    record["stitch"] = {
        "settings": {"pyramid_levels": int(pyramid_levels), "method": method},
        "inputs": {"predicted": {"path": str(predicted_zarr)}},
        "versions": package_versions(),
    }
    group.update_attributes({"isonet": record})
