"""Point spread functions on the isotropic (lateral) voxel grid, axes ``zyx``.

Every PSF here is sampled on the isotropic grid whose voxel size is the lateral pixel size of the
acquisition: a gaussian with ``sigma_z = 8`` is 8 lateral pixels wide along z, whatever the
axial sampling of the acquired volume. All PSFs are float64, non-negative, sum to 1 and have odd
shapes with the peak in the central voxel.

Besides the microscope PSF ``h`` this module builds the kernels IsoNet's degradation model needs:
``h_rot`` (:func:`rotate_psf_to_lateral`), the isotropic PSF ``h_iso`` with ``h``'s lateral
resolution (:func:`isotropic_psf`) and the split kernel ``h_split`` with
``h_rot = h_iso * h_split`` (:func:`split_psf`).

Physical models (:func:`widefield_psf`, :func:`confocal_psf`, :func:`lightsheet_psf`) use the
`psfmodels <https://pypi.org/project/psfmodels/>`_ vectorial Gibson-Lanni model when it is
installed and a scalar Born-Wolf (Debye) model written here with numpy/scipy otherwise.
"""

from isonet.psf.acquired import psf_from_acquisition
from isonet.psf.kernels import isotropic_psf, lateral_plane_kernel, rotate_psf_to_lateral, split_psf
from isonet.psf.kinds import PSF_KINDS, make_psf
from isonet.psf.measurements import commuting_flips, fwhm, psf_fwhm
from isonet.psf.models import (
    BACKENDS,
    confocal_psf,
    gaussian_psf,
    lightsheet_psf,
    psf_from_bead_stack,
    widefield_psf,
)

__all__ = [
    "BACKENDS",
    "gaussian_psf",
    "widefield_psf",
    "confocal_psf",
    "lightsheet_psf",
    "psf_from_bead_stack",
    "rotate_psf_to_lateral",
    "lateral_plane_kernel",
    "isotropic_psf",
    "split_psf",
    "fwhm",
    "psf_fwhm",
    "commuting_flips",
    "make_psf",
    "psf_from_acquisition",
    "PSF_KINDS",
]
