"""Quality of a restoration against ground truth: PSNR, affine-fitted PSNR and ISBI SEG.

All functions read their inputs in slabs along the first axis (about a million elements each;
a plane larger than that in runs of rows) and accumulate in float64 (or integer counts), so
memory does not follow the volume, and they work on any array that supports ``shape`` and
slicing (NumPy arrays, memory maps, Zarr arrays, the lazy views of :mod:`isonet.stages.views`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from isonet.errors import InputError

_CHUNK_ELEMENTS = 1 << 20  # elements per slab: 8 MiB as float64


def _check_pair(x, gt, name: str, xname: str = "x", gtname: str = "gt") -> tuple[int, ...]:
    if not (hasattr(x, "shape") and hasattr(gt, "shape")):
        raise InputError(f"{name}: {xname} and {gtname} must be arrays with a shape")
    if tuple(x.shape) != tuple(gt.shape):
        raise InputError(
            f"{name}: {xname} has shape {tuple(x.shape)} but {gtname} has shape {tuple(gt.shape)};"
            " they must match"
        )
    if len(x.shape) == 0 or int(np.prod(x.shape)) == 0:
        raise InputError(f"{name}: arrays must be non-empty with at least one axis, got {tuple(x.shape)}")
    return tuple(x.shape)


def _slabs(shape: tuple[int, ...], chunk_size: int | None, name: str) -> Iterator[tuple[slice, ...]]:
    """Selections that tile an array: slabs of ``chunk_size`` planes, or of about ``_CHUNK_ELEMENTS``.

    Without ``chunk_size``, a slab holds as many whole planes as fit the budget, and a plane
    larger than the budget is split into runs of rows, so memory never follows the volume.
    """
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise InputError(f"{name}: chunk_size must be a positive number of slices, got {chunk_size}")
        step = int(chunk_size)
    else:
        per_plane = int(np.prod(shape[1:], dtype=np.int64))
        step = _CHUNK_ELEMENTS // max(per_plane, 1)
        if step < 1:
            rows = max(1, _CHUNK_ELEMENTS // max(int(np.prod(shape[2:], dtype=np.int64)), 1))
            for z in range(shape[0]):
                for y in range(0, shape[1], rows):
                    yield slice(z, z + 1), slice(y, min(y + rows, shape[1]))
            return
    for i in range(0, shape[0], step):
        yield (slice(i, min(i + step, shape[0])),)


def _psnr_from(sse: float, n: int, data_range: float, name: str) -> float:
    if not np.isfinite(sse):
        raise InputError(f"{name}: inputs contain NaN or inf")
    if sse <= 0:
        return float("inf")
    if not (np.isfinite(data_range) and data_range > 0):
        raise InputError(f"{name}: data_range must be positive and finite, got {data_range}"
                         " (gt is constant? pass data_range explicitly)")
    return float(10.0 * np.log10(data_range**2 / (sse / n)))


def psnr(x, gt, data_range: float | None = None, *, chunk_size: int | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in dB.

    Parameters
    ----------
    x, gt : array_like, same shape
        Restoration and ground truth, any real dtype. Read in slabs along the first axis and
        converted to float64 one slab at a time.
    data_range : float, optional
        Peak-to-peak range of the signal; default ``gt.max() - gt.min()``.
    chunk_size : int, optional
        Slices along the first axis per slab; default gives slabs of about 1 million elements
        (whole planes, or runs of rows of a plane larger than that).
        The result does not depend on it beyond rounding.

    Returns
    -------
    psnr : float
        In dB; ``inf`` when ``x`` equals ``gt``.

    Raises
    ------
    InputError
        Shapes differ, arrays are empty or non-finite, or the range is not positive.

    Examples
    --------
    >>> gt = np.linspace(0, 1, 1000).reshape(10, 100)
    >>> round(psnr(gt + 0.1, gt), 6)
    20.0
    """
    name = "psnr"
    shape = _check_pair(x, gt, name)
    sse, lo, hi = 0.0, np.inf, -np.inf
    for s in _slabs(shape, chunk_size, name):
        g = np.asarray(gt[s], dtype=np.float64)
        d = np.asarray(x[s], dtype=np.float64) - g
        sse += float(np.dot(d.ravel(), d.ravel()))
        if data_range is None:
            lo, hi = min(lo, float(g.min())), max(hi, float(g.max()))
    n = int(np.prod(shape))
    rng = float(hi - lo) if data_range is None else float(data_range)
    return _psnr_from(sse, n, rng, name)


