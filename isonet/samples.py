"""The sample sheet of the workflow: parsing, schema validation, cross-checks and per-sample settings.

The sheet (``config/samples.tsv``) is tab-separated, one row per dataset. :func:`read_sample_sheet`
turns each row into a :class:`Sample` record (typed values, empty cells left out), validated
against a JSON schema (``workflow/schemas/samples.schema.yaml``); :func:`check_samples` runs the
checks a schema cannot express (files exist, voxel size from the file's metadata, the axial
factor, ``model_from`` chains, settings given twice). Every problem is one line naming the sheet,
the row, the sample and the column. The Snakemake workflow (``workflow/rules/common.smk``) calls
these and keeps only lookups.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from isonet.errors import InputError

SYNTHETIC = "synthetic"
SAMPLE_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"  # as in the schema; never a path separator
VOXEL_COLUMNS = ("voxel_size_z", "voxel_size_y", "voxel_size_x")
GT_COLUMNS = ("gt", "iso_gt", "gt_labels")
WAVELENGTH_COLUMNS = ("excitation_nm", "emission_nm")
SAMPLE_COLUMNS = (
    "sample", "input", *VOXEL_COLUMNS, "subsample", "psf_kind", "psf_params", "psf_mode", "psf_file",
    "model", "model_from", *GT_COLUMNS, "channels", "timepoints", "train_timepoints", "microscope", "na",
    "immersion_ri", *WAVELENGTH_COLUMNS, "pinhole_au", "na_illumination", "axes",
)
# Columns that supply `psf.kind: auto` the optics the file's metadata lack (or override them).
OPTICS_COLUMNS = ("microscope", "na", "immersion_ri", *WAVELENGTH_COLUMNS, "pinhole_au", "na_illumination")
# Sample-sheet columns that set one key of a config section for their sample.
SHEET_SETTINGS = {
    "psf_kind": ("psf", "kind"),
    "psf_params": ("psf", "params"),
    "psf_mode": ("psf", "mode"),
    "psf_file": ("psf", "file"),
    "model": ("train", "model"),
}
DEFAULT_TRAIN_TIMEPOINTS = 5
# psf keys a config may leave out (psf: {kind: auto} is a whole psf section)
PSF_DEFAULTS = {"params": {}, "mode": "full", "file": ""}
_NUMBER_COLUMNS = ("na", "immersion_ri", "pinhole_au", "na_illumination")
_INTEGER_COLUMNS = ("train_timepoints",)


class SampleSheetError(InputError):
    """Problems with the sample sheet or the config, one line each in :attr:`problems`."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n  ".join(["invalid samples or config:", *self.problems]))


@dataclass(frozen=True)
class Sample:
    """One row of the sample sheet, typed; a column left empty is None (or its default).

    ``columns`` holds the row's given cells as JSON values (what the schema validated), for
    lookups by column name.
    """

    name: str
    input: str
    voxel_size: tuple[float, float, float] | None = None
    subsample: int | float | None = None
    psf_kind: str | None = None
    psf_params: dict | None = None
    psf_mode: str | None = None
    psf_file: str | None = None
    model: str | None = None
    model_from: str | None = None
    gt: str | None = None
    iso_gt: str | None = None
    gt_labels: str | None = None
    channels: tuple[int | str, ...] | None = None
    timepoints: tuple[int, ...] | None = None
    train_timepoints: int = DEFAULT_TRAIN_TIMEPOINTS
    microscope: str | None = None
    na: float | None = None
    immersion_ri: float | None = None
    excitation_nm: tuple[float, ...] | None = None
    emission_nm: tuple[float, ...] | None = None
    pinhole_au: float | None = None
    na_illumination: float | None = None
    axes: str | None = None
    columns: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def synthetic(self) -> bool:
        """The input is the embedded phantom."""
        return self.input == SYNTHETIC

    @property
    def ground_truth(self) -> dict[str, str]:
        """``{gt, iso_gt, gt_labels: path}`` of the columns given (synthetic samples: none here)."""
        return {c: getattr(self, c) for c in GT_COLUMNS if getattr(self, c) is not None}

    def __contains__(self, column: str) -> bool:
        return column in self.columns

    def __getitem__(self, column: str) -> Any:
        return self.columns[column]

    def get(self, column: str, default: Any = None) -> Any:
        """The JSON value of a given cell, as in a dict."""
        return self.columns.get(column, default)


