"""Stage ``psf``: the acquisition PSF, its lateral rotation and the training kernel, with parameters."""

from __future__ import annotations

import logging

import numpy as np

from isonet import psf as psf_models
from isonet.errors import InputError
from isonet.stages.common import check_output_path
from isonet.storage import atomic_path, open_volume, write_json

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


def psf_stage(out_npz, out_json, kind: str = "gaussian", params: dict | None = None, mode: str = "full",
              measured_path=None) -> dict:
    """Build ``h``, ``h_rot``, ``h_iso`` (and ``h_split`` in split mode) and the 2D training kernel.

    Writes ``out_npz`` (arrays ``psf``, ``psf_rot``, ``psf_iso``, ``psf_train``, ``kernel``) and
    ``out_json`` (kind, parameters, mode, FWHMs, the flips that commute with the kernel).
    ``psf_train`` is ``h_rot`` in ``full`` mode and ``h_split`` in ``split`` mode; ``kernel`` is
    its projection onto the lateral plane, what the patches stage blurs with.
    """
    if mode not in PSF_MODES:
        raise InputError(f"psf_mode must be one of {', '.join(PSF_MODES)}, got {mode!r}")
    for out in (out_npz, out_json):
        check_output_path(out, [measured_path] if measured_path else [])
    params = dict(params or {})
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
    with atomic_path(out_npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, psf=h, psf_rot=h_rot, psf_iso=h_iso, psf_train=h_train, kernel=kernel)
    write_json(out_json, info)
    logger.info("psf: %s (%s mode), FWHM z/y/x %s voxels, flips %s", kind, mode, info["fwhm_voxels"], flips)
    return info
