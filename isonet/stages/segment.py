"""Stage ``segment``: nuclei labels of the restored volume (intermodes, fill holes, EDT watershed), block by block."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from isonet.errors import InputError
from isonet.segment import summary_of_sizes
from isonet.segment_blocks import DEFAULT_BLOCK, DEFAULT_HALO, segment_nuclei_blocks
from isonet.stages.common import check_output_path
from isonet.stages.views import PlanesView
from isonet.storage import (
    WRITE_CONFIG,
    atomic_path,
    build_pyramid,
    create_labels,
    create_ome_zarr,
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
                    min_distance: int = 5, min_size: int = 64, log=None):
    """Segment ``volume`` block by block into ``level0`` of a new OME-Zarr image.

    ``level0`` is the array :func:`isonet.storage.create_ome_zarr` (or
    :func:`isonet.storage.create_labels`) gave, opened to store every chunk, empty ones included.
    Provisional ids live in a temporary int64 array ``scratch`` next to it, removed at the end.
    Returns the result of :func:`isonet.segment_blocks.segment_nuclei_blocks`.
    """
    group = zarr.open_group(level0.store, mode="r+")
    scratch = group.create_array("scratch", shape=tuple(volume.shape), dtype=np.int64, chunks=tuple(level0.chunks),
                                 compressors=checksummed_compressors(1), fill_value=0, config=WRITE_CONFIG)
    try:
        return segment_nuclei_blocks(volume, level0, scratch, threshold=threshold,
                                     block=whole_chunks(block, level0.chunks), halo=halo,
                                     min_distance=min_distance, min_size=min_size, log=log)
    finally:
        del group["scratch"]


def segment_stage(
    image_zarr, labels_zarr, summary_json=None, threshold: float | None = None, min_distance: int = 5,
    min_size: int = 64, pyramid_levels: int = 3, block: Sequence[int] = DEFAULT_BLOCK, halo: int = DEFAULT_HALO,
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
    provenance = {"stage": "segment", "source": str(image_zarr), "block": list(whole_chunks(block, array.chunks)),
                  "halo": int(halo)}
    if in_image:
        writer = create_labels(image_zarr, Path(labels_zarr).name, array.shape, array.chunks, voxel_size,
                               provenance=provenance)
    else:
        writer = _label_store(labels_zarr, array.shape, array.chunks, voxel_size, provenance, pyramid_levels)
    with writer as level0:
        try:
            result = segment_to_zarr(PlanesView(array, np.float32), level0, threshold, block, halo,
                                     min_distance, min_size, log=logger.warning)
        except InputError as err:  # the pure functions name the setting, not the file
            if str(err).startswith((str(image_zarr), str(Path(image_zarr)))):
                raise
            raise InputError(f"{image_zarr}: {err}") from None
        summary = {"threshold": result["threshold"], "threshold_method": result["threshold_method"],
                   **summary_of_sizes(result["sizes"])}
        zarr.open_group(level0.store, mode="r+").update_attributes({"isonet": {**provenance, **summary}})
    if summary_json:
        write_json(summary_json, summary)
    logger.info("segment: %s threshold %.4g, %d objects -> %s", summary["threshold_method"], summary["threshold"],
                summary["n_objects"], labels_zarr)
    return summary


@contextlib.contextmanager
def _label_store(path, shape, chunks, voxel_size, provenance, pyramid_levels):
    """A label image as an OME-Zarr store of its own, written atomically."""
    with atomic_path(path) as tmp:
        _, level0 = create_ome_zarr(tmp, shape, np.int32, chunks, voxel_size, name="labels", provenance=provenance)
        yield level0
        build_pyramid(tmp, n_levels=pyramid_levels, method="nearest")