# ------------------------------------------------------------------------------------------
# Cells


def parse_index_list(text: str) -> list[int]:
    """Indices from ``"0-9,20"``: comma-separated numbers and inclusive ranges, in the order given.

    Examples
    --------
    >>> parse_index_list("0-3,7")
    [0, 1, 2, 3, 7]
    """
    indices = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"{part.strip()!r} is not a number or a range a-b")
        first, last = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if last < first:
            raise ValueError(f"range {first}-{last} runs backwards")
        indices.extend(range(first, last + 1))
    if len(set(indices)) != len(indices):
        raise ValueError("an index appears twice")
    return indices


def _parse_cell(column: str, text: str) -> Any:
    """JSON value of a cell for the schema; a number that does not parse is kept as text for the
    schema to report. Raises ValueError (with the fix) for list and JSON cells that do not parse."""
    if column in VOXEL_COLUMNS or column in _NUMBER_COLUMNS:
        try:
            return float(text)
        except ValueError:
            return text
    if column == "subsample" or column in _INTEGER_COLUMNS:
        try:
            value = float(text)
        except ValueError:
            return text
        return int(value) if value.is_integer() else value
    if column == "psf_params":
        try:
            return json.loads(text)
        except ValueError as err:
            raise ValueError(
                f"{text!r} is not valid JSON ({err}); write a JSON object such as "
                '{"sigma_xy": 2, "sigma_z": 8}'
            ) from None
    if column == "timepoints":
        try:
            return parse_index_list(text)
        except ValueError as err:
            raise ValueError(f"{text!r}: {err}; write time points as e.g. 0-9,20") from None
    if column == "channels":
        names = [c.strip() for c in text.split(",")]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(
                f"{text!r} is not a list of distinct channels; write indices or names, e.g. 0,2 or GFP,mCherry"
            )
        return [int(n) if n.isdigit() else n for n in names]
    if column in WAVELENGTH_COLUMNS:
        try:
            return [float(v) for v in text.split(";")]
        except ValueError:
            raise ValueError(
                f"{text!r} is not a wavelength in nm or a ';'-separated list, one per channel, e.g. 488;561"
            ) from None
    return text


# ------------------------------------------------------------------------------------------
# Schema validation


def load_schema(schema: str | os.PathLike | Mapping) -> dict:
    """A JSON schema given as a mapping or as a YAML/JSON file."""
    if isinstance(schema, Mapping):
        return dict(schema)
    with open(schema) as f:
        return yaml.safe_load(f)


def schema_problems(data: Any, schema: str | os.PathLike | Mapping, where: str) -> list[str]:
    """One line per violation of ``schema`` by ``data``, ``"<where>: <key>: <message>"``.

    Parameters
    ----------
    data : JSON-like
        The document (config mapping, or one sample-sheet row).
    schema : path or mapping
        JSON schema (draft 2020-12), as a YAML file or a mapping.
    where : str
        Prefix naming the document, e.g. ``"config"``.

    Returns
    -------
    list of str
        Empty when ``data`` is valid.

    Examples
    --------
    >>> schema_problems({"a": 0}, {"properties": {"a": {"minimum": 1}}}, "config")
    ['config: a: 0 is less than the minimum of 1']
    """
    import jsonschema

    contents = load_schema(schema)
    errors = sorted(
        jsonschema.Draft202012Validator(contents).iter_errors(data),
        key=lambda e: list(map(str, e.absolute_path)),
    )
    lines = []
    for error in errors:
        key = ".".join(str(p) for p in error.absolute_path)
        lines.append(f"{where}: {key}: {error.message}" if key else f"{where}: {error.message}")
    return lines


