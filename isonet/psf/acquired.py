"""``psf.kind: auto``: the PSF model and its parameters from what the microscope's metadata say.

:func:`psf_from_acquisition` picks the model by microscope type (confocal, light-sheet,
wide-field) and fills its parameters from an acquisition record (objective NA, immersion,
the channel's wavelengths and pinhole, the voxel size), each value overridable by a setting
(a sample-sheet column or config key). Every value used is returned with its source, so the
stage can log it and write it to the PSF's JSON; a value neither gives is a one-line
:class:`~isonet.errors.InputError` naming the setting that supplies it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from isonet.errors import InputError

# refractive index of the OME Immersion values (and common spellings)
IMMERSION_INDEX = {
    "air": 1.0, "dry": 1.0, "water": 1.333, "waterdipping": 1.333, "oil": 1.518,
    "glycerol": 1.47, "glycerin": 1.47, "silicone": 1.406, "silicon": 1.406,
}
MICROSCOPES = ("confocal", "lightsheet", "widefield")

# setting names: the sample-sheet columns (and psf.params keys) that supply each value
SETTINGS = ("microscope", "na", "immersion_ri", "excitation_nm", "emission_nm", "pinhole_au", "na_illumination",
            "voxel_size_x", "shape", "backend")


def _given(settings: Mapping[str, Any], name: str) -> Any:
    value = settings.get(name)
    if value is None or isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _positive(value: Any, name: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise InputError(f"{where}: `{name}` is {value!r}; give a positive number")
    return number


def default_psf_shape(voxel_size_um: float, na: float, emission_um: float,
                      refractive_index: float) -> tuple[int, int, int]:
    """Odd PSF shape spanning 3 lateral and 2 axial widefield FWHMs either side of the focus.

    Lateral FWHM ``0.51 lambda / NA``, axial ``0.88 lambda / (n - sqrt(n^2 - NA^2))``; at least 7
    voxels along every axis, at most 255 along z.

    Examples
    --------
    >>> default_psf_shape(0.2, 1.1, 0.51, 1.333)
    (17, 9, 9)
    """
    lateral = 0.51 * emission_um / na
    axial = 0.88 * emission_um / (refractive_index - math.sqrt(refractive_index**2 - na**2))
    half_xy = max(3, math.ceil(3 * lateral / voxel_size_um))
    half_z = min(127, max(3, math.ceil(2 * axial / voxel_size_um)))
    return (2 * half_z + 1, 2 * half_xy + 1, 2 * half_xy + 1)


def psf_from_acquisition(acquisition: Any, channel: int = 0, settings: Mapping[str, Any] | None = None,
                         where: str = "input", settings_source: str = "sample sheet") -> tuple[str, dict, dict]:
    """PSF kind and parameters of one channel, from the acquisition metadata and settings.

    Parameters
    ----------
    acquisition : isonet.storage.acquisition.Acquisition
        What the file says (``na``, ``immersion``, ``refractive_index``, ``magnification``,
        ``microscope``, ``voxel_size``, ``channel(i)`` with ``excitation_nm``, ``emission_nm``,
        ``pinhole_um``; ``source`` names the metadata, e.g. ``"OME-XML"``).
    channel : int
        Channel index.
    settings : mapping, optional
        Values that override the metadata, by setting name: ``microscope`` (confocal,
        lightsheet, widefield), ``na``, ``immersion_ri``, ``excitation_nm``, ``emission_nm``,
        ``pinhole_au`` (confocal), ``na_illumination`` (light-sheet), ``voxel_size_x`` (µm),
        ``shape`` (odd z, y, x), ``backend``. None and NaN mean "not set".
    where : str
        The input named in error messages.
    settings_source : str
        Source recorded for values taken from ``settings``.

    Returns
    -------
    kind : str
        ``"confocal"``, ``"lightsheet"`` or ``"widefield"``.
    params : dict
        Keyword arguments of that PSF model (:func:`isonet.psf.make_psf`).
    used : dict
        Every value used: ``{name: {"value": ..., "source": ...}}``.

    Raises
    ------
    InputError
        A value neither the metadata nor the settings give; the message names the setting.
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise InputError(f"{where}: psf auto takes no setting {', '.join(unknown)}; valid: {', '.join(SETTINGS)}")
    meta = getattr(acquisition, "source", None) or "file"
    meta = "file" if meta == "none" else meta
    ch = acquisition.channel(channel)
    label = f"channel {channel}" + (f" ({ch.name})" if getattr(ch, "name", None) else "")
    used: dict[str, dict] = {}

    def value(name: str, from_file: Any, what: str, fix: str, file_source: str | None = None) -> Any:
        given = _given(settings, name)
        if given is not None:
            used[name] = {"value": given, "source": settings_source}
            return given
        if from_file is None:
            raise InputError(f"{where}: no {what} in the {meta} metadata; {fix}")
        used[name] = {"value": from_file, "source": file_source or meta}
        return from_file

    column = "set the `{}` column of the sample sheet".format
    microscope = str(value("microscope", acquisition.microscope, "microscope type (acquisition mode)",
                           column("microscope") + f" ({', '.join(MICROSCOPES)})")).lower()
    if microscope not in MICROSCOPES:
        raise InputError(f"{where}: microscope {microscope!r} is not modelled; set the `microscope` column of the "
                         f"sample sheet to one of {', '.join(MICROSCOPES)}")
    na = _positive(value("na", acquisition.na, "objective NA", column("na")), "na", where)
    index = acquisition.refractive_index
    index_source = None
    immersion = getattr(acquisition, "immersion", None)
    if index is None and immersion is not None:
        index = IMMERSION_INDEX.get("".join(c for c in immersion.lower() if c.isalpha()))
        index_source = f"{meta} (immersion {immersion})"
    n = _positive(value("immersion_ri", index, "immersion refractive index", column("immersion_ri"),
                        index_source), "immersion_ri", where)
    emission = _positive(value("emission_nm", ch.emission_nm, f"emission wavelength for {label}",
                               column("emission_nm")), "emission_nm", where) / 1e3
    voxel = acquisition.voxel_size[2] if acquisition.voxel_size is not None else None
    vx = _positive(value("voxel_size_x", voxel, "voxel size", column("voxel_size_x") + " (µm)"),
                   "voxel_size_x", where)
    if na >= n:
        raise InputError(f"{where}: objective NA {na} is not below the immersion refractive index {n}; "
                         "check the `na` and `immersion_ri` columns of the sample sheet")
    given_shape = _given(settings, "shape")
    shape = tuple(int(s) for s in given_shape) if given_shape is not None else default_psf_shape(vx, na, emission, n)
    used["shape"] = {"value": list(shape), "source": settings_source if given_shape is not None else "isonet default"}
    backend = _given(settings, "backend") or "auto"
    params: dict[str, Any] = {"shape": shape, "voxel_size_um": vx, "refractive_index": n, "backend": backend}
    if microscope == "widefield":
        params.update(na=na, wavelength_um=emission)
        return "widefield", params, used
    excitation = _positive(value("excitation_nm", ch.excitation_nm, f"excitation wavelength for {label}",
                                 column("excitation_nm")), "excitation_nm", where) / 1e3
    if microscope == "confocal":
        pinhole = None
        magnification = getattr(acquisition, "magnification", None)
        if ch.pinhole_um is not None and magnification is not None:
            pinhole = float(f"{ch.pinhole_um / (magnification * 1.22 * emission / na):.6g}")
        au = value("pinhole_au", pinhole, f"pinhole size (with objective magnification) for {label}",
                   column("pinhole_au") + " (Airy units, 0 for a point pinhole)")
        au = float(au)
        if not (math.isfinite(au) and au >= 0):
            raise InputError(f"{where}: `pinhole_au` is {au!r}; give a non-negative number of Airy units")
        params.update(na=na, wavelength_excitation_um=excitation, wavelength_emission_um=emission, pinhole_au=au)
        return "confocal", params, used
    na_ill = _positive(value("na_illumination", None, "light-sheet illumination NA",
                             "set `na_illumination` in psf.params (config) or the sample sheet's psf_params"),
                       "na_illumination", where)
    params.update(na_detection=na, na_illumination=na_ill, wavelength_detection_um=emission,
                  wavelength_illumination_um=excitation)
    return "lightsheet", params, used
