"""Stage ``verify``: check a whole (OME-)Zarr store, metadata and every chunk, in bounded memory.

Checks, each finding one line in the result's ``problems``:

* the metadata: zarr metadata files parse; NGFF multiscales with axes naming z, y and x; every
  listed level present, with a scale per axis, the same dtype and number of dimensions as level
  0, and a shape that follows from the level above and the ratio of their scales;
* every chunk of every level: present (in arrays isonet wrote, which store every chunk), decodes,
  and matches its crc32c checksum. Each of ``workers`` threads reads one chunk at a time (a shard
  when sharded), so memory holds a few chunks whatever the size of the store.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zarr

from isonet.errors import InputError
from isonet.stages.common import Progress
from isonet.storage.integrity import (
    chunk_damage,
    chunk_file,
    chunk_grid,
    chunk_key,
    has_checksums,
    rewrite_hint,
)
from isonet.storage.omezarr import _metadata_file, _multiscale_of, _multiscale_voxel_size, _scale_of, writer_stage
from isonet.storage.voxels import _one_line

logger = logging.getLogger(__name__)


def _open_level(group: zarr.Group, path: Path, level: int, dataset: Any, problems: list[str]) -> zarr.Array | None:
    name = dataset.get("path") if isinstance(dataset, dict) else None
    if not isinstance(name, str) or not name:
        problems.append(f"{path}: multiscales dataset {level} has no path")
        return None
    try:
        node = group[name]
    except (KeyError, zarr.errors.NodeNotFoundError):
        problems.append(f"{path}: level {level} array '{name}' is listed in the multiscales metadata but missing")
        return None
    except Exception as err:  # unparsable zarr.json / .zarray
        metadata = _metadata_file(path / name) or path / name
        problems.append(f"{metadata}: zarr metadata of array '{name}' is damaged ({_one_line(err)})")
        return None
    if not isinstance(node, zarr.Array):
        problems.append(f"{path}: level {level} '{name}' is a group, not an array")
        return None
    return node


def _check_multiscales(group: zarr.Group, path: Path, problems: list[str]) -> list[zarr.Array]:
    """Arrays of the levels that could be opened; metadata problems appended to ``problems``."""
    multiscale = _multiscale_of(dict(group.attrs))
    if multiscale is None:
        problems.append(f"{path}: no OME-Zarr multiscales metadata in the group attributes")
        return []
    axes = multiscale.get("axes")
    names = [a.get("name") if isinstance(a, dict) else a for a in axes] if isinstance(axes, list) else []
    axes_ok = bool(names) and len(set(names)) == len(names) and {"z", "y", "x"} <= set(names)
    if not axes_ok:
        problems.append(f"{path}: multiscales axes {axes!r} do not name z, y and x once each")
    datasets = multiscale.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        problems.append(f"{path}: multiscales metadata lists no datasets (resolution levels)")
        return []
    arrays: list[zarr.Array] = []
    previous: tuple[zarr.Array, list[float]] | None = None
    for level, dataset in enumerate(datasets):
        array = _open_level(group, path, level, dataset, problems)
        if array is None:
            previous = None
            continue
        arrays.append(array)
        where = f"{path}: level {level} array '{array.path}'"
        scale = _scale_of(dataset.get("coordinateTransformations"))
        if names and array.ndim != len(names):
            problems.append(f"{where} has {array.ndim} dimensions, the multiscales axes {len(names)}")
        if scale is None or len(scale) != array.ndim or not all(math.isfinite(s) and s > 0 for s in scale):
            problems.append(f"{where}: no valid scale transformation (one positive value per axis)")
            previous = None
            continue
        if axes_ok and len(names) == array.ndim and _multiscale_voxel_size(multiscale, level) is None:
            problems.append(f"{where}: z, y, x scales are not in a known length unit")
        if arrays[0] is not array:
            if array.dtype != arrays[0].dtype:
                problems.append(f"{where} has dtype {array.dtype}, level 0 {arrays[0].dtype}")
            if array.ndim != arrays[0].ndim:
                problems.append(f"{where} has {array.ndim} dimensions, level 0 {arrays[0].ndim}")
        if previous is not None and previous[0].ndim == array.ndim:
            above, above_scale = previous
            # a downsampled axis holds size / ratio voxels, rounded up or down depending on the writer
            expected = [n * a / s for n, a, s in zip(above.shape, above_scale, scale)]
            if any(abs(n - e) >= 1 for n, e in zip(array.shape, expected)):
                problems.append(
                    f"{where} has shape {tuple(array.shape)}, but level {level - 1} {tuple(above.shape)} "
                    f"and the scales give {tuple(round(e, 2) for e in expected)}"
                )
        previous = (array, scale)
    return arrays


ABSENT = "absent"


def _chunk_state(store: Path, array: zarr.Array, coords: tuple[int, ...]) -> str | None:
    """None for a sound chunk, ``ABSENT`` when its file is not there, else what is wrong with it."""
    if not chunk_file(store, array, coords).is_file():
        return ABSENT
    return chunk_damage(array, coords)


def _in_order(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, window: int) -> Iterator:
    """``map(fn, items)`` on ``pool``, in order, with at most ``window`` items in flight."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            item, future = pending.popleft()
            yield item, future.result()
    while pending:
        item, future = pending.popleft()
        yield item, future.result()


