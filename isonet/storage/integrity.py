"""Damage in zarr chunks: per-chunk checksums when writing, reads that name the damaged chunk.

Every array isonet writes ends its codec chain with the Zarr v3 ``crc32c`` codec, so a chunk
changed on disk (truncated, a flipped bit) no longer decodes. Arrays isonet writes also store
every chunk, empty ones included (``write_empty_chunks``), so a chunk file that is absent is
damage too, not a region of fill value. :class:`CheckedArray` turns a failed read into one
:class:`~isonet.errors.InputError` line naming the store, the array and the chunk key.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from isonet.errors import InputError
from isonet.storage.voxels import _one_line

# runtime array config for every array isonet writes: a chunk of fill value is stored too, so an
# absent chunk file always means damage
WRITE_CONFIG = {"write_empty_chunks": True}


def checksummed_compressors(level: int = 3) -> list:
    """zstd at ``level``, then a crc32c checksum of the compressed chunk (Zarr v3 codecs).

    Examples
    --------
    >>> checksummed_compressors(5)
    [ZstdCodec(level=5, checksum=False), Crc32cCodec()]
    """
    return [zarr.codecs.ZstdCodec(level=level), zarr.codecs.Crc32cCodec()]


def has_checksums(array: zarr.Array) -> bool:
    """Whether every chunk of ``array`` carries a crc32c checksum."""
    return any(isinstance(c, zarr.codecs.Crc32cCodec) for c in getattr(array, "compressors", ()))


def storage_chunks(array: zarr.Array) -> tuple[int, ...]:
    """Shape of the unit stored under one key: the shard when sharded, else the chunk."""
    return tuple(getattr(array, "shards", None) or array.chunks)


def chunk_grid(array: zarr.Array) -> tuple[int, ...]:
    """Number of stored chunks along each axis."""
    return tuple(-(-s // c) for s, c in zip(array.shape, storage_chunks(array)))


def chunk_key(array: zarr.Array, coords: Sequence[int]) -> str:
    """The store key of the chunk at grid position ``coords`` (``c/0/1/2`` in Zarr v3, ``0.1.2`` in v2)."""
    return array.metadata.encode_chunk_key(tuple(int(c) for c in coords))


def chunk_region(array: zarr.Array, coords: Sequence[int]) -> tuple[slice, ...]:
    """The array region held by the chunk at ``coords``."""
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, storage_chunks(array), array.shape))


def _selection_bounds(selection: Any, shape: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis, the [start, stop) range a basic selection touches; the whole axis for anything else."""
    key = selection if isinstance(selection, tuple) else (selection,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    bounds = []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if k < 0 else int(k)
            bounds.append((i, i + 1))
        elif isinstance(k, slice):
            r = range(*k.indices(n))
            bounds.append((min(r[0], r[-1]), max(r[0], r[-1]) + 1) if len(r) else (0, 0))
        else:
            bounds.append((0, n))
    return bounds


def chunks_in_selection(array: zarr.Array, selection: Any = Ellipsis) -> Iterator[tuple[int, ...]]:
    """Grid positions of the stored chunks a selection reads from, in C order.

    Examples
    --------
    >>> a = zarr.create_array(zarr.storage.MemoryStore(), shape=(10, 10), dtype="u1", chunks=(4, 4))
    >>> list(chunks_in_selection(a, (5, slice(3, 9))))
    [(1, 0), (1, 1), (1, 2)]
    """
    chunks = storage_chunks(array)
    ranges = []
    for (lo, hi), c in zip(_selection_bounds(selection, array.shape), chunks):
        ranges.append(range(lo // c, (hi - 1) // c + 1) if hi > lo else range(0))
    return itertools.product(*ranges)


def describe_damage(err: BaseException) -> str:
    """A few words on why a chunk did not decode."""
    text = _one_line(err)
    if "checksum" in text.lower():
        return "damaged (checksum mismatch)"
    return f"damaged, does not decode ({text})"


def chunk_damage(array: zarr.Array, coords: Sequence[int]) -> str | None:
    """Read (decode, check) one stored chunk; None when it is sound, else why it is not."""
    try:
        array[chunk_region(array, coords)]
    except (IndexError, TypeError):
        raise
    except Exception as err:  # zarr and numcodecs raise ValueError, RuntimeError, ... per codec
        return describe_damage(err)
    return None


def chunk_file(store: str | os.PathLike, array: zarr.Array, coords: Sequence[int]) -> Path:
    """The file of a chunk in a store on the local filesystem."""
    return Path(store) / (array.path or "") / chunk_key(array, coords)


def rewrite_hint(store: str | os.PathLike, stage: str | None, list_hint: bool = True) -> str:
    """How to get a sound copy of a damaged store, knowing the stage that wrote it (or not)."""
    if stage:
        fix = f"run `isonet {stage}` again to rewrite {store}"
    else:
        fix = f"restore {store} from a copy or write it again"
    return fix + (f" (`isonet verify {store}` lists every damaged chunk)" if list_hint else "")


class CheckedArray:
    """A read-only zarr array whose failed reads name the damaged chunk in one line.

    Reading is the zarr array's own; only when a read fails are the stored chunks under the
    selection read one by one to find the first that does not decode or fails its checksum.
    For an array stored complete (``complete``), a chunk file absent under a selection is
    reported as well, where zarr would silently return fill value. Other attributes (``shape``,
    ``dtype``, ``chunks``, ``attrs``, ...) are the zarr array's.

    Parameters
    ----------
    array : zarr.Array
        The array, opened read-only.
    store : str or path
        Directory of the store (where chunk files are looked up), named in errors.
    stage : str, optional
        The isonet stage that wrote the store, named in the fix.
    complete : bool
        Every chunk is stored (isonet wrote the array with checksums and empty chunks).
    name : str or path, optional
        Named in errors instead of ``store`` (e.g. the original of a temporary copy).

    Raises
    ------
    InputError
        From indexing: ``"<store>: chunk c/0/1/2 of array '0' is damaged (checksum mismatch); <fix>"``.
    """

    def __init__(self, array: zarr.Array, store: str | os.PathLike, stage: str | None = None,
                 complete: bool = False, name: str | os.PathLike | None = None):
        self.array = array
        self.store = Path(store)
        self.name = Path(store) if name is None else Path(name)
        self.stage = stage
        self.complete = complete
        self._present: set[tuple[int, ...]] = set()

    def __getattr__(self, name: str) -> Any:
        if name == "array":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.array, name)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, selection: Any) -> Any:
        try:
            data = self.array[selection]
        except (IndexError, TypeError):
            raise
        except Exception as err:
            for coords in chunks_in_selection(self.array, selection):
                damage = chunk_damage(self.array, coords)
                if damage is not None:
                    raise InputError(self._message(coords, damage)) from err
            raise
        if self.complete:
            for coords in chunks_in_selection(self.array, selection):
                if coords not in self._present:
                    if not chunk_file(self.store, self.array, coords).exists():
                        raise InputError(self._message(coords, "missing (the store is incomplete)"))
                    self._present.add(coords)
        return data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype)

    def _message(self, coords: Sequence[int], damage: str) -> str:
        return (f"{self.name}: chunk {chunk_key(self.array, coords)} of array '{self.array.path or '/'}' is "
                f"{damage}; {rewrite_hint(self.name, self.stage)}")

    def __repr__(self) -> str:
        return f"<CheckedArray {self.store}/{self.array.path} shape={self.array.shape} dtype={self.array.dtype}>"
