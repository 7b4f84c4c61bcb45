"""Stage ``assess``: evidence that needs no ground truth — resolution, re-acquisition, uncertainty.

Writes ``quality.json`` (and an HTML table and an uncertainty orthoview for the report) with, for
one dataset:

* the resolution (FWHM, µm) along z, y and x of the input (cubic-upsampled to the restored grid,
  read lazily) and of the restoration, and their isotropy ratios
  (:func:`isonet.quality.resolution_per_axis`, a bounded sample of blocks);
* the re-acquisition check of the restoration and, as references, of the cubic-upsampled input
  and of iso-GT when given (:func:`isonet.quality.reacquisition_scores`, slab by slab), judged
  against the camera noise estimated from 16 acquired planes (:func:`isonet.camera.estimate_camera`);
* a summary of the per-voxel disagreement written by ``isonet predict --uncertainty``.
"""

from __future__ import annotations

import logging

import numpy as np

from isonet.camera import estimate_camera
from isonet.errors import InputError
from isonet.figures import orthogonal_planes, orthoview_figure, plane_indices, quality_html
from isonet.quality import (
    CubicUpsampledView,
    axial_forward_kernel,
    disagreement_summary,
    lateral_kernel,
    reacquisition_scores,
    resolution_per_axis,
)
from isonet.stages.common import axial_factor, check_output_path
from isonet.stages.report import _save_png
from isonet.storage import open_volume, read_ome_zarr, write_json, write_text

logger = logging.getLogger(__name__)

HOW_TO_READ = {
    "resolution": "FWHM (µm) of the gaussian blur that best explains each axis's spectrum above the noise; "
                  "smaller is sharper, and the restoration should bring z down towards x and y.",
    "isotropy_ratio": "lateral over axial FWHM: near 1 the volume is equally sharp in every direction, "
                      "the acquisition is typically far below 1.",
    "reacquisition": "the restoration blurred again by the axial part of the PSF and sampled at the acquired "
                     "planes away from the stack's ends, compared with what the microscope measured: "
                     "fresh_psnr_db is the PSNR expected against a fresh acquisition (camera noise plus the "
                     "structural discrepancy within the optics' band; copying the acquired noise cannot raise "
                     "it), chi_square the measured residual over the camera's noise (about 1: consistent, "
                     "well above 1: mismatch, below 1: follows the noise). It should score at least as well "
                     "as the cubic-upsampled input and close to iso-GT; planes with low scores are where the "
                     "restoration disagrees with the data.",
    "uncertainty": "per-voxel |xz - yz| of the two axial passes in the input's intensity units: bright where "
                   "the network is unsure; 'relative' divides by the restoration's 1-99.8 percentile range.",
}


