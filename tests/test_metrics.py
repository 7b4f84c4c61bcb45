import numpy as np
import pytest

from isonet.errors import InputError
from isonet.metrics import psnr, psnr_affine, seg_score


def reference_psnr(x, gt, data_range=None):
    x, gt = np.asarray(x, np.float64), np.asarray(gt, np.float64)
    rng = gt.max() - gt.min() if data_range is None else data_range
    return 10 * np.log10(rng**2 / np.mean((x - gt) ** 2))


def reference_psnr_affine(x, gt, data_range=None):
    x, gt = np.asarray(x, np.float64).ravel(), np.asarray(gt, np.float64).ravel()
    a, b = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), gt, rcond=None)[0]
    return reference_psnr(a * x + b, gt, data_range)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    gt = rng.random((37, 20, 30)).astype(np.float32)
    x = gt + rng.normal(0, 0.05, gt.shape).astype(np.float32)
    return x, gt


# --- psnr -------------------------------------------------------------------------------------

def test_psnr_known_value():
    gt = np.linspace(0, 1, 4000).reshape(10, 20, 20)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01, range 1
    assert psnr(gt - 0.1, gt, data_range=2.0) == pytest.approx(20 + 20 * np.log10(2), abs=1e-9)


def test_psnr_identical_is_inf(pair):
    _, gt = pair
    assert psnr(gt, gt) == np.inf
    assert psnr(np.zeros(5), np.zeros(5)) == np.inf  # constant but equal: no range needed


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 36, 37, 1000])
def test_psnr_chunked_equals_formula(pair, chunk_size):
    x, gt = pair
    assert psnr(x, gt, chunk_size=chunk_size) == pytest.approx(reference_psnr(x, gt), abs=1e-9)
    assert psnr(x, gt, 1.5, chunk_size=chunk_size) == pytest.approx(reference_psnr(x, gt, 1.5), abs=1e-9)


def test_psnr_integer_and_memmap(tmp_path, pair):
    x, gt = pair
    xi, gi = (x * 1000).astype(np.int16), (gt * 1000).astype(np.uint16)
    assert psnr(xi, gi) == pytest.approx(reference_psnr(xi, gi), abs=1e-9)  # no int overflow
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    mm[:] = x
    assert psnr(mm, gt, chunk_size=3) == pytest.approx(reference_psnr(x, gt), abs=1e-9)


def test_psnr_bad_input(pair):
    x, gt = pair
    with pytest.raises(InputError, match="shape"):
        psnr(x[:-1], gt)
    with pytest.raises(InputError, match="constant"):
        psnr(np.ones(5), np.zeros(5))
    with pytest.raises(InputError, match="NaN"):
        psnr(np.array([0.0, np.nan]), np.array([0.0, 1.0]))
    with pytest.raises(InputError, match="chunk_size"):
        psnr(x, gt, chunk_size=0)


# --- psnr_affine ------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [None, 1, 5, 37])
def test_psnr_affine_matches_least_squares(pair, chunk_size):
    x, gt = pair
    got = psnr_affine(x, gt, chunk_size=chunk_size)
    assert got == pytest.approx(reference_psnr_affine(x, gt), abs=1e-8)
    assert got >= psnr(x, gt) - 1e-12  # the fit can only help


def test_psnr_affine_invariant_to_scale_and_offset(pair):
    x, gt = pair
    x = x.astype(np.float64)
    base = psnr_affine(x, gt, chunk_size=4)
    assert psnr_affine(3 * x + 7, gt, chunk_size=4) == pytest.approx(base, abs=1e-8)
    assert psnr_affine(-0.01 * x + 1e4, gt, chunk_size=4) == pytest.approx(base, abs=1e-6)
    assert psnr(3 * x + 7, gt) < base - 20  # plain PSNR is ruined by the unit change


def test_metrics_do_not_modify_inputs(pair):
    x, gt = (a.astype(np.float64) for a in pair)
    x0, gt0 = x.copy(), gt.copy()
    psnr(x, gt, chunk_size=4)
    psnr_affine(x, gt, chunk_size=4)
    assert np.array_equal(x, x0) and np.array_equal(gt, gt0)