def verify_store(path: str | os.PathLike, log: Callable[[str], None] | None = None,
                 on_problem: Callable[[str], None] | None = None, workers: int = 2) -> dict:
    """Check a whole zarr store: metadata, and every chunk present, decoding and matching its checksum.

    Parameters
    ----------
    path : str or path
        OME-Zarr image (NGFF 0.4 or 0.5) or plain zarr array (v2 or v3), on the local filesystem.
    log : callable, optional
        Receives progress lines (``"verify: chunks 120/480 (25 %), ..."``); default: ``logging``.
    on_problem : callable, optional
        Receives each problem line as soon as it is found.
    workers : int
        Chunks read and decoded at once (threads); memory holds about ``2 * workers`` chunks.

    Returns
    -------
    report : dict
        ``path``, ``arrays`` (number checked), ``chunks`` (number read), ``absent`` (chunks not
        stored in arrays that may omit them, read as fill value), ``unchecksummed`` (paths of
        arrays without per-chunk checksums), ``problems`` (one line each, naming the file, array
        and chunk key; empty when the store is sound) and ``summary`` (one line).

    Raises
    ------
    InputError
        When ``path`` does not exist.
    """
    say = log if log is not None else logger.info
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    problems: list[str] = []
    stage = None
    try:
        node = zarr.open(path, mode="r")
    except Exception as err:
        metadata = _metadata_file(path)
        if metadata is None:
            problems.append(f"{path}: not a zarr store (no zarr.json, .zgroup or .zarray)")
        else:
            problems.append(f"{metadata}: zarr metadata is damaged ({_one_line(err)})")
        node = None
    arrays: list[zarr.Array] = []
    isonet_written = False
    if isinstance(node, zarr.Array):
        arrays = [node]
    elif node is not None:
        isonet_written = isinstance(node.attrs.get("isonet"), dict)
        stage = writer_stage(dict(node.attrs))
        arrays = _check_multiscales(node, path, problems)
    if on_problem is not None:
        for line in problems:
            on_problem(line)

    total = sum(math.prod(chunk_grid(a)) for a in arrays)
    progress = Progress("verify: chunks", total, log=say)
    absent = 0
    unchecksummed = []
    for array in arrays:
        name = array.path or "/"
        checksums = has_checksums(array)
        if not checksums:
            unchecksummed.append(name)
            say(f"verify: {path}: array '{name}' has no per-chunk checksums; damage that still decodes "
                "cannot be detected (`isonet convert` writes a checksummed copy)")
        complete = isonet_written and checksums
        grid = itertools.product(*(range(n) for n in chunk_grid(array)))
        with ThreadPoolExecutor(max(1, int(workers))) as pool:
            for coords, state in _in_order(pool, lambda c: _chunk_state(path, array, c), grid, 2 * max(1, workers)):
                progress.advance()
                if state is None:
                    continue
                if state == ABSENT:
                    if not complete:  # a chunk of fill value that the writer did not store
                        absent += 1
                        continue
                    state = "missing"
                line = f"{path}: array '{name}' chunk {chunk_key(array, coords)}: {state}"
                problems.append(line)
                if on_problem is not None:
                    on_problem(line)

    if problems:
        summary = (f"{len(arrays)} arrays, {total} chunks checked, {len(problems)} problem(s); "
                   f"{rewrite_hint(path, stage, list_hint=False)}")
    else:
        summary = f"{len(arrays)} arrays, {total} chunks verified, no problems"
        if absent:
            summary += f" ({absent} chunks not stored, read as fill value)"
    return {"path": str(path), "arrays": len(arrays), "chunks": total, "absent": absent,
            "unchecksummed": unchecksummed, "problems": problems, "summary": summary}
