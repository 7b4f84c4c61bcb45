"""Nuclei segmentation block by block, in bounded memory, equal to the whole-volume segmentation.

:func:`segment_nuclei_blocks` gives the labels :func:`isonet.segment.segment_nuclei` gives for
the whole volume, voxel for voxel, while holding only one block with its halo (plus the objects
cut by that window, see below). Why it is exact:

- **Threshold.** The global threshold comes from a histogram accumulated over the blocks on the
  volume's range (:func:`isonet.segment.streamed_threshold`), the very code the in-memory
  function runs on one piece: the same value to the bit.
- **Blobs.** The whole-volume method works blob by blob: each connected foreground blob
  (6-connected) is hole-filled, distance-transformed and split by a watershed inside its box
  (:func:`isonet.segment.blob_box`, its bounding box grown by 2 voxels). Nothing outside that box
  changes its result. A block's *window* is the block grown by ``halo`` voxels on every side.
  A blob of the window's labelling whose box lies inside the window touches no face of the
  window that is not a face of the volume, so it is a whole blob of the volume, with the same
  voxels and the same box: its split is the whole-volume split. A blob whose extent (per axis)
  is at most ``halo - 4`` and whose box meets the block lies inside the window, so with such a
  halo every blob that can write into the block is split exactly.
- **Larger blobs** (extent above ``halo - 4``) are still exact: the window is grown around such
  a blob until its box fits, and memory then follows that blob (a message says so). The one case
  this does not cover is a hollow blob whose filled cavity holds the whole window of a block
  with none of the blob's voxels in that window; keep ``halo`` above the largest object.
- **Blobs too large for** ``max_window`` (their box grown by ``halo`` holds more voxels: merged
  nuclei of a blurred or crowded volume, which can span the whole volume) are not gathered: each
  block splits the part of such a blob inside its fixed window (:func:`isonet.segment.split_seeded`)
  and names every object by the voxel of its seed. The decision depends only on the blob's box,
  so every block makes the same one. This is where block-wise departs from whole-volume: hole
  filling and the distance transform are exact where the blob's background lies within the
  window, i.e. for objects up to ``halo`` across, and an object whose seed lies in the windows of
  two blocks gets the same name in both. Memory stays bounded by ``max_window`` whatever the data.
- **Overlaps.** Filled holes may overlap a blob enclosed in them; the whole-volume method writes
  blobs in the order of their first voxel (C order), later ones over earlier ones. Each block
  writes the blobs whose box meets it in the same order, so every voxel ends with the same blob.
- **Labels.** Every object gets a provisional id ``first * R + j``: ``first`` the linear index of
  its blob's first voxel, ``j >= 1`` its label within the blob's watershed (``R`` a power of two
  above any such label). Ids are the same in every block that sees the object, so an object cut by a block
  border has one id, and two objects never share one. Ordering ids orders objects as the
  whole-volume method numbers them; sizes summed over block cores are the whole-volume sizes,
  so dropping objects below ``min_size`` and numbering the rest ``1..N`` in id order gives the
  whole-volume labels. The ids are kept in a scratch array (int64) between the two passes.

Memory: one window of the volume (its dtype), its int32 blob labelling and boolean foreground,
one int64 block, the splits of the blobs cut by the borders of blocks still to come, kept
within ``SPLIT_CACHE_BYTES`` (the blocks are visited in C order, so these lie along one z-border
of blocks: a few bytes per voxel of those blobs, which grows with the lateral size; past the
budget the splits needed furthest ahead are dropped and computed again when their block comes)
and a table of the object ids and sizes (16 bytes an object) -- set by ``block``, ``halo`` and
the budget, not by the volume. Time: each voxel is read and labelled about
``prod(1 + 2 halo / block)`` times (windows overlap), and each blob is split once, or once per
block it meets when its split was dropped; larger blocks cost memory and save time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from isonet.errors import InputError
from isonet.segment import blob_box, check_segment_args, split_component, split_seeded, streamed_threshold

#: default block (z, y, x) in voxels: one output chunk of the restored volume
DEFAULT_BLOCK = (64, 128, 128)
#: default halo in voxels: a nucleus of up to 36 voxels across (2 x the largest phantom
#: semi-axis of 16, plus the 4 voxels of the split box) never needs a grown window
DEFAULT_HALO = 40
#: bytes of blob splits kept for later blocks; past it, those needed furthest ahead are dropped
#: and split again where their block comes (the same split: the blob and its box are the same)
SPLIT_CACHE_BYTES = 16 << 20
#: most voxels read at once to gather a blob whole (about 200^3; 32 MiB per float32 array); larger
#: blobs are split block by block in the fixed window
DEFAULT_MAX_WINDOW = 1 << 23


def block_slices(shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The blocks tiling a volume, in C order (edge blocks are smaller).

    Examples
    --------
    >>> [tuple((s.start, s.stop) for s in b) for b in block_slices((3, 4), (2, 4))]
    [((0, 2), (0, 4)), ((2, 3), (0, 4))]
    """
    ranges = [range(0, n, b) for n, b in zip(shape, block)]
    for starts in itertools.product(*ranges):
        yield tuple(slice(s, min(s + b, n)) for s, b, n in zip(starts, block, shape))