def validate_config(config: Mapping, schema: str | os.PathLike | Mapping) -> Mapping:
    """The config, checked against its schema, with the defaults of keys it may leave out filled in.

    ``psf: {kind: auto}`` needs nothing else: ``psf.params`` defaults to ``{}``, ``psf.mode`` to
    ``full`` and ``psf.file`` to ``""`` (:data:`PSF_DEFAULTS`, set in ``config`` itself).
    Raises :class:`SampleSheetError` listing every problem.

    Examples
    --------
    >>> schema = {"properties": {"psf": {"required": ["kind"]}}}
    >>> validate_config({"psf": {"kind": "auto"}}, schema)["psf"]
    {'kind': 'auto', 'params': {}, 'mode': 'full', 'file': ''}
    """
    problems = schema_problems(dict(config), schema, "config")
    if problems:
        raise SampleSheetError(problems)
    if isinstance(config.get("psf"), dict):
        for key, value in PSF_DEFAULTS.items():
            config["psf"].setdefault(key, type(value)(value))
    return config


# ------------------------------------------------------------------------------------------
# Reading the sheet


def _record(columns: dict) -> Sample:
    def given(column, convert=lambda v: v):
        return convert(columns[column]) if column in columns else None

    voxel = tuple(columns[c] for c in VOXEL_COLUMNS) if all(c in columns for c in VOXEL_COLUMNS) else None
    return Sample(
        name=columns["sample"], input=columns["input"], voxel_size=voxel,
        subsample=given("subsample"), psf_kind=given("psf_kind"), psf_params=given("psf_params"),
        psf_mode=given("psf_mode"), psf_file=given("psf_file"), model=given("model"),
        model_from=given("model_from"), gt=given("gt"), iso_gt=given("iso_gt"), gt_labels=given("gt_labels"),
        channels=given("channels", tuple), timepoints=given("timepoints", tuple),
        train_timepoints=columns.get("train_timepoints", DEFAULT_TRAIN_TIMEPOINTS),
        microscope=given("microscope"), na=given("na"), immersion_ri=given("immersion_ri"),
        excitation_nm=given("excitation_nm", tuple), emission_nm=given("emission_nm", tuple),
        pinhole_au=given("pinhole_au"), na_illumination=given("na_illumination"),
        axes=given("axes", str.upper), columns=dict(columns),
    )


def _row_problem(columns: dict) -> str | None:
    """A check across the cells of one row that the schema does not express, or None."""
    given = [c for c in VOXEL_COLUMNS if c in columns]
    if given and len(given) < 3:
        return (
            f"voxel size incomplete ({', '.join(given)} given); fill voxel_size_z, voxel_size_y and "
            "voxel_size_x (µm), or none of them to use the file's metadata"
        )
    if "na" in columns and "immersion_ri" in columns and columns["na"] >= columns["immersion_ri"]:
        return (
            f"na: {columns['na']} is not below immersion_ri {columns['immersion_ri']}; the numerical "
            "aperture of an objective is less than the refractive index of its immersion medium"
        )
    if "pinhole_au" in columns and columns.get("microscope", "confocal") != "confocal":
        return f"pinhole_au: set for microscope {columns['microscope']!r}; a pinhole belongs to a confocal"
    counts = {c: len(columns[c]) for c in WAVELENGTH_COLUMNS if c in columns}
    if "channels" in columns:
        for column, n in counts.items():
            if n not in (1, len(columns["channels"])):
                return (
                    f"{column}: {n} wavelengths for {len(columns['channels'])} channels; give one, "
                    "or one per channel separated by ';'"
                )
    if len(set(counts.values())) > 1:
        return (
            f"excitation_nm has {counts['excitation_nm']} wavelengths, emission_nm {counts['emission_nm']}; "
            "give both one per channel"
        )
    return None


