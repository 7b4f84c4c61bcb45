"""Stage ``synthetic``: the embedded default dataset, a phantom with its simulated acquisition.

Writes four TIFFs with their voxel sizes: ``acquired.tif`` (the anisotropic input, z sampled every
``subsample`` lateral pixels), ``gt.tif`` (the phantom on the isotropic grid), ``iso_gt.tif``
(the phantom seen through the isotropic PSF h_iso) and ``labels.tif`` (the nuclei labels, for the
nuclei and mixed phantoms).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from isonet import psf as psf_models
from isonet.storage import export_tiff, write_json
from isonet.synthetic import make_dataset

logger = logging.getLogger(__name__)


def synthetic(
    out_dir,
    shape=(256, 256, 256),
    kind: str = "nuclei",
    seed: int = 0,
    pixel_size_um: float = 0.2,
    subsample: float = 4,
    psf_kind: str = "gaussian",
    psf_params: dict | None = None,
    photons: float = 200.0,
    read_noise: float = 2.0,
    offset: float = 100.0,
) -> dict:
    """Generate the phantom, simulate its acquisition and write the TIFFs into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Folder receiving ``acquired.tif``, ``gt.tif``, ``iso_gt.tif``, ``labels.tif`` and ``synthetic.json``.
    shape : (z, y, x)
        Phantom shape on the isotropic grid.
    kind : {"nuclei", "membranes", "both"}
    pixel_size_um : float
        Isotropic voxel size of the phantom; the acquisition has voxel size
        ``(subsample * pixel_size_um, pixel_size_um, pixel_size_um)``.
    subsample : int or float
        Axial sampling step σ in isotropic voxels, not necessarily an integer (4.5: acquired plane
        ``k`` at ``z = 4.5 k`` voxels).
    psf_kind, psf_params
        Acquisition PSF, as for :func:`isonet.psf.make_psf` (gaussian σ in isotropic voxels).
    photons, read_noise, offset : float
        Expected photon count at the brightest voxel, camera read noise (counts) and offset.
    """
    out_dir = Path(out_dir)
    params = dict(psf_params or {"sigma_xy": 2.0, "sigma_z": 8.0})
    if psf_kind != "gaussian":
        params.setdefault("voxel_size_um", pixel_size_um)
    h = psf_models.make_psf(psf_kind, **params)
    h_iso = psf_models.isotropic_psf(h)
    logger.info("synthetic: %s phantom %s, PSF %s %s, subsample %s, seed %d", kind, shape, psf_kind, params, subsample, seed)
    ds = make_dataset(kind, tuple(shape), h, h_iso, subsample, seed=seed, photons=photons, read_noise=read_noise, offset=offset)
    subsample = ds.subsample  # an int when integral
    iso_vs = (pixel_size_um,) * 3
    # z size to 12 digits: 0.2 * 4.5 is 0.9, not 0.9000000000000001
    acq_vs = (float(f"{pixel_size_um * subsample:.12g}"), pixel_size_um, pixel_size_um)
    export_tiff(ds.acquired, out_dir / "acquired.tif", acq_vs)
    export_tiff(ds.gt.astype(np.float32), out_dir / "gt.tif", iso_vs)
    export_tiff(ds.iso_gt.astype(np.float32), out_dir / "iso_gt.tif", iso_vs)
    labels = ds.labels if ds.labels is not None else np.zeros(ds.gt.shape, np.uint16)
    export_tiff(labels.astype(np.uint16), out_dir / "labels.tif", iso_vs)
    summary = {
        "kind": kind, "shape": list(shape), "seed": seed, "pixel_size_um": pixel_size_um, "subsample": subsample,
        "psf_kind": psf_kind, "psf_params": params, "photons": photons, "read_noise": read_noise, "offset": offset,
        "acquired_shape": list(ds.acquired.shape), "n_nuclei": int(labels.max()),
    }
    write_json(out_dir / "synthetic.json", summary)
    logger.info("synthetic: acquired %s, %d nuclei -> %s", ds.acquired.shape, summary["n_nuclei"], out_dir)
    return summary
