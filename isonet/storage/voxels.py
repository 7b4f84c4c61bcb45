"""Voxel sizes and length units: parsing what files say, validating what users give."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from isonet.errors import InputError

# length units found in OME-XML, NGFF and ImageJ metadata, in micrometres
_UNIT_IN_UM = {
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "å": 1e-4, "angstrom": 1e-4, "ångström": 1e-4,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "m": 1e6, "meter": 1e6, "metre": 1e6,
}



def _one_line(text: object) -> str:
    """Collapse whitespace (newlines included) so an error message stays on one line."""
    return " ".join(str(text).split())


def _length_in_um(value: float, unit: str | None) -> float | None:
    """``value`` expressed in ``unit`` converted to µm, or None when the unit is unknown."""
    if unit is None:
        return None
    key = unit.strip().lower().replace("\\u00b5", "µ").replace("\u03bc", "µ")
    factor = _UNIT_IN_UM.get(key)
    if factor is None:
        return None
    return float(f"{float(value) * factor:.10g}")


def _valid_voxel_size(voxel_size: Sequence[float] | None) -> tuple[float, float, float] | None:
    """``voxel_size`` as a float triple when it has three positive finite entries, else None."""
    if voxel_size is None:
        return None
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        return None
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        return None
    return vs  # type: ignore[return-value]


def check_voxel_size(voxel_size: Sequence[float], source: str | os.PathLike) -> tuple[float, float, float]:
    """Validate a voxel size given by the user.

    Parameters
    ----------
    voxel_size : sequence of 3 float
        ``(z, y, x)`` in µm.
    source : str or path
        What the voxel size belongs to, named in the error message.

    Returns
    -------
    voxel_size : tuple of 3 float

    Raises
    ------
    InputError
        Unless ``voxel_size`` holds three positive finite numbers.

    Examples
    --------
    >>> check_voxel_size([2, 0.5, 0.5], "a.tif")
    (2.0, 0.5, 0.5)
    """
    vs = _valid_voxel_size(voxel_size)
    if vs is None:
        raise InputError(
            f"{source}: voxel_size {_one_line(repr(voxel_size))} is not valid; "
            "give three positive numbers [z, y, x] in µm"
        )
    return vs


def _triple(value: int | Sequence[int], what: str) -> tuple[int, int, int]:
    t = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)  # type: ignore[arg-type]
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"{what} must be a positive int or three positive ints (z, y, x), got {value!r}")
    return t  # type: ignore[return-value]