def _grow(region: Sequence[slice], by: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(r.start - by, 0), min(r.stop + by, n)) for r, n in zip(region, shape))


def _inside(inner: Sequence[slice], outer: Sequence[slice]) -> bool:
    return all(o.start <= i.start and i.stop <= o.stop for i, o in zip(inner, outer))


def _meet(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...] | None:
    out = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return out if all(s.start < s.stop for s in out) else None


def _shift(region: Sequence[slice], origin: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, origin))


def _read(volume: Any, region: Sequence[slice]) -> np.ndarray:
    data = np.asarray(volume[tuple(region)])
    if data.dtype == bool:
        data = data.view(np.uint8)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        where = ", ".join(f"{r.start}:{r.stop}" for r in region)
        raise InputError(f"segment: the volume holds NaN or infinite values in [{where}]; fill or clip them first")
    return data


def _first_voxel(comps: np.ndarray, i: int, bbox: Sequence[slice], origin: Sequence[int],
                 shape: Sequence[int]) -> int:
    """Linear index (in ``shape``) of the first voxel in C order of component ``i``."""
    inside = comps[tuple(bbox)] == i
    local = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return int(np.ravel_multi_index(tuple(int(c) + b.start + o for c, b, o in zip(local, bbox, origin)), shape))


def _fits(region: Sequence[slice], max_window: int | None) -> bool:
    return max_window is None or int(np.prod([r.stop - r.start for r in region], dtype=np.int64)) <= max_window


def _whole_blob(volume: Any, threshold: float, voxel: Sequence[int], start: Sequence[slice], halo: int,
                shape: Sequence[int], max_window: int | None = None
                ) -> tuple[int, np.ndarray, int, tuple[slice, ...]] | None:
    """The blob of the volume holding ``voxel``, read in a window grown until its box fits.

    Returns its first voxel (linear index), the component labelling over its box, its label
    there and its box (volume coordinates); None as soon as it is clear that the blob's box grown
    by ``halo`` holds more than ``max_window`` voxels (every window read is a part of that).
    """
    region = _grow(start, halo, shape)
    while True:
        if not _fits(region, max_window):
            return None
        comps, _ = ndi.label(_read(volume, region) > threshold)
        origin = [r.start for r in region]
        i = int(comps[tuple(v - o for v, o in zip(voxel, origin))])
        bbox = ndi.find_objects(comps, max_label=i)[i - 1]
        box = blob_box(bbox, shape, origin)
        if _inside(box, region):
            if not _fits(_grow(box, halo, shape), max_window):
                return None
            return _first_voxel(comps, i, bbox, origin, shape), comps[_shift(box, origin)], i, box
        region = _grow(box, halo, shape)


def _nbytes(result: tuple | None) -> int:
    """Bytes held by a split (:func:`isonet.segment.split_component`'s result)."""
    return 0 if result is None else result[0].nbytes + result[1].nbytes + 64


