"""Provenance: what produced an output — settings, package versions, content hashes of the inputs.

Stages store :func:`provenance_record` in their outputs' metadata (the model file's JSON, the
``isonet`` attribute of an OME-Zarr group, ``metrics.json``). Hashes are streamed: a file in
1 MiB blocks, an array block by block in bounded memory, so a terabyte input costs one read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from collections.abc import Mapping

import numpy as np

#: Packages whose versions can change a result.
PACKAGES = ("isonet", "torch", "numpy", "scipy", "zarr", "numcodecs", "safetensors", "dask", "tifffile")

#: Bytes of an array that :func:`array_sha256` holds at once (at least one chunk row).
HASH_BLOCK_BYTES = 64 * 2**20


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages in :data:`PACKAGES` (``"absent"`` when not installed)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def array_sha256(array, max_bytes: int = HASH_BLOCK_BYTES) -> str:
    """Content hash of a 3D array, independent of its storage (chunks, compression, format).

    The hash is the SHA-256 of a header (``dtype`` in little-endian form and shape) followed by
    the SHA-256 digests of every row ``array[z, y, :]`` in C order. Rows let the array be read
    in blocks of whole chunks (``chunk_z × chunk_y × n·chunk_x`` voxels, at most about
    ``max_bytes``) while giving the same hash for any chunking: each chunk is decoded once and
    memory stays bounded however large the array.

    Parameters
    ----------
    array : array-like (Z, Y, X)
        numpy or zarr array (anything with ``shape``, ``dtype`` and slicing; ``chunks`` is used
        when present).
    max_bytes : int
        Approximate upper bound on the bytes read at once.

    Returns
    -------
    str
        64 hex digits.

    Examples
    --------
    >>> a = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    >>> array_sha256(a) == array_sha256(a.astype(">u2")) == array_sha256(a, max_bytes=1)
    True
    """
    shape = tuple(int(s) for s in array.shape)
    if len(shape) != 3:
        raise ValueError(f"array_sha256 needs a 3D array, got shape {shape}")
    dtype = np.dtype(array.dtype).newbyteorder("<")
    outer = hashlib.sha256(f"{dtype.str} {shape}\n".encode())
    Z, Y, X = shape
    cz, cy, cx = (int(c) for c in getattr(array, "chunks", None) or (1, Y, X))
    bx = max(cx, max_bytes // max(1, cz * cy * dtype.itemsize) // cx * cx)
    for z0 in range(0, Z, cz):
        z1 = min(z0 + cz, Z)
        digests = np.empty((z1 - z0, Y, 32), np.uint8)
        for y0 in range(0, Y, cy):
            y1 = min(y0 + cy, Y)
            rows = [[hashlib.sha256() for _ in range(y0, y1)] for _ in range(z0, z1)]
            for x0 in range(0, X, bx):
                block = np.ascontiguousarray(array[z0:z1, y0:y1, x0 : x0 + bx], dtype=dtype)
                for i, plane in enumerate(block):
                    for j, row in enumerate(plane):
                        rows[i][j].update(row.data)
            for i, plane_rows in enumerate(rows):
                for j, h in enumerate(plane_rows):
                    digests[i, y0 + j] = np.frombuffer(h.digest(), np.uint8)
        outer.update(digests.tobytes())
    return outer.hexdigest()


def provenance_record(stage: str, settings: Mapping, inputs: Mapping) -> dict:
    """The record a stage stores with its output.

    Parameters
    ----------
    stage : str
        The stage that wrote the output.
    settings : mapping
        Every setting that can change the output (JSON-serializable).
    inputs : mapping
        Per input name, a dict with at least ``path`` and a content hash (``sha256``).

    Returns
    -------
    dict
        ``{"stage", "settings", "inputs", "versions"}``.
    """
    return {"stage": stage, "settings": dict(settings), "inputs": dict(inputs), "versions": package_versions()}
