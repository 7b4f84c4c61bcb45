"""Nuclei segmentation of restored volumes, axes ``zyx``: a global threshold and a watershed.

Used to compare restorations by a downstream task (SEG against ground-truth labels, see
:func:`isonet.metrics.seg_score`), so it is deliberately classical and deterministic: the
Intermodes threshold that ImageJ users know, hole filling, and a distance-transform watershed
that splits touching round nuclei.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from isonet.errors import InputError


def _smooth3(h: np.ndarray) -> np.ndarray:
    # 3-point running mean with zeros beyond both ends, as ImageJ's AutoThresholder does
    return np.convolve(h, np.ones(3) / 3.0, mode="same")


def _strict_maxima(h: np.ndarray) -> np.ndarray:
    # interior bins strictly greater than both neighbours (ImageJ's bimodalTest)
    return np.flatnonzero((h[1:-1] > h[:-2]) & (h[1:-1] > h[2:])) + 1


def _seeds(blob: np.ndarray, min_distance: int, sampling) -> tuple[np.ndarray, np.ndarray]:
    """The distance transform of a blob and its watershed seeds (``(k, 3)`` voxel indices, highest first)."""
    dist = ndi.distance_transform_edt(blob, sampling=sampling).astype(np.float32)
    # a voxelised ball's distance map has a ragged top with several maxima; smoothing leaves one
    smooth = ndi.gaussian_filter(dist, 1.0)
    smooth[~blob] = 0
    peaks = peak_local_max(
        smooth, min_distance=min_distance, threshold_abs=0.0, exclude_border=False, p_norm=2
    )
    return dist, peaks


def _split_blob(blob: np.ndarray, min_distance: int, sampling) -> tuple[np.ndarray, int]:
    """Watershed of one connected blob on its distance transform; labels ``1..k`` and ``k``."""
    dist, peaks = _seeds(blob, min_distance, sampling)
    if len(peaks) < 2:
        return blob.astype(np.int32), 1
    return _watershed(blob, dist, peaks), len(peaks)


def _watershed(blob: np.ndarray, dist: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Watershed of ``-dist`` within ``blob`` from ``peaks``; label ``j`` grows from ``peaks[j - 1]``."""
    markers = np.zeros(blob.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return watershed(-dist, markers, mask=blob).astype(np.int32, copy=False)


def split_seeded(comp: np.ndarray, i: int, min_distance: int, sampling) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split part ``i`` of a component labelling the way :func:`split_component` does, naming objects by seed.

    For a blob seen only in part (a window that cuts it): holes are filled and the distance
    transform taken within ``comp``, so both are exact where the blob's background lies within
    it; each object is named by the voxel of its seed, which any other window holding that seed
    finds too. Returns the watershed labels ``1..k`` over ``comp``, the voxels to write and the
    ``(k, 3)`` seed voxels (label ``j`` grew from seed ``j - 1``).
    """
    blob = ndi.binary_fill_holes(comp == i)
    dist, peaks = _seeds(blob, min_distance, sampling)
    if len(peaks) == 0:  # a part too thin for a maximum: the deepest voxel names it
        peaks = np.array([np.unravel_index(int(np.argmax(np.where(blob, dist, -1))), blob.shape)])
    split = _watershed(blob, dist, peaks)
    return split, (split > 0) & ((comp == i) | (comp == 0)), peaks


#: threshold rules of :func:`threshold_by_rule`
SEG_THRESHOLD_RULES = ("intermodes", "otsu")


#: histogram bins of every global threshold (Intermodes and Otsu), in memory or streamed
THRESHOLD_BINS = 256


def intensity_range(blocks: Iterable[np.ndarray], what: str = "intermodes threshold") -> tuple[float, float]:
    """Smallest and largest value over blocks of a volume, checked to be finite.

    Parameters
    ----------
    blocks : iterable of ndarray
        The volume in pieces (any shapes); together they hold every voxel once or more.
    what : str
        Named in error messages.

    Returns
    -------
    lo, hi : float

    Raises
    ------
    InputError
        If there are no values, a value is NaN or infinite, or the dtype is not numeric.

    Examples
    --------
    >>> intensity_range([np.array([3.0, 1.0]), np.array([7.0])])
    (1.0, 7.0)
    """
    lo, hi, seen = np.inf, -np.inf, False
    for block in blocks:
        block = np.asarray(block)
        if not (np.issubdtype(block.dtype, np.integer) or np.issubdtype(block.dtype, np.floating)):
            raise InputError(f"{what}: image must be integer or float, got dtype {block.dtype}")
        if block.size == 0:
            continue
        seen = True
        b_lo, b_hi = float(block.min()), float(block.max())
        if not (np.isfinite(b_lo) and np.isfinite(b_hi)):
            raise InputError(f"{what}: image contains NaN or inf; mask or replace them first")
        lo, hi = min(lo, b_lo), max(hi, b_hi)
    if not seen:
        raise InputError(f"{what}: image is empty")
    return lo, hi


def histogram_counts(block: np.ndarray, lo: float, hi: float, nbins: int = THRESHOLD_BINS) -> np.ndarray:
    """Counts of ``block`` in ``nbins`` equal bins over ``[lo, hi]`` (int64).

    Each value is binned on its own, so the counts of a volume's pieces add up to the counts of
    the whole volume exactly, whatever the pieces.

    Examples
    --------
    >>> histogram_counts(np.array([0.0, 0.1, 0.9, 1.0]), 0.0, 1.0, nbins=2).tolist()
    [2, 2]
    """
    counts, _ = np.histogram(np.asarray(block), bins=int(nbins), range=(lo, hi))
    return counts.astype(np.int64, copy=False)


def _bin_centres(lo: float, hi: float, nbins: int, dtype) -> np.ndarray:
    # np.histogram computes the edges in the data's float type (float32 for float32 data)
    edges = np.histogram_bin_edges(np.zeros(0, dtype), bins=int(nbins), range=(lo, hi))
    return 0.5 * (edges[:-1] + edges[1:])


def intermodes_from_histogram(counts: np.ndarray, lo: float, hi: float, max_iter: int = 10000,
                              dtype=np.float64) -> float:
    """Intermodes threshold of a histogram over ``[lo, hi]`` (see :func:`threshold_intermodes`).

    ``dtype`` is that of the data: bin centres are computed in its float type, as
    ``np.histogram`` computes the edges.

    Raises
    ------
    InputError
        If the histogram is not bimodal after ``max_iter`` smoothing passes.

    Examples
    --------
    >>> intermodes_from_histogram(np.array([0, 5, 1, 0, 1, 6, 0]), 0.0, 7.0)
    3.5
    """
    low, high = intermodes_modes(counts, lo, hi, max_iter, dtype)
    return float(0.5 * (low + high))


def intermodes_modes(counts: np.ndarray, lo: float, hi: float, max_iter: int = 10000,
                     dtype=np.float64) -> tuple[float, float]:
    """The two modes Intermodes puts its threshold between: the centres of the two maxima of the
    histogram over ``[lo, hi]`` once smoothed until it has exactly two.

    Raises
    ------
    InputError
        If the histogram is not bimodal after ``max_iter`` smoothing passes.

    Examples
    --------
    >>> intermodes_modes(np.array([0, 5, 1, 0, 1, 6, 0]), 0.0, 7.0)
    (1.5, 5.5)
    """
    centres = _bin_centres(lo, hi, len(counts), dtype)
    h = np.asarray(counts, dtype=np.float64)
    for _ in range(int(max_iter) + 1):
        peaks = _strict_maxima(h)
        if len(peaks) == 2:
            return float(centres[peaks[0]]), float(centres[peaks[1]])
        h = _smooth3(h)
    raise InputError(
        f"intermodes threshold: histogram did not become bimodal after {max_iter} smoothing passes;"
        " pass an explicit threshold"
    )


def otsu_from_histogram(counts: np.ndarray, lo: float, hi: float, dtype=np.float64) -> float:
    """Otsu's threshold of a histogram over ``[lo, hi]`` (scikit-image's, on these bins).

    For float data this is ``skimage.filters.threshold_otsu`` of the data itself.

    Examples
    --------
    >>> otsu_from_histogram(np.array([5, 5, 0, 0, 5, 5]), 0.0, 6.0)
    1.5
    """
    from skimage.filters import threshold_otsu

    if lo == hi:
        return float(lo)
    return float(threshold_otsu(hist=(np.asarray(counts), _bin_centres(lo, hi, len(counts), dtype))))


def streamed_threshold(blocks: Callable[[], Iterable[np.ndarray]], rule: str = "intermodes",
                       fallback: str | None = None, nbins: int = THRESHOLD_BINS) -> tuple[float, str]:
    """A global threshold of a volume read in pieces, equal to the one of the whole volume.

    Two passes: the intensity range, then the histogram over it, accumulated piece by piece;
    the in-memory functions (:func:`threshold_intermodes`, :func:`global_threshold`,
    :func:`threshold_by_rule`) are this function on one piece, so both agree bit for bit.

    Parameters
    ----------
    blocks : callable
        Returns a new iterable over the pieces of the volume each time it is called (twice).
    rule : {"intermodes", "otsu"}
    fallback : {"otsu", None}
        Rule used where ``rule`` is ``"intermodes"`` and the histogram has no two modes.
    nbins : int

    Returns
    -------
    threshold : float
    method : str
        The rule used.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = np.concatenate([rng.normal(50, 5, 5000), rng.normal(200, 5, 5000)])
    >>> streamed_threshold(lambda: np.split(v, 4)) == streamed_threshold(lambda: [v])
    True
    """
    if rule not in SEG_THRESHOLD_RULES:
        raise InputError(f"threshold rule {rule!r} is unknown; valid: {', '.join(SEG_THRESHOLD_RULES)}")
    if int(nbins) < 3:
        raise InputError(f"intermodes threshold: nbins must be at least 3, got {nbins}")
    lo, hi = intensity_range(blocks())
    if rule == "intermodes" and lo == hi:
        if fallback != "otsu":
            raise InputError(f"intermodes threshold: image is constant ({lo}); there is nothing to separate")
        return float(lo), "otsu"
    counts = np.zeros(int(nbins), np.int64)
    dtype = None
    for block in blocks():
        block = np.asarray(block)
        dtype = block.dtype if dtype is None else np.result_type(dtype, block.dtype)
        counts += histogram_counts(block, lo, hi, nbins)
    if rule == "intermodes":
        try:
            return intermodes_from_histogram(counts, lo, hi, dtype=dtype), "intermodes"
        except InputError:
            if fallback != "otsu":
                raise
    return otsu_from_histogram(counts, lo, hi, dtype), "otsu"


def threshold_intermodes(image: np.ndarray, nbins: int = THRESHOLD_BINS, max_iter: int = 10000) -> float:
    """Intermodes threshold (Prewitt & Mendelsohn 1966; ImageJ's "Intermodes").

    The histogram of ``image`` is smoothed by a 3-point running mean (zero beyond its ends) until
    it has exactly two local maxima (bins strictly higher than both neighbours); the threshold is
    midway between the centres of those two bins. Unlike ImageJ, which returns the floor of the
    mean bin index, the result is in intensity units and not rounded.

    Parameters
    ----------
    image : ndarray
        Any shape, float or integer, finite. Only its histogram is used, so large arrays are fine
        (``np.histogram`` works through the values in blocks without copying the array).
    nbins : int, optional
        Number of histogram bins spanning ``[image.min(), image.max()]``.
    max_iter : int, optional
        Most smoothing passes before giving up.

    Returns
    -------
    threshold : float
        In the units of ``image``; foreground is ``image > threshold``.

    Raises
    ------
    InputError
        If ``image`` is empty, constant or not finite, or if the histogram is not bimodal after
        ``max_iter`` passes.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = np.concatenate([rng.normal(50, 5, 5000), rng.normal(200, 5, 5000)])
    >>> t = threshold_intermodes(img)  # midway between the modes at 50 and 200
    >>> bool(abs(t - 125) < 2)
    True
    """
    image = np.asarray(image)
    if int(nbins) < 3:
        raise InputError(f"intermodes threshold: nbins must be at least 3, got {nbins}")
    lo, hi = intensity_range([image])
    if lo == hi:
        raise InputError(f"intermodes threshold: image is constant ({lo}); there is nothing to separate")
    return intermodes_from_histogram(histogram_counts(image, lo, hi, nbins), lo, hi, max_iter, image.dtype)


def global_threshold(volume: np.ndarray, fallback: str | None = "otsu") -> tuple[float, str]:
    """Intermodes threshold, or Otsu's when the histogram has no two modes to split.

    Blurry volumes (e.g. a plain cubic upsampling of an anisotropic stack) often have a
    unimodal histogram on which Intermodes is undefined; the segmentation of such a volume still
    needs a threshold to be compared with others, and Otsu's is the standard choice. Both use
    the same :data:`THRESHOLD_BINS` bins over the volume's range, as :func:`streamed_threshold`
    does for a volume read in pieces.

    Returns
    -------
    threshold : float
    method : str
        ``"intermodes"`` or ``"otsu"``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = np.concatenate([rng.normal(50, 8, 5000), rng.normal(200, 8, 5000)])
    >>> t, how = global_threshold(v)
    >>> how, bool(110 < t < 140)
    ('intermodes', True)
    """
    volume = np.asarray(volume)
    return streamed_threshold(lambda: [volume], "intermodes", fallback)


def threshold_by_rule(volume: np.ndarray, rule: str) -> float:
    """The global threshold of ``volume`` by exactly one rule, never another.

    Unlike :func:`global_threshold` there is no fallback: where ``rule`` is ``"intermodes"`` and
    the histogram has no two modes this raises, so that a caller comparing several volumes can
    choose one rule for all of them.

    Parameters
    ----------
    volume : ndarray
    rule : {"intermodes", "otsu"}

    Returns
    -------
    threshold : float

    Raises
    ------
    InputError
        Unknown rule, or Intermodes undefined on this histogram.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> v = np.concatenate([rng.normal(50, 8, 5000), rng.normal(200, 8, 5000)])
    >>> [bool(60 < threshold_by_rule(v, r) < 190) for r in SEG_THRESHOLD_RULES]  # between the modes
    [True, True]
    """
    volume = np.asarray(volume)
    return streamed_threshold(lambda: [volume], rule)[0]


def blob_box(bbox: Sequence[slice], shape: Sequence[int], offset: Sequence[int] = (0, 0, 0)) -> tuple[slice, ...]:
    """The box in which a blob is split: its bounding box ``bbox`` grown by 2 voxels, within ``shape``.

    ``bbox`` is in coordinates shifted by ``offset`` (those of a window starting at ``offset``);
    the box is returned in the coordinates of ``shape``. One background voxel around the blob
    (where the volume allows) keeps the EDT and the hole filling exact; one more gives the
    smoothing room.
    """
    return tuple(slice(max(b.start + o - 2, 0), min(b.stop + o + 2, n)) for b, o, n in zip(bbox, offset, shape))


def split_component(comp: np.ndarray, i: int, min_distance: int, min_size: int,
                    sampling) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Split connected component ``i`` of a component labelling ``comp`` (over its :func:`blob_box`).

    Returns None when the blob, holes filled, has fewer than ``min_size`` voxels; else the
    watershed labels ``1..k`` over the box, the voxels to write (a filled hole never takes
    voxels of another blob it happens to enclose) and ``k``.
    """
    blob = ndi.binary_fill_holes(comp == i)
    if blob.sum() < min_size:
        return None
    split, k = _split_blob(blob, int(min_distance), sampling)
    write = (split > 0) & ((comp == i) | (comp == 0))
    return split, write, k


def check_segment_args(volume, min_distance: int, min_size: int, sampling) -> tuple[float, float, float] | None:
    """Validate the settings of :func:`segment_nuclei` (and its block-wise form); ``sampling`` as a tuple."""
    if len(volume.shape) != 3:
        raise InputError(f"segment_nuclei: volume must be 3D (z, y, x), got shape {tuple(volume.shape)}")
    dt = np.dtype(volume.dtype)
    if not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating) or dt == bool):
        raise InputError(f"segment_nuclei: volume must be numeric, got dtype {dt}")
    if int(min_distance) < 1:
        raise InputError(f"segment_nuclei: min_distance must be at least 1 voxel, got {min_distance}")
    if int(min_size) < 0:
        raise InputError(f"segment_nuclei: min_size must be >= 0, got {min_size}")
    if sampling is not None:
        sampling = tuple(float(s) for s in sampling)
        if len(sampling) != 3 or not all(np.isfinite(s) and s > 0 for s in sampling):
            raise InputError(
                f"segment_nuclei: sampling must be 3 positive voxel sizes (z, y, x), got {sampling}"
            )
    return sampling


