"""Stage ``patches``: training pairs from the lateral planes of the converted volume."""

from __future__ import annotations

import json
import logging

import numpy as np

from isonet.patches import add_camera_noise, fit_normalization, sample_training_pairs
from isonet.storage import atomic_path, read_ome_zarr
from isonet.stages.common import axial_factor

logger = logging.getLogger(__name__)


def patches_stage(
    input_zarr,
    psf_npz,
    out_npz,
    subsample: int | None = None,
    n_patches: int = 4000,
    patch_size: int = 64,
    foreground_percentile: float = 90.0,
    foreground_fraction: float = 0.8,
    norm_percentiles=(1.0, 99.8),
    max_planes: int = 256,
    seed: int = 0,
    camera_noise: dict | None = None,
) -> dict:
    """Sample ``n_patches`` (input, target) pairs from up to ``max_planes`` lateral planes.

    The normalisation percentiles are computed over the sampled planes and saved with the patches
    (and later with the model) so prediction normalises exactly as training did. Patches centred
    on a value above the ``foreground_percentile`` of the normalised planes make up
    ``foreground_fraction`` of the sample. ``camera_noise`` (``offset``, ``read_noise`` in counts,
    ``gain`` in counts per photon) adds the camera's noise to the inputs, which the blur of the
    lateral planes has averaged away (:func:`isonet.patches.add_camera_noise`).
    """
    volume, voxel_size = read_ome_zarr(input_zarr)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    with np.load(psf_npz) as f:
        kernel = f["kernel"]
    z = volume.shape[0]
    plane_idx = np.unique(np.linspace(0, z - 1, min(z, max_planes)).round().astype(int))
    planes = [np.asarray(volume[i], dtype=np.float32) for i in plane_idx]
    stride = max(1, int(np.sqrt(planes[0].size * len(planes) / 4e6)))  # a few million samples suffice
    norm = fit_normalization(np.stack([p[::stride, ::stride] for p in planes]), *norm_percentiles)
    planes = [norm.apply(p) for p in planes]
    threshold = float(np.percentile(np.stack([p[::stride, ::stride] for p in planes]), foreground_percentile))
    logger.info(
        "patches: %d planes of %s, factor %d, normalisation [%.4g, %.4g], foreground > %.3f",
        len(planes), planes[0].shape, factor, norm.low, norm.high, threshold,
    )
    X, Y = sample_training_pairs(
        planes, kernel, factor, n_patches, patch_size, threshold, foreground_fraction, seed=seed
    )
    if camera_noise:
        X = add_camera_noise(X, norm, float(camera_noise["offset"]), float(camera_noise["read_noise"]),
                             float(camera_noise.get("gain", 1.0)), seed)
        logger.info("patches: camera noise added to the inputs (%s)", camera_noise)
    meta = {
        "factor": factor, "voxel_size": list(voxel_size), "normalization": norm.to_dict(), "n_patches": n_patches,
        "patch_size": patch_size, "planes": len(planes), "foreground_threshold": threshold, "seed": seed,
        "camera_noise": camera_noise,
    }
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, X=X, Y=Y, kernel=kernel, meta=json.dumps(meta))
    logger.info("patches: %d pairs of %d² -> %s", len(X), patch_size, out_npz)
    return meta
