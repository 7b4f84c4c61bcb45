"""Nuclei segmentation of restored volumes, axes ``zyx``: a global threshold and a watershed.

Used to compare restorations by a downstream task (SEG against ground-truth labels, see
:func:`isonet.metrics.seg_score`), so it is deliberately classical and deterministic: the
Intermodes threshold that ImageJ users know, hole filling, and a distance-transform watershed
that splits touching round nuclei.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def _split_blob(blob: np.ndarray, min_distance: int, sampling) -> tuple[np.ndarray, int]:
    """Watershed of one connected blob on its distance transform; labels ``1..k`` and ``k``."""
    dist = ndi.distance_transform_edt(blob, sampling=sampling).astype(np.float32)
    # a voxelised ball's distance map has a ragged top with several maxima; smoothing leaves one
    smooth = ndi.gaussian_filter(dist, 1.0)
    smooth[~blob] = 0
    peaks = peak_local_max(
        smooth, min_distance=min_distance, threshold_abs=0.0, exclude_border=False, p_norm=2
    )
    if len(peaks) < 2:
        return blob.astype(np.int32), 1
    markers = np.zeros(blob.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return watershed(-dist, markers, mask=blob).astype(np.int32, copy=False), len(peaks)


def threshold_intermodes(image: np.ndarray, nbins: int = 256, max_iter: int = 10000) -> float:
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
    if image.size == 0:
        raise InputError("intermodes threshold: image is empty")
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"intermodes threshold: image must be integer or float, got dtype {image.dtype}")
    if int(nbins) < 3:
        raise InputError(f"intermodes threshold: nbins must be at least 3, got {nbins}")
    lo, hi = float(image.min()), float(image.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("intermodes threshold: image contains NaN or inf; mask or replace them first")
    if lo == hi:
        raise InputError(f"intermodes threshold: image is constant ({lo}); there is nothing to separate")
    counts, edges = np.histogram(image, bins=int(nbins), range=(lo, hi))
    h = counts.astype(np.float64)
    for _ in range(int(max_iter) + 1):
        peaks = _strict_maxima(h)
        if len(peaks) == 2:
            centres = 0.5 * (edges[:-1] + edges[1:])
            return float(0.5 * (centres[peaks[0]] + centres[peaks[1]]))
        h = _smooth3(h)
    raise InputError(
        f"intermodes threshold: histogram did not become bimodal after {max_iter} smoothing passes;"
        " pass an explicit threshold"
    )


def global_threshold(volume: np.ndarray, fallback: str | None = "otsu") -> tuple[float, str]:
    """Intermodes threshold, or Otsu's when the histogram has no two modes to split.

    Blurry volumes (e.g. a plain cubic upsampling of an anisotropic stack) often have a
    unimodal histogram on which Intermodes is undefined; the segmentation of such a volume still
    needs a threshold to be compared with others, and Otsu's is the standard choice.

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
    try:
        return threshold_intermodes(volume), "intermodes"
    except InputError:
        if fallback != "otsu":
            raise
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(np.asarray(volume))), "otsu"


#: threshold rules of :func:`threshold_by_rule`
SEG_THRESHOLD_RULES = ("intermodes", "otsu")


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
    if rule == "intermodes":
        return threshold_intermodes(volume)
    if rule == "otsu":
        from skimage.filters import threshold_otsu

        return float(threshold_otsu(np.asarray(volume)))
    raise InputError(f"threshold rule {rule!r} is unknown; valid: {', '.join(SEG_THRESHOLD_RULES)}")


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
    if volume.ndim != 3:
        raise InputError(f"segment_nuclei: volume must be 3D (z, y, x), got shape {volume.shape}")
    if not (np.issubdtype(volume.dtype, np.integer) or np.issubdtype(volume.dtype, np.floating)
            or volume.dtype == bool):
        raise InputError(f"segment_nuclei: volume must be numeric, got dtype {volume.dtype}")
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
        # one background voxel around the blob (where the volume allows) keeps the EDT and the
        # hole filling exact; one more gives the smoothing room
        box = tuple(slice(max(b.start - 2, 0), min(b.stop + 2, n)) for b, n in zip(bbox, volume.shape))
        comp = components[box]
        blob = ndi.binary_fill_holes(comp == i)
        if blob.sum() < min_size:
            continue
        split, k = _split_blob(blob, int(min_distance), sampling)
        # a filled hole never takes voxels of another blob it happens to enclose
        write = (split > 0) & ((comp == i) | (comp == 0))
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
    counts = counts[ids > 0].astype(np.float64)
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