def test_psnr_affine_exact_and_degenerate(pair):
    x, gt = pair
    assert psnr_affine(gt, gt) == np.inf
    # constant x: best fit is the mean of gt, residual is gt's variance
    g64 = gt.astype(np.float64)
    expected = 10 * np.log10((g64.max() - g64.min()) ** 2 / np.var(g64))
    assert psnr_affine(np.zeros_like(gt), gt, chunk_size=7) == pytest.approx(expected, abs=1e-8)
    with pytest.raises(InputError, match="shape"):
        psnr_affine(x, gt[:, :-1])


# --- seg_score --------------------------------------------------------------------------------

def test_seg_identical_and_permuted():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (12, 15, 17)).astype(np.int32)
    assert seg_score(gt, gt) == 1.0
    perm = np.array([0, 40, 3, 1000, 2, 7])  # relabel 1..5 to arbitrary distinct ids
    assert seg_score(gt, perm[gt], chunk_size=5) == 1.0
    assert seg_score(gt.astype(np.uint16), perm[gt].astype(np.int64)) == 1.0


def test_seg_partial_overlap_by_hand():
    gt = np.zeros((4, 10, 10), np.int32)
    pred = np.zeros_like(gt)
    # GT object 1: 10 voxels; prediction 3 covers 6 of them plus 2 outside -> IoU 6 / (10 + 8 - 6) = 0.5
    gt[0, 0, :10] = 1
    pred[0, 0, :6] = 3
    pred[0, 1, :2] = 3
    # GT object 2: 10 voxels; prediction 9 covers 4 (40 %, not more than half) -> 0
    gt[2, 5, :10] = 2
    pred[2, 5, :4] = 9
    pred[2, 6, :] = 9
    # a false positive does not change SEG
    pred[3, 9, 9] = 11
    expected = (6 / 12 + 0.0) / 2
    assert expected == 0.25
    assert seg_score(gt, pred) == pytest.approx(expected)
    seg, ids, per = seg_score(gt, pred, return_per_object=True, chunk_size=1)
    assert seg == pytest.approx(0.25)
    assert ids.tolist() == [1, 2]
    assert per == pytest.approx([0.5, 0.0])


def test_seg_exactly_half_is_not_a_match():
    gt = np.array([[1, 1, 1, 1]])
    assert seg_score(gt, np.array([[2, 2, 0, 0]])) == 0.0
    assert seg_score(gt, np.array([[2, 2, 2, 0]])) == pytest.approx(0.75)


def test_seg_no_gt_objects_is_nan():
    gt = np.zeros((3, 4, 5), np.int32)
    assert np.isnan(seg_score(gt, np.ones_like(gt)))
    seg, ids, per = seg_score(gt, gt, return_per_object=True)
    assert np.isnan(seg) and ids.size == 0 and per.size == 0


def test_seg_bad_input():
    gt = np.zeros((3, 4, 5), np.int32)
    with pytest.raises(InputError, match="shape"):
        seg_score(gt, gt[:, :, :-1])
    with pytest.raises(InputError, match="integer"):
        seg_score(gt, gt.astype(np.float32))
    with pytest.raises(InputError, match="2\\*\\*31"):
        seg_score(gt - 1, gt)


def test_large_planes_are_read_in_runs_of_rows(monkeypatch):
    import isonet.metrics as metrics

    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 50)  # smaller than one 9 x 13 plane
    rng = np.random.default_rng(3)
    gt = rng.random((4, 9, 13))
    x = gt + 0.1 * rng.random(gt.shape)
    reads = []

    class Recording(np.ndarray):
        def __getitem__(self, sel):
            reads.append(np.empty(gt.shape)[sel].size)
            return np.asarray(self)[sel]

    assert metrics.psnr_affine(x.view(Recording), gt) == pytest.approx(metrics.psnr_affine(x, gt, chunk_size=2),
                                                                          rel=1e-12)
    assert max(reads) <= 50 and sum(reads) == gt.size
    labels = np.zeros((4, 9, 13), np.int32)
    labels[1:3, 2:8, 3:9] = 1
    assert metrics.seg_score(labels, labels) == 1.0
    assert metrics.interior_label_ids(labels, 1).tolist() == [1]
