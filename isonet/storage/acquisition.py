"""What the microscope's metadata says about an acquisition: optics, channels, sampling.

:class:`Acquisition` is a typed record of the values the PSF and the time-lapse output need:
objective NA and immersion, the microscope type (acquisition mode), per channel the name,
excitation and emission wavelengths and pinhole, the voxel size and the time step. It is read
from OME-XML (:func:`acquisition_from_ome_xml`) or ImageJ hyperstack metadata
(:func:`acquisition_from_imagej`) and stored as JSON in the ``isonet.acquisition`` attribute of
a converted OME-Zarr (:meth:`Acquisition.to_dict`, :meth:`Acquisition.from_dict`). Every field
is None when the file does not say.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET

from isonet.storage.voxels import _length_in_um

# OME AcquisitionMode values, by the microscope type isonet models
_MODES = {
    "confocal": ("laserscanningconfocalmicroscopy", "spinningdiskconfocal", "slitscanconfocal",
                 "sweptfieldconfocal", "confocal"),
    "lightsheet": ("spim", "lightsheet", "selectiveplaneillumination", "lightsheetfluorescencemicroscopy"),
    "widefield": ("widefield", "widefieldmicroscopy", "epifluorescence"),
}

# time units of OME-XML and ImageJ, in seconds
_TIME_IN_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3,
              "µs": 1e-6, "us": 1e-6, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def microscope_of(mode: str | None) -> str | None:
    """The microscope type (``"confocal"``, ``"lightsheet"``, ``"widefield"``) of an acquisition mode.

    Examples
    --------
    >>> microscope_of("LaserScanningConfocalMicroscopy"), microscope_of("SPIM"), microscope_of("PALM")
    ('confocal', 'lightsheet', None)
    """
    if mode is None:
        return None
    key = "".join(ch for ch in str(mode).lower() if ch.isalnum())
    return next((name for name, modes in _MODES.items() if key in modes), None)


@dataclasses.dataclass(frozen=True)
class ChannelInfo:
    """One channel: its name, wavelengths (nm), pinhole and acquisition mode, as the file says."""

    name: str | None = None
    excitation_nm: float | None = None
    emission_nm: float | None = None
    pinhole_um: float | None = None
    acquisition_mode: str | None = None


@dataclasses.dataclass(frozen=True)
class Acquisition:
    """Acquisition metadata of one image; None wherever the file does not say.

    Attributes
    ----------
    channels : tuple of ChannelInfo
        One per channel of the file, in file order.
    na : float or None
        Objective numerical aperture (``LensNA``).
    immersion : str or None
        Immersion medium as written (``Oil``, ``Water``, ...).
    refractive_index : float or None
        Of the medium (OME ``ObjectiveSettings/@RefractiveIndex``).
    magnification : float or None
        Objective nominal magnification (to express a pinhole in Airy units).
    microscope : str or None
        ``"confocal"``, ``"lightsheet"`` or ``"widefield"`` (from the acquisition mode).
    voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in µm.
    time_increment_s : float or None
        Time between time points, seconds.
    source : str
        Where the record comes from (``"OME-XML"``, ``"ImageJ metadata"``, ``"none"``).
    """

    channels: tuple[ChannelInfo, ...] = ()
    na: float | None = None
    immersion: str | None = None
    refractive_index: float | None = None
    magnification: float | None = None
    microscope: str | None = None
    voxel_size: tuple[float, float, float] | None = None
    time_increment_s: float | None = None
    source: str = "none"

    def channel(self, index: int) -> ChannelInfo:
        """Channel ``index``; an empty record when the file lists fewer channels."""
        return self.channels[index] if 0 <= index < len(self.channels) else ChannelInfo()

    def channel_names(self, n: int) -> list[str]:
        """Names of channels ``0 .. n-1``: the file's, else ``"channel <i>"``."""
        return [self.channel(i).name or f"channel {i}" for i in range(n)]

    def to_dict(self) -> dict:
        """JSON-serializable form (:meth:`from_dict` reads it back)."""
        out = dataclasses.asdict(self)
        out["voxel_size"] = None if self.voxel_size is None else list(self.voxel_size)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Acquisition:
        """The record :meth:`to_dict` wrote.

        Examples
        --------
        >>> a = Acquisition(channels=(ChannelInfo("GFP", 488.0, 510.0),), na=1.2, voxel_size=(1.0, 0.2, 0.2))
        >>> Acquisition.from_dict(a.to_dict()) == a
        True
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(data).items() if k in fields}
        channel_fields = {f.name for f in dataclasses.fields(ChannelInfo)}
        values["channels"] = tuple(ChannelInfo(**{k: v for k, v in dict(c).items() if k in channel_fields})
                                   for c in values.get("channels") or ())
        if values.get("voxel_size") is not None:
            values["voxel_size"] = tuple(float(v) for v in values["voxel_size"])
        return cls(**values)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if element is None else [el for el in element if _local(el.tag) == name]


def _first(element: ET.Element | None, name: str) -> ET.Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _nm(element: ET.Element, name: str) -> float | None:
    value = _number(element.get(name))
    if value is None:
        return None
    um = _length_in_um(value, element.get(f"{name}Unit", "nm"))
    return None if um is None else float(f"{um * 1e3:.10g}")


def _um(element: ET.Element, name: str) -> float | None:
    value = _number(element.get(name))
    return None if value is None else _length_in_um(value, element.get(f"{name}Unit", "µm"))


def _seconds(value: float | None, unit: str | None) -> float | None:
    factor = _TIME_IN_S.get((unit or "s").strip().lower())
    return None if value is None or factor is None else float(f"{value * factor:.10g}")


def acquisition_from_ome_xml(ome_xml: str, image: int = 0) -> Acquisition:
    """The acquisition record of image ``image`` of an OME-XML document.

    Reads ``Pixels`` (physical sizes, ``TimeIncrement``, ``Channel`` names, wavelengths,
    ``PinholeSize``, ``AcquisitionMode``), the ``ObjectiveSettings`` of the image and the
    ``Objective`` of its instrument (``LensNA``, ``Immersion``, ``NominalMagnification``).

    Parameters
    ----------
    ome_xml : str
        The OME-XML text (an OME-TIFF's ImageDescription, an OME-Zarr's ``OME/METADATA.ome.xml``).
    image : int
        Index of the ``Image`` element.

    Returns
    -------
    acquisition : Acquisition
        Fields the document lacks are None; an unparsable document gives an empty record.

    Examples
    --------
    >>> xml = ('<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
    ...        '<Pixels PhysicalSizeZ="1" PhysicalSizeY="0.2" PhysicalSizeX="0.2" TimeIncrement="30">'
    ...        '<Channel Name="GFP" EmissionWavelength="510" AcquisitionMode="SPIM"/></Pixels></Image></OME>')
    >>> a = acquisition_from_ome_xml(xml)
    >>> a.microscope, a.voxel_size, a.time_increment_s, a.channels[0].emission_nm
    ('lightsheet', (1.0, 0.2, 0.2), 30.0, 510.0)
    """
    try:
        root = ET.fromstring(ome_xml)
    except ET.ParseError:
        return Acquisition()
    images = _children(root, "Image")
    if not images:
        return Acquisition()
    img = images[min(image, len(images) - 1)]
    pixels = _first(img, "Pixels")
    channels: list[ChannelInfo] = []
    voxel_size = time_increment = None
    if pixels is not None:
        sizes = [_um(pixels, f"PhysicalSize{ax}") for ax in "ZYX"]
        voxel_size = tuple(sizes) if None not in sizes else None
        time_increment = _seconds(_number(pixels.get("TimeIncrement")), pixels.get("TimeIncrementUnit"))
        for ch in _children(pixels, "Channel"):
            channels.append(ChannelInfo(
                name=ch.get("Name") or None,
                excitation_nm=_nm(ch, "ExcitationWavelength"),
                emission_nm=_nm(ch, "EmissionWavelength"),
                pinhole_um=_um(ch, "PinholeSize"),
                acquisition_mode=ch.get("AcquisitionMode") or None,
            ))
    settings = _first(img, "ObjectiveSettings")
    objective = None
    instruments = _children(root, "Instrument")
    wanted = None if settings is None else settings.get("ID")
    for instrument in instruments:
        for candidate in _children(instrument, "Objective"):
            if wanted is None or candidate.get("ID") == wanted:
                objective = candidate
                break
        if objective is not None:
            break
    modes = {microscope_of(c.acquisition_mode) for c in channels} - {None}
    return Acquisition(
        channels=tuple(channels),
        na=None if objective is None else _number(objective.get("LensNA")),
        immersion=None if objective is None else objective.get("Immersion") or None,
        refractive_index=None if settings is None else _number(settings.get("RefractiveIndex")),
        magnification=None if objective is None else _number(objective.get("NominalMagnification")),
        microscope=modes.pop() if len(modes) == 1 else None,
        voxel_size=voxel_size,  # type: ignore[arg-type]
        time_increment_s=time_increment,
        source="OME-XML",
    )


def acquisition_from_imagej(metadata: dict, voxel_size: tuple[float, float, float] | None,
                            channels: int) -> Acquisition:
    """The acquisition record of an ImageJ hyperstack: voxel size, time step, channel names.

    ImageJ metadata carry no optics; ``finterval`` (with ``tunit``) gives the time step and
    ``Labels`` (one per plane, when present) the channel names of the first time point and slice.

    Parameters
    ----------
    metadata : dict
        ``tifffile.TiffFile.imagej_metadata``.
    voxel_size : tuple of 3 float or None
        ``(z, y, x)`` in µm as read from ``spacing`` and the resolution tags.
    channels : int
        Number of channels of the hyperstack.

    Returns
    -------
    acquisition : Acquisition

    Examples
    --------
    >>> acquisition_from_imagej({"finterval": 2.0, "tunit": "min"}, (1.0, 0.2, 0.2), 2).time_increment_s
    120.0
    """
    time_increment = _seconds(_number(metadata.get("finterval")), metadata.get("tunit") or "s")
    return Acquisition(channels=tuple(ChannelInfo() for _ in range(channels)), voxel_size=voxel_size,
                       time_increment_s=time_increment, source="ImageJ metadata")

