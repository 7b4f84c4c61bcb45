"""Stage ``patches``: training pairs from the lateral planes of the converted volume."""

from __future__ import annotations

import json
import logging
import math
import zipfile
from pathlib import Path

import numpy as np

from isonet.camera import Camera, estimate_camera
from isonet.errors import InputError
from isonet.patches import fit_normalization, pairs_from_planes
from isonet.stages.common import axial_factor, check_output_path
from isonet.storage import atomic_path, image_axes, read_ome_zarr, read_planes

logger = logging.getLogger(__name__)

# voxels of the lateral planes read at once (float32: 64 MiB); fewer planes are sampled beyond it
PLANE_BUDGET_VOXELS = 2**24


def _check_settings(n_patches, patch_size, foreground_percentile, foreground_fraction, norm_percentiles,
                    max_planes) -> None:
    """The stage's settings, as the workflow's config schema states them (for direct CLI use)."""

    def bad(key: str, value, expected: str) -> InputError:
        return InputError(f"patches.{key}: {value!r} is not valid; give {expected}")

    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(n_patches, int) or n_patches < 1:
        raise bad("n_patches", n_patches, "a positive integer")
    if not isinstance(patch_size, int) or patch_size < 8 or patch_size % 4:
        raise bad("patch_size", patch_size, "a multiple of 4, at least 8")
    if not number(foreground_percentile) or not 0 <= foreground_percentile <= 100:
        raise bad("foreground_percentile", foreground_percentile, "a number from 0 to 100")
    if not number(foreground_fraction) or not 0 <= foreground_fraction <= 1:
        raise bad("foreground_fraction", foreground_fraction, "a number from 0 to 1")
    if (len(norm_percentiles) != 2 or not all(number(p) and 0 <= p <= 100 for p in norm_percentiles)
            or not norm_percentiles[0] < norm_percentiles[1]):
        raise bad("norm_percentiles", list(norm_percentiles), "[low, high] with 0 <= low < high <= 100")
    if not isinstance(max_planes, int) or max_planes < 1:
        raise bad("max_planes", max_planes, "a positive integer")


