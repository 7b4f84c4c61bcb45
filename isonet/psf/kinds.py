"""PSF kinds named in the configuration, and building one from its parameters."""

from __future__ import annotations

import inspect

import numpy as np

from isonet.errors import InputError
from isonet.psf.models import confocal_psf, gaussian_psf, lightsheet_psf, psf_from_bead_stack, widefield_psf

PSF_KINDS = {
    "gaussian": gaussian_psf,
    "confocal": confocal_psf,
    "lightsheet": lightsheet_psf,
    "widefield": widefield_psf,
    "measured": psf_from_bead_stack,
}


def make_psf(kind: str, **params) -> np.ndarray:
    """PSF of a kind named in the configuration, built from its parameters.

    Parameters
    ----------
    kind : {"gaussian", "confocal", "lightsheet", "widefield", "measured"}
        ``"gaussian"`` -> :func:`gaussian_psf`, ``"confocal"`` -> :func:`confocal_psf`,
        ``"lightsheet"`` -> :func:`lightsheet_psf`, ``"widefield"`` -> :func:`widefield_psf`, ``"measured"`` -> :func:`psf_from_bead_stack`
        (pass the bead array as ``stack=``; reading it from a file happens in the stage layer).
    **params
        Keyword arguments of that function.

    Returns
    -------
    psf : ndarray, float64, odd shape, summing to 1.

    Raises
    ------
    InputError
        For an unknown kind, or parameters the kind does not take or lacks.

    Examples
    --------
    >>> make_psf("gaussian", sigma_xy=2, sigma_z=8).shape
    (65, 17, 17)
    >>> make_psf("airy")
    Traceback (most recent call last):
    ...
    isonet.errors.InputError: unknown PSF kind 'airy'; valid kinds: gaussian, confocal, lightsheet, widefield, measured
    """
    if kind not in PSF_KINDS:
        raise InputError(f"unknown PSF kind {kind!r}; valid kinds: {', '.join(PSF_KINDS)}")
    func = PSF_KINDS[kind]
    signature = inspect.signature(func)
    valid = ", ".join(signature.parameters)
    unknown = [name for name in params if name not in signature.parameters]
    if unknown:
        raise InputError(
            f"PSF kind {kind!r} takes no parameter {', '.join(unknown)}; its parameters are: {valid}"
        )
    try:
        signature.bind(**params)
    except TypeError as e:
        raise InputError(f"PSF kind {kind!r}: {e}; its parameters are: {valid}") from None
    return func(**params)
