"""Stage ``export-ngff04``: an OME-Zarr image (and its labels) as NGFF 0.4 on Zarr v2, for MoBIE and Fiji."""

from __future__ import annotations

import logging
import os
import re

from isonet.errors import InputError
from isonet.provenance import package_versions
from isonet.stages.common import check_output_path
from isonet.storage.ngff04 import ZLIB_LEVEL, export_ngff04

logger = logging.getLogger(__name__)


def export_ngff04_stage(image_zarr: str | os.PathLike, output_zarr: str | os.PathLike,
                        labels_zarr: str | os.PathLike | None = None, labels_name: str = "nuclei",
                        compression_level: int = ZLIB_LEVEL) -> dict:
    """Export ``image_zarr`` (all levels, its own NGFF labels) and optionally a label image to NGFF 0.4 / Zarr v2.

    Parameters
    ----------
    image_zarr : str or path
        OME-Zarr image, e.g. ``restored.ome.zarr``.
    output_zarr : str or path
        Store to write, e.g. ``restored.ngff04.zarr``; replaced atomically.
    labels_zarr : str or path, optional
        Label image on the same grid (``labels.ome.zarr``), written as ``labels/<labels_name>``.
    labels_name : str
        Name of the label image inside the export.
    compression_level : int
        zlib level (1-9).

    Returns
    -------
    summary : dict
        ``output``.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", labels_name):
        raise InputError(f"labels name {labels_name!r} is not valid; use letters, digits, '_', '.' and '-'")
    inputs = [image_zarr] + ([labels_zarr] if labels_zarr else [])
    output_zarr = check_output_path(output_zarr, inputs, store=True)
    labels = [(labels_name, labels_zarr)] if labels_zarr else []
    provenance = {"export_ngff04": {"inputs": {"image": str(image_zarr),
                                               **({"labels": str(labels_zarr)} if labels_zarr else {})},
                                    "settings": {"compressor": "zlib", "level": int(compression_level)},
                                    "versions": package_versions()}}
    export_ngff04(image_zarr, output_zarr, labels, compression_level, provenance=provenance,
                  log=logger.info)
    logger.info("export-ngff04: %s -> %s (NGFF 0.4, Zarr v2, zlib)", image_zarr, output_zarr)
    return {"output": str(output_zarr)}
