import numpy as np
import pytest
from scipy import ndimage as ndi

from isonet.errors import InputError
from isonet.metrics import seg_score
from isonet.segment import segment_nuclei, segmentation_summary, threshold_intermodes


def balls(shape, centres, radius):
    """Label image of balls; where balls overlap, the voxel goes to the nearest centre."""
    grid = np.indices(shape, dtype=np.float32)
    d2 = np.stack([sum((g - c) ** 2 for g, c in zip(grid, ctr)) for ctr in centres])
    nearest = d2.argmin(axis=0)
    inside = d2.min(axis=0) <= radius**2
    return np.where(inside, nearest + 1, 0).astype(np.int32)


# --- intermodes -------------------------------------------------------------------------------

def test_intermodes_two_gaussian_populations():
    rng = np.random.default_rng(1)
    img = np.concatenate([rng.normal(50, 8, 200_000), rng.normal(200, 8, 180_000)]).reshape(20, 19, -1)
    assert threshold_intermodes(img) == pytest.approx(125, abs=3)
    assert threshold_intermodes(img.astype(np.float32)) == pytest.approx(125, abs=3)
    assert threshold_intermodes(np.clip(img, 0, 255).astype(np.uint8)) == pytest.approx(125, abs=3)


def test_intermodes_tiny_histogram_by_hand():
    # value v occurs counts[v] times; with nbins=10 over [0, 9] bin i has centre 0.45 + 0.9 i
    counts = [1, 3, 0, 3, 0, 0, 2, 9, 3, 1]
    img = np.repeat(np.arange(10), counts)
    # raw histogram has three strict maxima (bins 1, 3, 7); one 3-point mean (zeros outside):
    # [4/3, 4/3, 2, 1, 1, 2/3, 11/3, 14/3, 13/3, 4/3] -> strict maxima at bins 2 and 7
    expected = 0.5 * ((0.45 + 0.9 * 2) + (0.45 + 0.9 * 7))  # = 4.5
    assert threshold_intermodes(img, nbins=10) == pytest.approx(expected)
    assert expected == pytest.approx(4.5)


def test_intermodes_bad_input():
    with pytest.raises(InputError, match="constant"):
        threshold_intermodes(np.full((4, 4, 4), 7.0))
    with pytest.raises(InputError, match="NaN"):
        threshold_intermodes(np.array([0.0, 1.0, np.nan]))
    with pytest.raises(InputError, match="empty"):
        threshold_intermodes(np.zeros(0))
    # a unimodal histogram (a triangle) never gets a second peak
    tri = np.repeat(np.arange(11), [1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1])
    with pytest.raises(InputError, match="bimodal"):
        threshold_intermodes(tri, nbins=11, max_iter=100)


# --- segment_nuclei -----------------------------------------------------------------------------

def test_segment_touching_and_overlapping_balls():
    r = 9
    centres = [
        (24, 24, 20), (24, 24, 35),  # overlap: centres 15 apart, one dumbbell-shaped blob
        (24, 60, 24), (24, 60, 42),  # touch: centres 2r apart
        (24, 40, 70),                # alone
        (40, 78, 78),                # alone, another plane
    ]
    truth = balls((56, 96, 96), centres, r)
    assert ndi.label(truth > 0)[1] == 4  # the pairs really are single connected blobs
    rng = np.random.default_rng(0)
    vol = ndi.gaussian_filter((truth > 0).astype(np.float32) * 100 + 10, 1.0)
    vol += rng.normal(0, 3, vol.shape).astype(np.float32)

    labels = segment_nuclei(vol, min_distance=5, min_size=100)
    assert labels.dtype == np.int32
    assert labels.max() == len(centres)
    assert set(np.unique(labels)) == set(range(len(centres) + 1))
    score = seg_score(truth, labels)
    assert score > 0.8

    summary = segmentation_summary(labels)
    assert summary["n_objects"] == len(centres)
    assert summary["median_volume"] == pytest.approx(4 / 3 * np.pi * r**3, rel=0.2)


def test_segment_sampling_and_min_size():
    truth = balls((32, 32, 32), [(16, 16, 16)], 8)
    vol = (truth > 0).astype(np.float32)
    vol[2, 2, 2] = 1  # a one-voxel speck
    labels = segment_nuclei(vol, threshold=0.5, sampling=(1.0, 1.0, 1.0), min_size=10)
    assert labels.max() == 1
    assert labels[2, 2, 2] == 0
    assert seg_score(truth, labels) == pytest.approx(1.0)
    # anisotropic sampling still gives one object for one ball
    assert segment_nuclei(vol, threshold=0.5, sampling=(2.0, 1.0, 1.0), min_size=10).max() == 1


def test_segment_separate_blobs_keep_their_seeds():
    # two small balls closer than min_distance but not touching stay two objects
    truth = balls((16, 16, 24), [(8, 8, 7), (8, 8, 15)], 3)
    assert ndi.label(truth > 0)[1] == 2
    labels = segment_nuclei((truth > 0).astype(np.float32), threshold=0.5, min_distance=10, min_size=1)
    assert labels.max() == 2
    assert seg_score(truth, labels) == pytest.approx(1.0)


def test_segment_fills_holes():
    truth = balls((32, 32, 32), [(16, 16, 16)], 10)
    vol = (truth > 0).astype(np.float32)
    vol[14:19, 14:19, 14:19] = 0  # dark nucleolus inside the nucleus
    labels = segment_nuclei(vol, threshold=0.5)
    assert labels.max() == 1
    assert np.array_equal(labels > 0, truth > 0)


def test_segment_empty_and_bad_input():
    assert segment_nuclei(np.zeros((8, 8, 8)), threshold=0.5).max() == 0
    with pytest.raises(InputError, match="3D"):
        segment_nuclei(np.zeros((8, 8)))
    with pytest.raises(InputError, match="sampling"):
        segment_nuclei(np.zeros((8, 8, 8)), threshold=0.5, sampling=(1, 1))
    with pytest.raises(InputError, match="min_distance"):
        segment_nuclei(np.zeros((8, 8, 8)), threshold=0.5, min_distance=0)


def test_segmentation_summary_empty_and_bad():
    s = segmentation_summary(np.zeros((3, 3), np.int32))
    assert s["n_objects"] == 0 and np.isnan(s["mean_volume"])
    with pytest.raises(InputError, match="integers"):
        segmentation_summary(np.zeros(3))
    with pytest.raises(InputError, match="non-negative"):
        segmentation_summary(np.array([-1, 0, 1]))