def load_kernel(psf_npz) -> np.ndarray:
    """The 2D training kernel (``kernel``) of a file written by the ``psf`` stage.

    Raises
    ------
    InputError
        Missing or unreadable file, no ``kernel`` array, or a kernel that is not a 2D array of
        finite non-negative numbers with a positive sum.
    """
    path = Path(psf_npz)
    if not path.is_file():
        raise InputError(f"{path}: PSF file not found; run `isonet psf` first or fix the path")
    try:
        with np.load(path, allow_pickle=False) as f:
            kernel = f["kernel"]
    except KeyError:
        raise InputError(f"{path}: holds no 'kernel' array; write it again with `isonet psf`") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(
            f"{path}: not a readable PSF file ({type(err).__name__}); write it again with `isonet psf`"
        ) from None
    if (kernel.ndim != 2 or kernel.size == 0 or kernel.dtype.kind not in "iuf" or not np.isfinite(kernel).all()
            or (kernel < 0).any() or not kernel.sum() > 0):
        raise InputError(
            f"{path}: 'kernel' {kernel.shape} {kernel.dtype} is not a 2D non-negative finite kernel; "
            "write it again with `isonet psf`"
        )
    return kernel


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
    subsample: float | None = None,
    n_patches: int = 4000,
    patch_size: int = 64,
    foreground_percentile: float = 90.0,
    foreground_fraction: float = 0.8,
    norm_percentiles=(1.0, 99.8),
    max_planes: int = 256,
    seed: int = 0,
    camera="auto",
    validation_fraction: float = 0.1,
    channel: int | None = None,
    timepoints=None,
) -> dict:
    """Sample training pairs from up to ``max_planes`` lateral planes, holding some planes out.

    Fewer planes are read when ``max_planes`` of them would hold more than
    ``PLANE_BUDGET_VOXELS`` voxels (at least two planes): memory depends on that budget, not on
    the depth of the volume.

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

    For a time-lapse or multi-channel input (``isonet convert`` of a TCZYX image) ``channel``
    picks the channel and ``timepoints`` the time points whose planes are sampled: a list of
    indices, or an int ``k`` for ``k`` time points spread evenly over the series (the first and
    the last included). ``max_planes`` is shared among them; the camera is estimated from this
    channel's planes only.

    Raises
    ------
    InputError
        Settings out of range; the input is not a 3D numeric OME-Zarr image with voxel sizes,
        is damaged, holds NaN or infinite values, is flat between the normalisation percentiles,
        or its planes are too small for ``patch_size`` at its axial factor; the PSF file is
        missing or damaged; the output would overwrite an input or a directory.
    """
    norm_percentiles = tuple(norm_percentiles)
    _check_settings(n_patches, patch_size, foreground_percentile, foreground_fraction, norm_percentiles,
                    max_planes)
    check_output_path(out_npz, [input_zarr, psf_npz])
    times = training_timepoints(input_zarr, channel, timepoints)
    if times is None:
        volume, voxel_size = read_ome_zarr(input_zarr)
        volumes = [volume]
    else:
        volumes = [read_ome_zarr(input_zarr, t=t, c=channel)[0] for t in times]
        volume, voxel_size = volumes[0], read_ome_zarr(input_zarr)[1]
    if voxel_size is None:
        raise InputError(
            f"{input_zarr}: plain zarr array without voxel sizes; convert it with `isonet convert --voxel-size z y x`"
        )
    if volume.ndim != 3 or np.dtype(volume.dtype).kind not in "biuf":
        raise InputError(
            f"{input_zarr}: image of shape {tuple(volume.shape)} and type {volume.dtype} is not a 3D grayscale "
            "volume; convert the input with `isonet convert`"
        )
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    z, height, width = (int(s) for s in volume.shape)
    need = patch_size + math.ceil(factor)
    if min(height, width) < need:
        raise InputError(
            f"{input_zarr}: lateral planes of {height} x {width} pixels are too small for patch_size {patch_size} "
            f"at axial factor {factor:.8g} (each side needs at least {need}); "
            "lower patches.patch_size or use a larger image"
        )
    kernel = load_kernel(psf_npz)
    budget = max(2, PLANE_BUDGET_VOXELS // (height * width))  # planes of all volumes together
    per_volume = max(1, min(max_planes, budget) // len(volumes))
    if per_volume * len(volumes) < min(z, max_planes) * len(volumes):
        logger.info("patches: %d planes of %d x %d read per volume (memory budget of %d voxels), not %d",
                    min(z, per_volume), height, width, PLANE_BUDGET_VOXELS, min(z, max_planes))
    plane_idx = np.unique(np.linspace(0, z - 1, min(z, per_volume)).round().astype(int))
    raw = [read_planes(v, i, i + 1, input_zarr)[0].astype(np.float32) for v in volumes for i in plane_idx]
    plane_idx = np.tile(plane_idx, len(volumes))
    for i, plane in zip(plane_idx, raw):
        if not np.isfinite(plane).all():
            raise InputError(
                f"{input_zarr}: contains NaN or infinite values at z={i}; fill or clip them and convert again"
            )
    stride = max(1, int(np.sqrt(raw[0].size * len(raw) / 4e6)))  # a few million samples suffice
    try:
        norm = fit_normalization(np.stack([p[::stride, ::stride] for p in raw]), *norm_percentiles)
    except ValueError as err:  # flat between the percentiles: constant or nearly so
        raise InputError(
            f"{input_zarr}: {err}; check that this is the right image, or widen patches.norm_percentiles"
        ) from None
    cam = resolve_camera(camera, raw[:: max(1, len(raw) // 16)], str(input_zarr))
    if cam is not None:
        logger.info("patches: camera (%s) gain %.4g counts/photon, offset %.4g, read noise %.4g counts",
                    cam.source, cam.gain, cam.offset, cam.read_noise)
    planes = raw  # normalised in place of the raw planes, one at a time: no second copy of them all
    for i, plane in enumerate(planes):
        planes[i] = norm.apply(plane)
    del raw
    pairs, validation, info = pairs_from_planes(
        planes, kernel, factor, n_patches, patch_size, foreground_percentile, foreground_fraction,
        validation_fraction, seed, cam, norm)
    threshold, train_idx, val_idx = info["threshold"], info["train_planes"], info["validation_planes"]
    logger.info(
        "patches: %d planes of %s (%d held out for validation), factor %.8g, normalisation [%.4g, %.4g], "
        "foreground > %.3f",
        len(planes), planes[0].shape, len(val_idx), factor, norm.low, norm.high, threshold,
    )
    arrays = {"S": pairs.samples, "offsets": pairs.offsets, "Y": pairs.targets}
    n_val = 0
    if validation is not None:
        arrays["X_val"], arrays["Y_val"] = validation
        n_val = len(validation[1])
    meta = {
        "factor": factor, "voxel_size": list(voxel_size), "normalization": norm.to_dict(), "n_patches": n_patches,
        "patch_size": patch_size, "planes": len(planes), "validation_planes": [int(plane_idx[i]) for i in val_idx],
        "training_planes": [int(plane_idx[i]) for i in train_idx], "n_validation": n_val,
        "foreground_threshold": threshold, "foreground_percentile": foreground_percentile,
        "foreground_fraction": foreground_fraction, "seed": seed, "camera": cam.to_dict() if cam else None,
    }
    if times is not None:
        meta.update(channel=channel, timepoints=times)
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, kernel=kernel, meta=json.dumps(meta))
    logger.info("patches: %d training + %d validation pairs of %d² -> %s", len(pairs), n_val, patch_size, out_npz)
    return meta


def training_timepoints(input_zarr, channel: int | None, timepoints) -> list[int] | None:
    """The time points whose planes train the channel's model; None for a 3D input without a selection.

    ``timepoints``: None (every time point of a time-lapse), a list of indices, or an int ``k``
    (``k`` time points spread evenly over the series, the first and the last included).
    """
    if channel is None and timepoints is None:
        return None
    array, _ = read_ome_zarr(input_zarr)
    axes = image_axes(input_zarr)
    n_times = int(array.shape[axes.index("t")]) if "t" in axes else 1
    if timepoints is None:
        return list(range(n_times))
    if isinstance(timepoints, int):
        if timepoints < 1:
            raise InputError(f"{input_zarr}: train_timepoints {timepoints} is not valid; give a positive count")
        return sorted({int(round(x)) for x in np.linspace(0, n_times - 1, min(timepoints, n_times))})
    chosen = [int(t) for t in timepoints]
    bad = [t for t in chosen if not 0 <= t < n_times]
    if bad or not chosen:
        raise InputError(f"{input_zarr}: time points {chosen} are not valid; the image has {n_times} (0 to {n_times - 1})")
    return chosen