def read_sample_sheet(path: str | os.PathLike, schema: str | os.PathLike | Mapping) -> dict[str, Sample]:
    """The rows of a sample sheet as ``{sample: Sample}``, each validated against ``schema``.

    Parameters
    ----------
    path : str or path
        Tab-separated sheet with a header row; blank lines and ``#`` lines are skipped, empty
        cells mean "not set".
    schema : path or mapping
        JSON schema of one row (``workflow/schemas/samples.schema.yaml``).

    Returns
    -------
    dict of str to Sample
        In the sheet's order.

    Raises
    ------
    InputError
        The first problem, one line naming the sheet, the row (counted from 1 after the header),
        the sample and the column: a missing sheet, an unknown column, a cell that does not
        parse or violates the schema, a duplicate sample, no sample at all.
    """
    if not os.path.isfile(path):
        raise InputError(f"sample sheet {path} does not exist; set samples: in the config")
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines, delimiter="\t")
    header = reader.fieldnames or []
    unknown = [c for c in header if c not in SAMPLE_COLUMNS]
    if unknown:
        raise InputError(
            f"sample sheet {path}: unknown column(s) {', '.join(map(repr, unknown))}; "
            f"columns are: {', '.join(SAMPLE_COLUMNS)} (tab-separated)"
        )
    contents = load_schema(schema)
    samples = {}
    for number, row in enumerate(reader, start=1):
        if None in row:
            raise InputError(
                f"sample sheet {path}: row {number} has more cells than the header; separate columns with tabs"
            )
        cells = {k: v.strip() for k, v in row.items() if v and v.strip()}
        name = cells.get("sample", "(none)")
        where = f"sample sheet {path}, row {number}, sample {name}"
        columns = {}
        for column, text in cells.items():
            try:
                columns[column] = _parse_cell(column, text)
            except ValueError as err:
                raise InputError(f"{where}: {column} {err}") from None
        problem = _row_problem(columns)
        if problem:
            raise InputError(f"{where}: {problem}")
        problems = schema_problems(columns, contents, where)
        if problems:
            raise InputError(problems[0])
        if name in samples:
            raise InputError(f"sample sheet {path}: row {number}: sample {name!r} appears twice; rename one")
        samples[name] = _record(columns)
    if not samples:
        raise InputError(f"sample sheet {path} lists no sample; add a row: name<TAB>input")
    return samples


# ------------------------------------------------------------------------------------------
# Per-sample settings


def sample_settings(samples: Mapping[str, Sample], config: Mapping, sample: str, section: str) -> dict:
    """A config section for one sample: config values, then ``overrides.<sample>.<section>``,
    then the sample-sheet columns of that section. Each given key replaces the value as a whole.

    Examples
    --------
    >>> s = {"a": Sample(name="a", input="synthetic", model="isonet1", columns={"model": "isonet1"})}
    >>> sample_settings(s, {"train": {"model": "isonet2", "epochs": 8}}, "a", "train")
    {'model': 'isonet1', 'epochs': 8}
    """
    merged = dict(config[section])
    merged.update(((config.get("overrides") or {}).get(sample) or {}).get(section) or {})
    for column, (target, key) in SHEET_SETTINGS.items():
        if target == section and column in samples[sample]:
            merged[key] = samples[sample][column]
    return merged


# ------------------------------------------------------------------------------------------
# Time-lapse and multi-channel samples