def segment_nuclei(
    volume: np.ndarray,
    threshold: float | None = None,
    min_distance: int = 5,
    min_size: int = 64,
    sampling: Sequence[float] | None = None,
) -> np.ndarray:
    """Label nuclei in a 3D volume: threshold, fill holes, distance-transform watershed.

    Steps: foreground ``volume > threshold`` (Intermodes unless given); then, for each connected
    foreground blob (6-connected) in its bounding box: 3D hole filling; the Euclidean distance
    transform (in units of ``sampling``), smoothed by a gaussian of 1 voxel so that a single round
    nucleus has a single maximum; one seed per maximum, keeping the highest of any seeds closer than
    ``min_distance`` voxels; watershed of the negative distance within the blob. Finally objects
    smaller than ``min_size`` voxels are removed and labels renumbered ``1..N``, ordered by blob
    (first voxel in C order) and, within a blob, by seed height.

    Working blob by blob makes time and memory follow the foreground rather than the volume: apart
    from ``volume`` the full-size arrays are one int32 blob labelling and the int32 result.

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
        Float or integer intensities, bright nuclei on a dark background.
    threshold : float, optional
        Global intensity threshold; default :func:`global_threshold` of ``volume`` (Intermodes,
        Otsu where the histogram is not bimodal).
    min_distance : int, optional
        Smallest distance in voxels between two nucleus centres; nearer seeds are merged. Set it
        below the smallest nucleus radius you expect.
    min_size : int, optional
        Objects with fewer voxels are removed.
    sampling : sequence of 3 floats, optional
        Voxel size ``(z, y, x)`` for the distance transform, for volumes that are not isotropic.

    Returns
    -------
    labels : ndarray, int32, shape of ``volume``
        0 for background, ``1..N`` for nuclei.

    Examples
    --------
    >>> z, y, x = np.ogrid[:32, :32, :48]
    >>> ball = lambda c, r: (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
    >>> vol = (ball((16, 16, 12), 8) | ball((16, 16, 25), 8)).astype(np.float32)
    >>> labels = segment_nuclei(vol, threshold=0.5)
    >>> labels.dtype, int(labels.max())
    (dtype('int32'), 2)
    """
    volume = np.asarray(volume)
    sampling = check_segment_args(volume, min_distance, min_size, sampling)
    if volume.dtype == bool:
        volume = volume.view(np.uint8)
    if threshold is None:
        threshold, _ = global_threshold(volume)
    elif not np.isfinite(threshold):
        raise InputError(f"segment_nuclei: threshold must be finite, got {threshold}")

    # Each connected blob is processed in its own bounding box: the cost follows the foreground,
    # not the volume (a full-volume EDT needs 12 bytes a voxel of feature indices), and seeds of
    # different blobs never suppress each other.
    components, _ = ndi.label(volume > threshold)
    labels = np.zeros(volume.shape, np.int32)
    n_labels = 0
    for i, bbox in enumerate(ndi.find_objects(components), start=1):
        if bbox is None:
            continue
        box = blob_box(bbox, volume.shape)
        result = split_component(components[box], i, min_distance, min_size, sampling)
        if result is None:
            continue
        split, write, k = result
        labels[box][write] = split[write] + n_labels
        n_labels += k
    del components

    sizes = np.bincount(labels.ravel())
    keep = sizes >= int(min_size)
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def segmentation_summary(labels: np.ndarray) -> dict:
    """Object count and sizes of a label image, for reports.

    Parameters
    ----------
    labels : ndarray of non-negative integers
        0 is background; every other value is one object.

    Returns
    -------
    summary : dict
        ``n_objects`` (int), and ``mean_volume``, ``median_volume``, ``min_volume``,
        ``max_volume`` in voxels (float; nan when there are no objects).

    Examples
    --------
    >>> segmentation_summary(np.array([[0, 1, 1], [2, 2, 2]]))
    {'n_objects': 2, 'mean_volume': 2.5, 'median_volume': 2.5, 'min_volume': 2.0, 'max_volume': 3.0}
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"segmentation_summary: labels must be integers, got dtype {labels.dtype}")
    ids, counts = np.unique(labels, return_counts=True)
    if len(ids) and ids[0] < 0:
        raise InputError(f"segmentation_summary: labels must be non-negative, found {int(ids[0])}")
    return summary_of_sizes(counts[ids > 0])


def summary_of_sizes(sizes: np.ndarray) -> dict:
    """:func:`segmentation_summary` from the objects' sizes in voxels (one entry per object).

    Examples
    --------
    >>> summary_of_sizes(np.array([2, 3]))["mean_volume"]
    2.5
    """
    counts = np.asarray(sizes, dtype=np.float64)
    if len(counts) == 0:
        nan = float("nan")
        sizes = ("mean_volume", "median_volume", "min_volume", "max_volume")
        return {"n_objects": 0, **dict.fromkeys(sizes, nan)}
    return {
        "n_objects": int(len(counts)),
        "mean_volume": float(counts.mean()),
        "median_volume": float(np.median(counts)),
        "min_volume": float(counts.min()),
        "max_volume": float(counts.max()),
    }