def psnr_affine(x, gt, data_range: float | None = None, *, chunk_size: int | None = None) -> float:
    """PSNR of ``a * x + b`` against ``gt``, with ``a, b`` the least-squares fit.

    A restoration network predicts in the normalised units it was trained on, not in the
    ground truth's camera units, so plain PSNR would mostly measure that unit mismatch. Fitting
    the scale and offset that best map ``x`` onto ``gt`` first makes the score invariant to
    ``x -> c * x + d`` (as in the CARE/CSBDeep evaluations) and leaves only the structural error.
    Because the fit is optimal, the result is never below :func:`psnr` of ``x`` itself.

    The fit is computed in one pass: each slab's means and centred second moments (float64) are
    merged with Chan et al.'s pairwise update, which avoids the cancellation of raw sums
    ``sum(x**2) - sum(x)**2 / n`` on large, offset data. Then ``a = cov(x, gt) / var(x)``
    (0 for constant ``x``) and the residual sum of squares is ``M2(gt) - a * cov(x, gt)``.

    Parameters
    ----------
    x, gt : array_like, same shape
        Restoration and ground truth, any real dtype, read in slabs along the first axis.
    data_range : float, optional
        Peak-to-peak range; default ``gt.max() - gt.min()``.
    chunk_size : int, optional
        Slices along the first axis per slab (see :func:`psnr`).

    Returns
    -------
    psnr : float
        In dB; ``inf`` when ``gt`` is exactly an affine function of ``x`` to float64 precision.

    Examples
    --------
    >>> gt = np.linspace(0, 1, 1000).reshape(10, 100)
    >>> noisy = gt + 0.01 * np.cos(np.arange(1000)).reshape(10, 100)
    >>> bool(np.isclose(psnr_affine(3 * noisy + 7, gt), psnr_affine(noisy, gt)))
    True
    """
    name = "psnr_affine"
    shape = _check_pair(x, gt, name)
    n = 0
    mx = mg = m2x = m2g = cxg = 0.0
    lo, hi = np.inf, -np.inf
    for s in _slabs(shape, chunk_size, name):
        g = np.asarray(gt[s], dtype=np.float64).ravel()
        xs = np.asarray(x[s], dtype=np.float64).ravel()
        k = g.size
        mx_k, mg_k = float(xs.mean()), float(g.mean())
        # new arrays, not in place: for float64 input the slab is a view of the caller's data
        x_c, g_c = xs - mx_k, g - mg_k
        m2x_k, m2g_k, cxg_k = float(np.dot(x_c, x_c)), float(np.dot(g_c, g_c)), float(np.dot(x_c, g_c))
        tot = n + k
        dx, dg = mx_k - mx, mg_k - mg
        w = n * k / tot
        m2x += m2x_k + dx * dx * w
        m2g += m2g_k + dg * dg * w
        cxg += cxg_k + dx * dg * w
        mx += dx * k / tot
        mg += dg * k / tot
        n = tot
        if data_range is None:
            lo, hi = min(lo, float(g.min())), max(hi, float(g.max()))
    if not all(np.isfinite(v) for v in (m2x, m2g, cxg)):
        raise InputError(f"{name}: inputs contain NaN or inf")
    a = cxg / m2x if m2x > 0 else 0.0
    sse = max(m2g - a * cxg, 0.0)
    rng = float(hi - lo) if data_range is None else float(data_range)
    return _psnr_from(sse, n, rng, name)