@dataclass(frozen=True)
class Series:
    """The (time point, channel) volumes of a time-lapse or multi-channel sample, as converted.

    Indices count in the converted input (``results/<sample>/input.ome.zarr``), i.e. after the
    sample sheet's ``timepoints`` / ``channels`` selection: time point 0 is the first one kept.
    """

    n_times: int
    channel_names: tuple[str, ...]
    voxel_size: tuple[float, float, float] | None

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Name of each channel's NGFF label image (``restored.ome.zarr/labels/<name>``): the channel's
        name made a path segment (:func:`isonet.storage.label_name`), ``c<index>`` when that is empty
        or taken."""
        from isonet.storage.omezarr import label_name

        names: list[str] = []
        for i, channel in enumerate(self.channel_names):
            name = label_name(channel, f"c{i}")
            names.append(name if name not in names else f"c{i}")
        return tuple(names)

    def channel_index(self, channel: int | str, where: str) -> int:
        """Index of a channel given by index or name; InputError naming ``where`` when there is none."""
        if isinstance(channel, int) and 0 <= channel < self.n_channels:
            return channel
        if channel in self.channel_names:
            return self.channel_names.index(channel)
        raise InputError(
            f"{where}: no channel {channel!r}; the sample has {self.n_channels} "
            f"({', '.join(self.channel_names)}): give indices from 0 or these names"
        )


def _kept(selection: tuple | None, n: int, names: list[str], column: str, where: str) -> list[int]:
    if selection is None:
        return list(range(n))
    kept = []
    for item in selection:
        index = names.index(item) if isinstance(item, str) and item in names else item
        if not isinstance(index, int) or not 0 <= index < n:
            listed = f" ({', '.join(names)})" if names else ""
            raise InputError(f"{where}: {column} {item!r} is not in the input, which has {n}{listed}; fix the {column} column")
        kept.append(index)
    return kept


def series_layout(row: Sample) -> Series | None:
    """The converted (t, c) layout of a time-lapse or multi-channel sample, None for a 3D z-stack.

    Reads the input file's header only (:func:`isonet.storage.open_hyperstack`). A sample is a
    series exactly when ``isonet convert`` keeps t or c axes for it: the file has more than one
    time point or channel, or the sheet gives ``axes``, ``channels`` or ``timepoints``.

    Raises
    ------
    InputError
        The file cannot be opened, its axes cannot be told (fix: the ``axes`` column), or the
        ``channels`` / ``timepoints`` selection names what the file lacks.
    """
    if row.synthetic:
        return None
    from isonet.storage import open_hyperstack

    where = f"sample {row.name}"
    declared = row.axes is not None or row.channels is not None or row.timepoints is not None
    try:
        stack = open_hyperstack(row.input, axes=row.axes)
    except InputError:
        if declared:
            raise
        return None  # a file read as a z-stack (e.g. a TIFF whose metadata do not name z): the 3D path checks it
    try:
        if not declared and not (stack.axes and (stack.n_times > 1 or stack.n_channels > 1)):
            return None
        if row.gt_labels is not None:
            raise InputError(f"{where}: gt_labels is not used for a time-lapse or multi-channel sample (SEG per time "
                             "point is not computed; gt / iso_gt give PSNR per time point and channel); leave it empty")
        names = list(stack.acquisition.channel_names(stack.n_channels))
        times = _kept(row.timepoints, stack.n_times, [], "timepoints", where)
        channels = _kept(row.channels, stack.n_channels, names, "channels", where)
        return Series(len(times), tuple(names[c] for c in channels), stack.voxel_size)
    finally:
        stack.close()


def psf_auto_settings(row: Sample, channel: int, params: Mapping | None = None) -> dict:
    """Settings for ``isonet psf --kind auto --params`` of one channel: ``params`` (psf.params
    given for this sample), then the sheet's optics columns; a per-channel wavelength list gives
    the channel's own.

    Examples
    --------
    >>> row = Sample(name="a", input="run.ome.tif", na=1.1, emission_nm=(510.0, 610.0))
    >>> psf_auto_settings(row, 1)
    {'na': 1.1, 'emission_nm': 610.0}
    """
    settings = dict(params or {})
    for column in OPTICS_COLUMNS:
        value = getattr(row, column)
        if value is None:
            continue
        if column in WAVELENGTH_COLUMNS:
            value = value[channel] if len(value) > 1 else value[0]
        settings[column] = value
    return settings


# ------------------------------------------------------------------------------------------
# Cross-checks


def file_voxel_size(path: str | os.PathLike) -> tuple[float, float, float] | None:
    """Voxel size stored in an image file's metadata, or None; reads the header only."""
    from isonet.storage import open_volume

    _, voxel_size, close = open_volume(path)
    close()
    return voxel_size


