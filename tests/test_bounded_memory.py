"""Stages read bounded pieces of a volume: TIFF export slabs and the planes the patches stage samples
are capped by a byte budget, not by the size of the volume (peak RSS figures: benchmarks/stage_memory.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import isonet.stages.patches as patches_module
import isonet.storage.tiff as tiff_module
from isonet.stages.patches import patches_stage
from isonet.stages.psf import psf_stage
from isonet.storage import create_ome_zarr, export_tiff, open_volume

VS = (0.8, 0.2, 0.2)


class RecordingArray:
    """A numpy-sliceable array that records how many z-planes each read takes."""

    def __init__(self, data: np.ndarray, chunks):
        self.data, self.chunks, self.reads = data, chunks, []
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, selection):
        block = self.data[selection]
        self.reads.append(block.shape[0])
        return block


@pytest.mark.parametrize("budget_planes, chunk_z, slab", [(7, 3, 6), (2, 3, 2), (0, 3, 1), (100, 3, 12)])
def test_export_tiff_slabs_fit_the_budget(tmp_path, monkeypatch, budget_planes, chunk_z, slab):
    data = np.random.default_rng(1).integers(0, 900, (12, 10, 8), dtype=np.uint16)
    monkeypatch.setattr(tiff_module, "EXPORT_SLAB_BYTES", budget_planes * 10 * 8 * 2)
    array = RecordingArray(data, (chunk_z, 10, 8))
    out = export_tiff(array, tmp_path / "o.tif", VS)
    assert max(array.reads) == slab and sum(array.reads) == 12
    volume, _, close = open_volume(out)
    np.testing.assert_array_equal(np.asarray(volume[:]), data)
    close()


def test_patches_reads_fewer_planes_when_they_exceed_the_budget(tmp_path, monkeypatch):
    psf_stage(tmp_path / "psf.npz", tmp_path / "psf.json", "gaussian", {"sigma_xy": 0.8, "sigma_z": 1.5,
                                                                         "shape": [7, 5, 5]})
    rng = np.random.default_rng(0)
    _, a = create_ome_zarr(tmp_path / "in.zarr", (20, 40, 40), np.float32, (4, 40, 40), VS)
    a[:] = rng.random((20, 40, 40), dtype=np.float32)
    settings = dict(n_patches=40, patch_size=16, camera="none")
    meta = patches_stage(tmp_path / "in.zarr", tmp_path / "psf.npz", tmp_path / "all.npz", **settings)
    assert meta["planes"] == 20
    monkeypatch.setattr(patches_module, "PLANE_BUDGET_VOXELS", 5 * 40 * 40)
    meta = patches_stage(tmp_path / "in.zarr", tmp_path / "psf.npz", tmp_path / "five.npz", **settings)
    assert meta["planes"] == 5
    assert sorted(meta["training_planes"] + meta["validation_planes"]) == [0, 5, 10, 14, 19]
    monkeypatch.setattr(patches_module, "PLANE_BUDGET_VOXELS", 10)  # smaller than one plane: still two
    assert patches_stage(tmp_path / "in.zarr", tmp_path / "psf.npz", tmp_path / "two.npz", **settings)["planes"] == 2
