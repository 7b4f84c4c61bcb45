"""OME-Zarr NGFF 0.4 on Zarr v2: the export for viewers that cannot open Zarr v3 yet (MoBIE, older Fiji).

The export copies every resolution level of an NGFF 0.5 image (and of label images, when
given) chunk by chunk, so memory holds one chunk (one shard of a sharded source) at a time.

Compression is zlib (numcodecs ``Zlib``): the Java Zarr reader behind Fiji's N5 plugins, MoBIE and
BigDataViewer (saalfeldlab/n5-zarr) reads Blosc, GZip, Zlib and BZ2, but its Blosc needs the native
``libblosc``, which is missing on many machines (mobie-viewer-fiji issue #198:
``UnsatisfiedLinkError: Unable to load library 'blosc'``); zlib is in the Java runtime itself, and
neuroglancer reads it too. A zlib stream ends with an Adler-32 checksum of the chunk's bytes, which
every zlib decoder checks, so a damaged chunk fails to decode instead of reading as wrong values.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numcodecs
import zarr

from isonet.errors import InputError
from isonet.storage.atomic import atomic_path
from isonet.storage.integrity import WRITE_CONFIG, storage_chunks
from isonet.storage.omezarr import _multiscale_of, read_ome_zarr

NGFF04_VERSION = "0.4"
ZLIB_LEVEL = 1  # noisy float32 chunks: level 1 compresses as well as 5 or 9 (1.22x) and is 2x faster


def _multiscale_04(multiscale: dict) -> dict:
    """An NGFF 0.5 multiscales entry as NGFF 0.4 (same fields, plus ``version``)."""
    keep = ("name", "axes", "datasets", "coordinateTransformations", "type", "metadata")
    return {"version": NGFF04_VERSION, **{k: multiscale[k] for k in keep if k in multiscale}}


def _copy_levels(source: str | os.PathLike, group: zarr.Group, compression_level: int,
                 log: Callable[[str], None]) -> tuple[dict, dict]:
    """Copy every level of the OME-Zarr image ``source`` into the Zarr v2 ``group``, chunk by chunk.

    Returns the 0.4 multiscales entry and the source group's attributes.
    """
    source = Path(source)
    read_ome_zarr(source)  # validates the metadata and level 0
    attrs = dict(zarr.open_group(source, mode="r").attrs)
    multiscale = _multiscale_of(attrs)
    for level, dataset in enumerate(multiscale["datasets"]):
        src = read_ome_zarr(source, level)[0]  # reads name the store and chunk of any damage
        dst = group.create_array(
            dataset["path"], shape=src.shape, dtype=src.dtype.newbyteorder("<"), chunks=src.chunks,
            compressors=numcodecs.Zlib(level=compression_level), filters=None, fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"}, config=WRITE_CONFIG,
        )
        # whole stored units (shards, else chunks) of the source: each covers whole chunks of dst
        step = storage_chunks(src)
        for corner in itertools.product(*(range(0, s, c) for s, c in zip(src.shape, step))):
            block = tuple(slice(o, min(o + c, s)) for o, c, s in zip(corner, step, src.shape))
            dst[block] = src[block]
        log(f"export-ngff04: {source.name} level {level} {tuple(src.shape)}")
    return _multiscale_04(multiscale), attrs


def image_labels(image: str | os.PathLike) -> list[tuple[str, Path]]:
    """The NGFF label images an OME-Zarr image holds (``<image>/labels/<name>``), as (name, path)."""
    path = Path(image) / "labels"
    if not (path / "zarr.json").is_file() and not (path / ".zattrs").is_file():
        return []
    attrs = dict(zarr.open_group(path, mode="r").attrs)
    names = (attrs.get("ome") or attrs).get("labels") or []
    return [(name, path / name) for name in names if isinstance(name, str) and (path / name).is_dir()]


def export_ngff04(image: str | os.PathLike, output: str | os.PathLike,
                  labels: Sequence[tuple[str, str | os.PathLike]] = (), compression_level: int = ZLIB_LEVEL,
                  provenance: dict | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Write an OME-Zarr image (NGFF 0.4 or 0.5) as NGFF 0.4 on Zarr v2, all levels, atomically.

    Parameters
    ----------
    image : str or path
        OME-Zarr image (e.g. ``restored.ome.zarr``); read-only.
    output : str or path
        Zarr v2 store to write (replaced atomically when it exists).
    labels : sequence of (name, path)
        Label images (OME-Zarr, same grid as ``image``) written under ``output/labels/<name>``
        with NGFF ``image-label`` metadata, listed in ``output/labels``' ``labels`` attribute,
        besides the NGFF labels the image itself holds (:func:`image_labels`), which are always
        exported.
    compression_level : int
        zlib level (1-9).
    provenance : dict, optional
        Stored under the group attribute ``"isonet"``, after the source's own record.
    log : callable, optional
        Receives one line per level copied.

    Returns
    -------
    output : Path

    Raises
    ------
    InputError
        A source is not an OME-Zarr image, a label image's level-0 shape differs from the
        image's, or a damaged chunk is read.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from isonet.storage import create_ome_zarr
    >>> d = Path(tempfile.mkdtemp())
    >>> _, a = create_ome_zarr(d / "a.zarr", (2, 4, 4), "uint16", (1, 4, 4), (1.0, 0.5, 0.5))
    >>> a[:] = 7
    >>> out = export_ngff04(d / "a.zarr", d / "a.ngff04.zarr")
    >>> g = zarr.open_group(out, mode="r")
    >>> g.metadata.zarr_format, g.attrs["multiscales"][0]["version"], int(g["0"][1, 2, 3])
    (2, '0.4', 7)
    """
    say = log if log is not None else (lambda message: None)
    if not 1 <= int(compression_level) <= 9:
        raise ValueError(f"compression_level must be a zlib level 1-9, got {compression_level}")
    output = Path(output)
    image_shape = read_ome_zarr(image)[0].shape
    labels = image_labels(image) + [(name, Path(path)) for name, path in labels]
    names = [name for name, _ in labels]
    if len(set(names)) < len(names):
        raise InputError(f"{image}: label name(s) {sorted({n for n in names if names.count(n) > 1})} given twice "
                         "(the image holds labels of that name); choose another name")
    for name, path in labels:
        shape = read_ome_zarr(path)[0].shape
        if shape != image_shape:
            raise InputError(
                f"{path}: label image has shape {shape}, the image {image} has {image_shape}; "
                "give the labels segmented from this image"
            )
    with atomic_path(output) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=2)
        multiscale, attrs = _copy_levels(image, group, compression_level, say)
        record = dict(attrs.get("isonet") or {})
        if provenance:
            record.update(provenance)
        group.update_attributes({"multiscales": [multiscale], "isonet": record})
        if labels:
            labels_group = group.create_group("labels")
            for name, path in labels:
                label_group = labels_group.create_group(name)
                label_multiscale, _ = _copy_levels(path, label_group, compression_level, say)
                label_multiscale["name"] = name
                label_group.update_attributes({
                    "multiscales": [label_multiscale],
                    "image-label": {"version": NGFF04_VERSION, "source": {"image": "../../"}},
                })
            labels_group.update_attributes({"labels": [name for name, _ in labels]})
    return output