def axial_factor_problem(voxel_size: tuple[float, float, float]) -> str | None:
    """Why the stages would refuse the axial factor z/x of this voxel size (without ``subsample``), or None.

    The stages' own rule (:func:`isonet.degrade.axial_factor`): any exact ratio >= 1 with
    square lateral pixels.

    Examples
    --------
    >>> axial_factor_problem((0.8, 0.2, 0.2)) is None, axial_factor_problem((0.9, 0.2, 0.2)) is None
    (True, True)
    >>> axial_factor_problem((0.1, 0.2, 0.2))[:41]
    'voxel size ratio z/x = 0.1/0.2 = 0.5 is b'
    """
    from isonet.degrade import axial_factor

    try:
        axial_factor(voxel_size, source="voxel size")
    except InputError as err:
        return str(err).removeprefix("voxel size: ")
    return None


def sample_problems(samples: Mapping[str, Sample], config: Mapping) -> list[str]:
    """Cross-field checks the schemas cannot express, one line per problem (empty: all fine).

    Reads files' existence and the voxel size in an input's metadata; relative paths start at the
    working directory.
    """
    problems = []
    overrides = config.get("overrides") or {}
    for name in overrides:
        if name not in samples:
            problems.append(f"overrides: {name!r} is not a sample of {config['samples']}")
    for name, row in samples.items():
        where = f"sample {name}"
        if not row.synthetic and not os.path.exists(row.input):
            problems.append(f"{where}: input {row.input} does not exist (relative paths start at {os.getcwd()})")
        for column, path in row.ground_truth.items():
            if not os.path.exists(path):
                problems.append(f"{where}: {column} {path} does not exist")
        voxel_size = row.voxel_size
        if voxel_size is None and not row.synthetic and os.path.exists(row.input):
            try:
                series = series_layout(row)
                voxel_size = series.voxel_size if series else file_voxel_size(row.input)
            except InputError as err:
                problems.append(f"{where}: {err}")
                continue
            if voxel_size is None:
                problems.append(
                    f"{where}: {row.input} has no voxel size in its metadata; "
                    "fill voxel_size_z, voxel_size_y and voxel_size_x (µm) in the sample sheet"
                )
        if voxel_size is not None and row.subsample is None:
            problem = axial_factor_problem(voxel_size)
            if problem:
                problems.append(f"{where}: {problem}")
        source = row.model_from
        if source is not None:
            if source == name:
                problems.append(f"{where}: model_from names the sample itself")
            elif source not in samples:
                problems.append(f"{where}: model_from {source!r} is not a sample")
            elif samples[source].model_from is not None:
                problems.append(
                    f"{where}: model_from {source!r} takes its model from another sample; "
                    "name the sample that trains the model"
                )
        for column, (section, key) in SHEET_SETTINGS.items():
            if column in row and key in ((overrides.get(name) or {}).get(section) or {}):
                problems.append(
                    f"{where}: {section}.{key} is set both by the sample sheet column {column} "
                    "and by overrides; set it in one place"
                )
        psf = sample_settings(samples, config, name, "psf")
        if psf["kind"] == "measured":
            if not psf["file"]:
                problems.append(f"{where}: psf kind 'measured' needs a bead stack: set psf_file (sheet) or psf.file")
            elif not os.path.exists(psf["file"]):
                problems.append(f"{where}: psf file {psf['file']} does not exist")
        if psf["kind"] != config["psf"]["kind"] and psf["kind"] != "auto" and psf["params"] is config["psf"]["params"]:
            problems.append(
                f"{where}: psf kind {psf['kind']!r} differs from the config's, but its parameters "
                "are the config's; give psf_params (sheet) or overrides.<sample>.psf.params"
            )
    return problems


def load_samples(config: Mapping, schema: str | os.PathLike | Mapping) -> dict[str, Sample]:
    """The sample sheet named by ``config["samples"]``, read, validated and cross-checked.

    Raises
    ------
    InputError
        A problem of one row (see :func:`read_sample_sheet`).
    SampleSheetError
        Every cross-check problem at once (:func:`sample_problems`).
    """
    samples = read_sample_sheet(config["samples"], schema)
    problems = sample_problems(samples, config)
    if problems:
        raise SampleSheetError(problems)
    return samples