def assess_stage(input_zarr, restored_zarr, psf_npz, out_json, out_html=None, uncertainty_zarr=None,
                 uncertainty_png=None, iso_gt=None, subsample: int | None = None, block: int = 128,
                 n_blocks: int = 16, title: str | None = None) -> dict:
    """Measure a restoration without ground truth; write ``quality.json`` (+ HTML, + PNG).

    Parameters
    ----------
    input_zarr, restored_zarr : path
        The converted input and the restoration (OME-Zarr).
    psf_npz : path
        The ``psf`` stage's arrays (``psf``: the acquisition PSF on the isotropic grid).
    out_json : path
        ``quality.json`` to write.
    out_html : path, optional
        The same as an HTML page for the report.
    uncertainty_zarr : path, optional
        ``isonet predict --uncertainty`` output: summarised, and drawn into ``uncertainty_png``.
    uncertainty_png : path, optional
        Orthogonal views of restoration and uncertainty through the volume's middle.
    iso_gt : path, optional
        Isotropic ground truth (simulations): its re-acquisition score is the reference.
    subsample : int, optional
        Axial factor; default from the input's voxel sizes.
    block, n_blocks : int
        Sample of blocks for the resolution estimate and the uncertainty summary.
    title : str, optional

    Returns
    -------
    quality : dict
        What ``quality.json`` holds.
    """
    inputs = [p for p in (input_zarr, restored_zarr, psf_npz, uncertainty_zarr, iso_gt) if p]
    for out in (out_json, out_html, uncertainty_png):
        if out:
            check_output_path(out, inputs)
    if uncertainty_png and not uncertainty_zarr:
        raise InputError("assess: an uncertainty orthoview needs --uncertainty, the store from isonet predict --uncertainty")
    source, voxel_size = read_ome_zarr(input_zarr)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    restored, restored_vs = read_ome_zarr(restored_zarr)
    upsampled = CubicUpsampledView(source, factor)
    if tuple(restored.shape) != upsampled.shape:
        raise InputError(
            f"{restored_zarr}: shape {tuple(restored.shape)} is not the input's isotropic grid {upsampled.shape} "
            f"(factor {factor}); assess the restoration of this input"
        )
    iso_vs = restored_vs or (voxel_size[0] / factor, voxel_size[1], voxel_size[2])
    try:
        psf = np.load(psf_npz)["psf"]
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"{psf_npz}: cannot read the PSF array 'psf' ({err}); give the psf stage's psf.npz") from None

    quality: dict = {"factor": factor, "voxel_size_um": list(iso_vs), "how_to_read": HOW_TO_READ}
    resolution = {
        "input": resolution_per_axis(upsampled, iso_vs, upsampled_factor=factor, block=block, n_blocks=n_blocks),
        "restored": resolution_per_axis(restored, iso_vs, block=block, n_blocks=n_blocks),
    }
    quality["resolution"] = resolution
    quality["isotropy_ratio"] = {k: v["isotropy_ratio"] for k, v in resolution.items()}
    for k, v in resolution.items():
        logger.info("assess: %s FWHM z/y/x %s µm, isotropy ratio %s", k,
                    [None if v["fwhm_um"][a] is None else round(v["fwhm_um"][a], 3) for a in "zyx"],
                    None if v["isotropy_ratio"] is None else round(v["isotropy_ratio"], 3))

    kernel, lateral = axial_forward_kernel(psf), lateral_kernel(psf)
    picks = np.unique(np.linspace(0, source.shape[0] - 1, min(16, source.shape[0])).round().astype(int))
    try:
        camera = estimate_camera([np.asarray(source[int(k)], np.float32) for k in picks])
    except ValueError:  # planes too small to measure the noise
        camera = None
    quality["camera"] = None if camera is None else camera.to_dict()

    def check(volume):
        return reacquisition_scores(volume, source, kernel, factor, camera=camera, lateral=lateral)

    checks = {"restored": check(restored), "cubic": check(upsampled)}
    if iso_gt:
        reference, _, close = open_volume(iso_gt)
        try:
            if tuple(reference.shape[1:]) != tuple(restored.shape[1:]) or reference.shape[0] < restored.shape[0]:
                raise InputError(f"{iso_gt}: iso-GT of shape {tuple(reference.shape)} does not cover the restored grid "
                                 f"{tuple(restored.shape)}")
            checks["iso_gt"] = check(reference)
            resolution["iso_gt"] = resolution_per_axis(reference, iso_vs, block=block, n_blocks=n_blocks)
            quality["isotropy_ratio"]["iso_gt"] = resolution["iso_gt"]["isotropy_ratio"]
        finally:
            close()
    quality["reacquisition"] = checks
    for k, v in checks.items():
        logger.info("assess: re-acquisition of %s: fresh %s dB, measured %.2f dB, chi-square %s, correlation %.4f, "
                    "worst planes %s", k, None if v["fresh_psnr_db"] is None else round(v["fresh_psnr_db"], 2),
                    v["psnr_db"], None if v["chi_square"] is None else round(v["chi_square"], 3), v["correlation"],
                    v["worst_planes"])

    if uncertainty_zarr:
        spread, _ = read_ome_zarr(uncertainty_zarr)
        if tuple(spread.shape) != tuple(restored.shape):
            raise InputError(f"{uncertainty_zarr}: shape {tuple(spread.shape)} differs from the restoration's "
                             f"{tuple(restored.shape)}; use the uncertainty written with it")
        quality["uncertainty"] = disagreement_summary(spread, restored, block=block, n_blocks=n_blocks)
        logger.info("assess: uncertainty %s", quality["uncertainty"])
        if uncertainty_png:
            indices = plane_indices(restored.shape, iso_vs)
            rows = [("restored", orthogonal_planes(restored, indices), iso_vs),
                    ("uncertainty", orthogonal_planes(spread, indices), iso_vs)]
            _save_png(orthoview_figure(rows, title=f"{title} uncertainty" if title else "uncertainty"),
                      uncertainty_png, 120)
    write_json(out_json, quality)
    if out_html:
        write_text(out_html, quality_html(quality, title=title))
    logger.info("assess: wrote %s", out_json)
    return quality