def _merge_sizes(ids: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    sizes = np.bincount(inverse.ravel(), weights=np.concatenate(counts), minlength=len(keys))
    return keys, sizes.astype(np.int64)


def segment_nuclei_blocks(
    volume: Any,
    out: Any,
    scratch: Any,
    threshold: float | None = None,
    block: Sequence[int] = DEFAULT_BLOCK,
    halo: int = DEFAULT_HALO,
    min_distance: int = 5,
    min_size: int = 64,
    sampling: Sequence[float] | None = None,
    log: Callable[[str], None] | None = None,
    split_budget: int = SPLIT_CACHE_BYTES,
    max_window: int | None = DEFAULT_MAX_WINDOW,
    rule: str = "intermodes",
) -> dict:
    """:func:`isonet.segment.segment_nuclei` of a volume read and written block by block.

    The labels written to ``out`` equal those of the whole-volume function on ``volume``, voxel
    for voxel, for every blob whose box grown by ``halo`` holds at most ``max_window`` voxels
    (see the module notes for why, for the one exception and for larger blobs), while memory
    follows ``block``, ``halo`` and ``max_window``, not the volume.

    Parameters
    ----------
    volume : array-like, shape (z, y, x)
        Intensities with ``shape``, ``dtype`` and slicing that reads only the slice (a NumPy
        array, a zarr array).
    out : writable array-like, int32, shape of ``volume``
        Receives the labels (0 background, ``1..N`` nuclei), one block at a time.
    scratch : writable array-like, int64, shape of ``volume``
        Holds provisional object ids between the two passes (e.g. a temporary zarr array).
    threshold : float, optional
        Global threshold; default Intermodes of the whole volume (Otsu where the histogram is not
        bimodal), accumulated over the blocks.
    block : sequence of 3 int
        Block shape; make it a multiple of the chunks of ``out`` and ``scratch``.
    halo : int
        Voxels read around each block; at least the largest object's extent plus 4 for windows
        of a fixed size (larger objects are segmented in a grown window).
    min_distance, min_size, sampling
        As for :func:`isonet.segment.segment_nuclei`.
    log : callable, optional
        Receives a line for each object larger than the halo allows.
    split_budget : int
        Bytes of blob splits kept for later blocks (``SPLIT_CACHE_BYTES``); the labels do not
        depend on it, a smaller budget recomputes more splits.
    max_window : int or None
        Most voxels read to gather one blob whole (``DEFAULT_MAX_WINDOW``); larger blobs are split
        part by part in each block's window, their objects named by their seeds. None: no limit
        (every blob exact, memory follows the largest blob).
    rule : {"intermodes", "otsu"}
        Threshold rule where ``threshold`` is not given; Intermodes falls back to Otsu where the
        histogram has no two modes (the result's ``threshold_method`` says which was used).

    Returns
    -------
    result : dict
        ``threshold`` (float), ``threshold_method`` (``"intermodes"``, ``"otsu"`` or
        ``"given"``), ``sizes`` (int64 array, the voxel count of labels ``1..N``) and
        ``grown`` (how many times a window was grown around a large blob), ``local`` (how many
        parts of blobs above ``max_window`` were split in a block's window) and ``split_bytes``
        (the most bytes of splits kept for later blocks at once).

    Examples
    --------
    >>> from isonet.segment import segment_nuclei
    >>> z, y, x = np.ogrid[:32, :32, :48]
    >>> ball = lambda c, r: (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
    >>> vol = (ball((16, 16, 12), 8) | ball((16, 16, 25), 8)).astype(np.float32)
    >>> out, scratch = np.zeros(vol.shape, np.int32), np.zeros(vol.shape, np.int64)
    >>> r = segment_nuclei_blocks(vol, out, scratch, threshold=0.5, block=(16, 16, 16), halo=8)
    >>> bool((out == segment_nuclei(vol, threshold=0.5)).all()), len(r["sizes"])
    (True, 2)
    """
    sampling = check_segment_args(volume, min_distance, min_size, sampling)
    shape = tuple(int(s) for s in volume.shape)
    block = tuple(int(b) for b in block)
    if len(block) != 3 or min(block) < 1:
        raise InputError(f"segment: block must be 3 positive sizes (z, y, x) in voxels, got {block}")
    if int(halo) < 0:
        raise InputError(f"segment: halo must be >= 0 voxels, got {halo}")
    halo = int(halo)
    if max_window is not None and int(max_window) < 1:
        raise InputError(f"segment: max_window must be a positive number of voxels, got {max_window}")
    for target in (out, scratch):
        if tuple(target.shape) != shape:
            raise ValueError(f"output arrays must have the volume's shape {shape}, got {tuple(target.shape)}")
    cores = list(block_slices(shape, block))
    if threshold is None:
        threshold, method = streamed_threshold(lambda: (_read(volume, c) for c in cores), rule,
                                               "otsu" if rule == "intermodes" else None)
    elif not np.isfinite(threshold):
        raise InputError(f"segment: threshold must be finite, got {threshold}")
    else:
        threshold, method = float(threshold), "given"
    # ids first * rank_base + j (1 <= j < rank_base) stay below 2**63
    rank_bits = 62 - int(np.prod(shape, dtype=np.int64)).bit_length()
    if rank_bits < 8:
        raise InputError(f"segment: volume of shape {shape} is too large for 64-bit object ids")
    rank_base = 1 << rank_bits

    ids: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    grown = local = 0
    grid = tuple(-(-n // b) for n, b in zip(shape, block))
    # splits of blobs that later blocks meet too, until the last of them (C order) is done,
    # within split_budget bytes (a dropped split is computed again by the next block that needs it)
    splits: dict[int, tuple[tuple | None, int]] = {}
    cached = peak_cached = 0
    for index, core in enumerate(cores):
        window = _grow(core, halo, shape)
        origin = [w.start for w in window]
        comps, _ = ndi.label(_read(volume, window) > threshold)
        blobs: dict[int, tuple[np.ndarray, int, tuple[slice, ...]]] = {}
        parts: list[tuple[int, tuple[slice, ...]]] = []  # (label, box in the window) of blobs above max_window
        for i, bbox in enumerate(ndi.find_objects(comps), start=1):
            if bbox is None:
                continue
            box = blob_box(bbox, shape, origin)
            if _meet(box, core) is None:
                continue
            if _inside(box, window):
                if _fits(_grow(box, halo, shape), max_window):
                    first = _first_voxel(comps, i, bbox, origin, shape)
                    blobs[first] = (comps[_shift(box, origin)], i, box)
                else:
                    parts.append((i, blob_box(bbox, comps.shape)))
                continue
            voxel = np.unravel_index(_first_voxel(comps, i, bbox, origin, shape), shape)
            found = _whole_blob(volume, threshold, voxel, box, halo, shape, max_window)
            if found is None:
                parts.append((i, blob_box(bbox, comps.shape)))
                continue
            first, comp, j, box = found
            grown += 1
            if log is not None:
                extent = "x".join(str(b.stop - b.start - 4) for b in box)
                log(f"segment: a blob of extent {extent} voxels exceeds halo {halo} - 4; "
                    "segmented in a window grown around it (raise segment.halo to keep memory flat)")
            blobs[first] = (comp, j, box)
        provisional = np.zeros(tuple(c.stop - c.start for c in core), np.int64)
        for i, part_box in parts:  # each meets the core: its box does, and the core lies inside the window
            local += 1
            split, write, seeds = split_seeded(comps[part_box], i, min_distance, sampling)
            corner = [b.start + o for b, o in zip(part_box, origin)]
            names = np.ravel_multi_index(tuple((seeds + corner).T), shape).astype(np.int64) * rank_base
            part = _meet(_shift(part_box, [-o for o in origin]), core)
            in_box = _shift(part, corner)
            mask = write[in_box]
            provisional[_shift(part, [c.start for c in core])][mask] = names[split[in_box][mask] - 1]
        for first in sorted(blobs):
            comp, i, box = blobs[first]
            if first in splits:
                result = splits[first][0]
            else:
                result = split_component(comp, i, min_distance, min_size, sampling)
                last = int(np.ravel_multi_index(tuple((b.stop - 1) // k for b, k in zip(box, block)), grid))
                if last > index:
                    splits[first] = (result, last)
                    cached += _nbytes(result)
                    while cached > split_budget:
                        furthest = max(splits, key=lambda f: splits[f][1])
                        cached -= _nbytes(splits.pop(furthest)[0])
                    peak_cached = max(peak_cached, cached)
            if result is None:
                continue
            split, write, k = result
            if k >= rank_base:
                raise InputError(f"segment: one blob split into {k} objects, more than ids allow; raise min_distance")
            part = _meet(box, core)
            in_box = _shift(part, [b.start for b in box])
            mask = write[in_box]
            provisional[_shift(part, [c.start for c in core])][mask] = (
                first * rank_base + split[in_box][mask].astype(np.int64)
            )
        scratch[core] = provisional
        k, c = np.unique(provisional[provisional > 0], return_counts=True)
        ids.append(k)
        counts.append(c)
        if len(ids) > 256:
            merged = _merge_sizes(ids, counts)
            ids, counts = [merged[0]], [merged[1]]
        splits = {first: kept for first, kept in splits.items() if kept[1] > index}
        cached = sum(_nbytes(result) for result, _ in splits.values())
        del comps, blobs, provisional

    keys, sizes = _merge_sizes(ids, counts)
    keep = sizes >= int(min_size)
    kept = keys[keep]
    for core in cores:
        provisional = np.asarray(scratch[core])
        rank = np.searchsorted(kept, provisional)
        found = (provisional > 0) & (rank < len(kept))
        found[found] = kept[rank[found]] == provisional[found]
        out[core] = np.where(found, rank + 1, 0).astype(np.int32)
    if local and log is not None:
        log(f"segment: {local} parts of blobs whose box grown by the halo exceeds max_window {max_window} voxels "
            f"were split in their block's window (objects up to halo {halo} across are exact there)")
    return {"threshold": float(threshold), "threshold_method": method, "sizes": sizes[keep], "grown": grown,
            "local": local, "split_bytes": peak_cached}
