"""Stage ``patches``: training pairs from the lateral planes of the converted volume."""

from __future__ import annotations

import json
import logging

import numpy as np

from isonet.camera import Camera, estimate_camera
from isonet.errors import InputError
from isonet.patches import fit_normalization, sample_training_pairs, split_planes
from isonet.storage import atomic_path, read_ome_zarr
from isonet.stages.common import axial_factor

logger = logging.getLogger(__name__)


def resolve_camera(camera, planes, source: str) -> Camera | None:
    """The camera model from the config value: a mapping, ``"auto"`` (estimated) or ``"none"``."""
    if camera is None or camera == "none":
        return None
    if camera == "auto":
        return estimate_camera(planes)
    if isinstance(camera, dict) and {"offset", "read_noise"} <= set(camera):
        return Camera.from_dict({"gain": 1.0, "source": "config", **camera})
    raise InputError(
        f"{source}: patches.camera is {camera!r}; give auto, none or a mapping with offset, read_noise and gain"
    )


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
    camera="auto",
    validation_fraction: float = 0.1,
) -> dict:
    """Sample training pairs from up to ``max_planes`` lateral planes, holding some planes out.

    The normalisation percentiles are computed over the sampled planes and saved with the patches
    (and later with the model) so prediction normalises exactly as training did. Patches centred
    on a value above the ``foreground_percentile`` of the normalised planes make up
    ``foreground_fraction`` of the sample. A ``validation_fraction`` of the planes (spread over
    the stack) gives the validation pairs only.

    The file holds the noise-free acquired samples of each patch (``S``, with ``offsets``) and
    the targets (``Y``); training adds the camera's noise to them anew every epoch and upsamples
    (:class:`isonet.patches.TrainingPairs`). ``camera`` is ``"auto"`` (estimated from the
    planes, :func:`isonet.camera.estimate_camera`), ``"none"`` (noise-free inputs) or the
    camera's ``offset``, ``read_noise`` (counts) and ``gain`` (counts per photon).
    """
    volume, voxel_size = read_ome_zarr(input_zarr)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    with np.load(psf_npz) as f:
        kernel = f["kernel"]
    z = volume.shape[0]
    plane_idx = np.unique(np.linspace(0, z - 1, min(z, max_planes)).round().astype(int))
    raw = [np.asarray(volume[i], dtype=np.float32) for i in plane_idx]
    stride = max(1, int(np.sqrt(raw[0].size * len(raw) / 4e6)))  # a few million samples suffice
    try:
        norm = fit_normalization(np.stack([p[::stride, ::stride] for p in raw]), *norm_percentiles)
    except ValueError as err:
        raise InputError(f"{input_zarr}: {err}") from None
    cam = resolve_camera(camera, raw[:: max(1, len(raw) // 16)], str(input_zarr))
    if cam is not None:
        logger.info("patches: camera (%s) gain %.4g counts/photon, offset %.4g, read noise %.4g counts",
                    cam.source, cam.gain, cam.offset, cam.read_noise)
    planes = [norm.apply(p) for p in raw]
    del raw
    threshold = float(np.percentile(np.stack([p[::stride, ::stride] for p in planes]), foreground_percentile))
    train_idx, val_idx = split_planes(len(planes), validation_fraction)
    logger.info(
        "patches: %d planes of %s (%d held out for validation), factor %d, normalisation [%.4g, %.4g], "
        "foreground > %.3f",
        len(planes), planes[0].shape, len(val_idx), factor, norm.low, norm.high, threshold,
    )
    n_val = max(1, int(round(n_patches * validation_fraction))) if len(val_idx) else 0
    common = dict(kernel=kernel, factor=factor, patch_size=patch_size, foreground_threshold=threshold,
                  foreground_fraction=foreground_fraction, camera=cam, norm=norm)
    pairs = sample_training_pairs([planes[i] for i in train_idx], n_patches=n_patches, seed=seed, **common)
    arrays = {"S": pairs.samples, "offsets": pairs.offsets, "Y": pairs.targets}
    if n_val:
        val = sample_training_pairs([planes[i] for i in val_idx], n_patches=n_val, seed=seed + 1, **common)
        # validation inputs are degraded once, with a fixed noise draw, so losses compare across epochs
        arrays["X_val"] = val.inputs(np.arange(len(val)), np.random.default_rng([seed, 1 << 20]))
        arrays["Y_val"] = val.targets
    meta = {
        "factor": factor, "voxel_size": list(voxel_size), "normalization": norm.to_dict(), "n_patches": n_patches,
        "patch_size": patch_size, "planes": len(planes), "validation_planes": [int(plane_idx[i]) for i in val_idx],
        "training_planes": [int(plane_idx[i]) for i in train_idx], "n_validation": n_val,
        "foreground_threshold": threshold, "seed": seed, "camera": cam.to_dict() if cam else None,
    }
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, kernel=kernel, meta=json.dumps(meta))
    logger.info("patches: %d training + %d validation pairs of %d² -> %s", len(pairs), n_val, patch_size, out_npz)
    return meta
