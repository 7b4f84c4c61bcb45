"""Stage ``psf``: the acquisition PSF, its lateral rotation and the training kernel, with parameters."""

from __future__ import annotations

import logging

import numpy as np

from isonet import psf as psf_models
from isonet.errors import InputError
from isonet.stages.common import check_output_path
from isonet.storage import atomic_path, open_hyperstack, open_volume, write_json

logger = logging.getLogger(__name__)

PSF_MODES = ("full", "split")


def build_psf(kind: str, params: dict, measured_path=None) -> np.ndarray:
    """The PSF ``h`` on the isotropic grid, from a model or a measured bead stack file."""
    if kind == "measured":
        if not measured_path:
            raise InputError("psf: kind 'measured' needs psf_file: the path of a bead stack TIFF")
        stack, _, close = open_volume(measured_path)
        try:
            return psf_models.psf_from_bead_stack(np.asarray(stack[:], dtype=np.float64), **params)
        finally:
            close()
    return psf_models.make_psf(kind, **params)


def auto_psf_params(source_path, channel: int = 0, settings: dict | None = None,
                    axes: str | None = None) -> tuple[str, dict, dict]:
    """``psf.kind: auto``: the PSF kind and parameters of one channel of ``source_path``, from its metadata.

    Reads the acquisition record of the input image (OME-TIFF, ImageJ hyperstack, OME-Zarr; a
    store written by ``isonet convert`` keeps the record of its source), overrides its values with
    ``settings`` (sample-sheet columns, :func:`isonet.psf.psf_from_acquisition`) and logs every
    value used with its source.

    Returns
    -------
    kind : str
    params : dict
    used : dict
        ``{name: {"value": ..., "source": ...}}``.
    """
    if not source_path:
        raise InputError("psf: kind 'auto' needs the input image whose metadata describe the microscope "
                         "(--from INPUT, or the sample's input in the workflow)")
    stack = open_hyperstack(source_path, axes)
    try:
        if not 0 <= int(channel) < stack.n_channels:
            raise InputError(f"{source_path}: no channel {channel}; the image has {stack.n_channels} "
                             f"(0 to {stack.n_channels - 1})")
        acquisition = stack.acquisition
    finally:
        stack.close()
    kind, params, used = psf_models.psf_from_acquisition(acquisition, int(channel), settings, where=str(source_path))
    for name, entry in used.items():
        logger.info("psf auto: %s channel %s: %s = %s (%s)", source_path, channel, name, entry["value"],
                    entry["source"])
    return kind, params, used


def psf_stage(out_npz, out_json, kind: str = "gaussian", params: dict | None = None, mode: str = "full",
              measured_path=None, source_path=None, channel: int = 0, axes: str | None = None) -> dict:
    """Build ``h``, ``h_rot``, ``h_iso`` (and ``h_split`` in split mode) and the 2D training kernel.

    Writes ``out_npz`` (arrays ``psf``, ``psf_rot``, ``psf_iso``, ``psf_train``, ``kernel``) and
    ``out_json`` (kind, parameters, mode, FWHMs, the flips that commute with the kernel).
    ``psf_train`` is ``h_rot`` in ``full`` mode and ``h_split`` in ``split`` mode; ``kernel`` is
    its projection onto the lateral plane, what the patches stage blurs with.

    ``kind="auto"`` builds the PSF of channel ``channel`` of ``source_path`` from its metadata
    (:func:`auto_psf_params`; ``params`` then holds the settings that override it) and writes
    every value used, with its source, under ``"acquisition"`` in the JSON. A measured bead
    stack (``measured_path``) wins over ``auto``.
    """
    if mode not in PSF_MODES:
        raise InputError(f"psf_mode must be one of {', '.join(PSF_MODES)}, got {mode!r}")
    inputs = [p for p in (measured_path, source_path) if p]
    for out in (out_npz, out_json):
        check_output_path(out, inputs)
    params = dict(params or {})
    requested, used = kind, None
    if kind == "auto" and measured_path:
        logger.info("psf: a measured bead stack (%s) is given; it is used instead of the metadata", measured_path)
        kind, params = "measured", {}
    elif kind == "auto":
        kind, params, used = auto_psf_params(source_path, channel, params, axes)
    h = build_psf(kind, params, measured_path)
    h_rot = psf_models.rotate_psf_to_lateral(h)
    h_iso = psf_models.isotropic_psf(h)
    h_train = psf_models.split_psf(h_rot, h_iso) if mode == "split" else h_rot
    kernel = psf_models.lateral_plane_kernel(h_train)
    flips = psf_models.commuting_flips(kernel)
    info = {
        "kind": kind, "params": params, "mode": mode, "measured_path": str(measured_path) if measured_path else None,
        "shape": list(h.shape),
        "fwhm_voxels": dict(zip("zyx", map(float, psf_models.psf_fwhm(h)))),
        "fwhm_iso_voxels": dict(zip("zyx", map(float, psf_models.psf_fwhm(h_iso)))),
        "kernel_shape": list(kernel.shape),
        "commuting_flips": list(flips),
    }
    if requested != kind:
        info["requested_kind"] = requested
    if used is not None:
        info["acquisition"] = {"source": str(source_path), "channel": int(channel), "values": used}
        info["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, psf=h, psf_rot=h_rot, psf_iso=h_iso, psf_train=h_train, kernel=kernel)
    write_json(out_json, info)
    logger.info("psf: %s (%s mode), FWHM z/y/x %s voxels, flips %s", kind, mode, info["fwhm_voxels"], flips)
    return info