def _check_labels(a, name: str, which: str) -> None:
    dt = np.dtype(a.dtype)
    if not (np.issubdtype(dt, np.integer) or dt == bool):
        raise InputError(f"{name}: {which} must be an integer label image, got dtype {dt}")


def _merge_counts(keys: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k, inv = np.unique(np.concatenate(keys), return_inverse=True)
    return k, np.bincount(inv.ravel(), weights=np.concatenate(counts), minlength=len(k)).astype(np.int64)


def seg_score(gt_labels, pred_labels, *, return_per_object: bool = False, chunk_size: int | None = None):
    """ISBI 2013 SEG score of a predicted labelling against ground truth.

    For each ground-truth object ``G``, the predicted object ``P`` with ``|P & G| > 0.5 |G|``
    (at most one can qualify) counts with its Jaccard index ``|P & G| / |P | G|``; if none
    qualifies, the object scores 0. SEG is the mean over ground-truth objects, so it penalises
    missed and merged nuclei, but not false positives. Label 0 is background in both images; the
    label values themselves do not matter.

    Overlaps come from one contingency table of ``(gt, pred)`` label pairs, counted slab by slab
    along the first axis, so the cost is one pass over the volumes whatever the number of objects.

    Parameters
    ----------
    gt_labels, pred_labels : array_like of non-negative integers, same shape
        Ground-truth and predicted label images, values below ``2**31``.
    return_per_object : bool, optional
        Also return the ground-truth label values and their individual scores.
    chunk_size : int, optional
        Slices along the first axis per slab (see :func:`psnr`).

    Returns
    -------
    seg : float
        Mean score in ``[0, 1]``; ``nan`` when ``gt_labels`` has no objects (the mean over an
        empty set; callers decide whether that is an error).
    gt_ids : ndarray of int64
        Sorted ground-truth label values, only with ``return_per_object=True``.
    per_object : ndarray of float64
        Score of each object in ``gt_ids``, only with ``return_per_object=True``.

    Raises
    ------
    InputError
        Shapes differ, labels are not integers, or are negative or too large.

    Examples
    --------
    >>> gt = np.array([[1, 1, 1, 1, 0, 2, 2]])
    >>> pred = np.array([[5, 5, 5, 0, 0, 0, 7]])
    >>> seg_score(gt, pred)  # object 1: IoU 3/4; object 2: covered by half only, 0
    0.375
    >>> seg_score(gt, pred, return_per_object=True)
    (0.375, array([1, 2]), array([0.75, 0.  ]))
    """
    name = "seg_score"
    shape = _check_pair(pred_labels, gt_labels, name, "pred_labels", "gt_labels")
    _check_labels(gt_labels, name, "gt_labels")
    _check_labels(pred_labels, name, "pred_labels")

    pair_keys, pair_counts, pred_keys, pred_counts = [], [], [], []
    for s in _slabs(shape, chunk_size, name):
        g = np.asarray(gt_labels[s]).ravel()
        p = np.asarray(pred_labels[s]).ravel()
        for which, a in (("gt_labels", g), ("pred_labels", p)):
            if a.size and (a.min() < 0 or int(a.max()) >= 2**31):
                bad = int(a.min()) if a.min() < 0 else int(a.max())
                raise InputError(f"{name}: {which} must hold labels in [0, 2**31), found {bad}")
        k, c = np.unique(p, return_counts=True)
        pred_keys.append(k.astype(np.int64))
        pred_counts.append(c)
        fg = g > 0
        # pair key gt * 2**32 + pred: unique while both are below 2**31
        k, c = np.unique((g[fg].astype(np.int64) << 32) | p[fg].astype(np.int64), return_counts=True)
        pair_keys.append(k)
        pair_counts.append(c)

    pairs, overlap = _merge_counts(pair_keys, pair_counts)
    pred_ids, pred_size = _merge_counts(pred_keys, pred_counts)
    pair_gt, pair_pred = pairs >> 32, pairs & 0xFFFFFFFF
    gt_ids, gt_index = np.unique(pair_gt, return_inverse=True)
    gt_index = gt_index.ravel()
    gt_size = np.bincount(gt_index, weights=overlap, minlength=len(gt_ids))

    per_object = np.zeros(len(gt_ids), np.float64)
    match = (pair_pred > 0) & (overlap > 0.5 * gt_size[gt_index])
    if match.any():
        inter = overlap[match].astype(np.float64)
        p_size = pred_size[np.searchsorted(pred_ids, pair_pred[match])]
        per_object[gt_index[match]] = inter / (gt_size[gt_index[match]] + p_size - inter)
    seg = float(per_object.mean()) if len(gt_ids) else float("nan")
    if return_per_object:
        return seg, gt_ids, per_object
    return seg


def interior_label_ids(labels, z_margin: float, *, chunk_size: int | None = None) -> np.ndarray:
    """Label values whose centroid lies at least ``z_margin`` planes from both z-ends.

    An object's centroid is the mean z index of its voxels. It is interior when
    ``z_margin <= z_c <= (Z - 1) - z_margin`` for a volume of ``Z`` planes along the first axis.
    Near the z-ends a restoration has no data on one side and a nucleus may be cut by the end of
    the volume, so scores restricted to interior objects measure what the method does where the
    data surrounds it.

    Parameters
    ----------
    labels : array_like of non-negative integers, shape (z, ...)
        0 is background. Read in slabs along the first axis.
    z_margin : float
        Distance in planes (>= 0).
    chunk_size : int, optional
        Slices along the first axis per slab (see :func:`psnr`).

    Returns
    -------
    ids : ndarray of int64, sorted

    Examples
    --------
    >>> labels = np.zeros((20, 2, 2), np.int32)
    >>> labels[0:3], labels[8:12], labels[17:20] = 1, 2, 3   # centroids z 1, 9.5 and 18
    >>> interior_label_ids(labels, 5).tolist(), interior_label_ids(labels, 1).tolist()
    ([2], [1, 2, 3])
    """
    name = "interior_label_ids"
    if not hasattr(labels, "shape") or len(labels.shape) == 0:
        raise InputError(f"{name}: labels must be an array with at least one axis")
    _check_labels(labels, name, "labels")
    if not (np.isfinite(z_margin) and z_margin >= 0):
        raise InputError(f"{name}: z_margin must be a finite number >= 0, got {z_margin}")
    shape = tuple(labels.shape)
    keys, counts, zsums = [], [], []
    for s in _slabs(shape, chunk_size, name):
        lab = np.asarray(labels[s])
        z = np.broadcast_to(np.arange(s[0].start, s[0].stop).reshape(-1, *([1] * (lab.ndim - 1))), lab.shape)
        fg = lab > 0
        if lab.size and lab.min() < 0:
            raise InputError(f"{name}: labels must be non-negative, found {int(lab.min())}")
        k, inv, c = np.unique(lab[fg].astype(np.int64), return_inverse=True, return_counts=True)
        keys.append(k)
        counts.append(c)
        zsums.append(np.bincount(inv.ravel(), weights=z[fg].astype(np.float64), minlength=len(k)))
    if not keys or not sum(len(k) for k in keys):
        return np.zeros(0, np.int64)
    ids, inv = np.unique(np.concatenate(keys), return_inverse=True)
    n = np.bincount(inv.ravel(), weights=np.concatenate(counts).astype(np.float64), minlength=len(ids))
    zc = np.bincount(inv.ravel(), weights=np.concatenate(zsums), minlength=len(ids)) / n
    inside = (zc >= z_margin) & (zc <= shape[0] - 1 - z_margin)
    return ids[inside]
