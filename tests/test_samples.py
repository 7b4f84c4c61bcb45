"""isonet.samples: the sample sheet read into typed records, each problem one line naming sheet,
row, sample and column; cross-checks against files and the config."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from isonet.errors import InputError
from isonet.samples import (
    Sample,
    SampleSheetError,
    load_samples,
    parse_index_list,
    read_sample_sheet,
    sample_problems,
    sample_settings,
    validate_config,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"
CONFIG_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def sheet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "samples.tsv"
    path.write_text(text)
    return path


def read(tmp_path: Path, text: str) -> dict[str, Sample]:
    return read_sample_sheet(sheet(tmp_path, text), SCHEMA)


def test_typed_record_of_every_column(tmp_path):
    samples = read(tmp_path, (
        "# a comment\n"
        "sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\tsubsample\tpsf_params\tmodel\tchannels\ttimepoints"
        "\ttrain_timepoints\tmicroscope\tna\timmersion_ri\texcitation_nm\temission_nm\tpinhole_au\n"
        'a\tsynthetic\t0.8\t0.2\t0.2\t4\t{"sigma_xy": 2}\tisonet1\t0,GFP\t0-3,9\t3\tconfocal\t1.2\t1.33\t488;561'
        "\t520;600\t1\n"
        "\n"
        "b\tsynthetic\n"
    ))
    a, b = samples["a"], samples["b"]
    assert list(samples) == ["a", "b"]
    assert a.voxel_size == (0.8, 0.2, 0.2) and a.subsample == 4 and isinstance(a.subsample, int)
    assert a.psf_params == {"sigma_xy": 2} and a.model == "isonet1" and a.synthetic
    assert a.channels == (0, "GFP") and a.timepoints == (0, 1, 2, 3, 9) and a.train_timepoints == 3
    assert (a.microscope, a.na, a.immersion_ri, a.pinhole_au) == ("confocal", 1.2, 1.33, 1.0)
    assert a.excitation_nm == (488.0, 561.0) and a.emission_nm == (520.0, 600.0)
    assert "model" in a and a["model"] == "isonet1" and a.get("model_from") is None
    # defaults of an empty row: all channels and time points, 5 training time points
    assert (b.voxel_size, b.subsample, b.channels, b.timepoints, b.train_timepoints) == (None, None, None, None, 5)
    assert (b.microscope, b.na, b.excitation_nm, b.model_from, b.ground_truth) == (None, None, None, None, {})


def test_index_lists():
    assert parse_index_list("0-2, 5 ,7-7") == [0, 1, 2, 5, 7]
    for text, message in [("3-1", "runs backwards"), ("1,1", "appears twice"), ("a", "'a' is not a number")]:
        with pytest.raises(ValueError, match=message):
            parse_index_list(text)


ROW = "sheet, row 1, sample d: "


@pytest.mark.parametrize("columns, cells, message", [
    ("voxel_size_z", "1", "voxel size incomplete (voxel_size_z given); fill voxel_size_z, voxel_size_y and voxel_size_x"),
    ("voxel_size_z\tvoxel_size_y\tvoxel_size_x", "-1\t0.2\t0.2",
     "voxel_size_z: -1.0 is less than or equal to the minimum of 0"),
    ("voxel_size_z\tvoxel_size_y\tvoxel_size_x", "1\tabc\t0.2", "voxel_size_y: 'abc' is not of type 'number'"),
    ("subsample", "0", "subsample: 0 is less than the minimum of 1"),
    ("psf_params", "{sigma", "psf_params '{sigma' is not valid JSON"),
    ("psf_kind", "airy", "psf_kind: 'airy' is not one of ['gaussian', 'confocal', 'lightsheet', 'widefield', 'measured', 'auto']"),
    ("channels", "0,,2", "channels '0,,2' is not a list of distinct channels; write indices or names"),
    ("timepoints", "0-x", "timepoints '0-x': '0-x' is not a number or a range a-b; write time points as e.g. 0-9,20"),
    ("timepoints", "5-2", "timepoints '5-2': range 5-2 runs backwards"),
    ("train_timepoints", "0", "train_timepoints: 0 is less than the minimum of 1"),
    ("train_timepoints", "2.5", "train_timepoints: 2.5 is not of type 'integer'"),
    ("microscope", "spinning", "microscope: 'spinning' is not one of ['widefield', 'confocal', 'lightsheet']"),
    ("na", "high", "na: 'high' is not of type 'number'"),
    ("na\timmersion_ri", "1.4\t1.33", "na: 1.4 is not below immersion_ri 1.33"),
    ("immersion_ri", "0.9", "immersion_ri: 0.9 is less than the minimum of 1.0"),
    ("excitation_nm", "488;x", "excitation_nm '488;x' is not a wavelength in nm or a ';'-separated list"),
    ("emission_nm", "52", "emission_nm.0: 52.0 is less than the minimum of 200"),
    ("channels\texcitation_nm", "0,1\t405;488;561", "excitation_nm: 3 wavelengths for 2 channels"),
    ("excitation_nm\temission_nm", "488;561\t520", "excitation_nm has 2 wavelengths, emission_nm 1"),
    ("microscope\tpinhole_au", "widefield\t1", "pinhole_au: set for microscope 'widefield'; a pinhole belongs to a confocal"),
    ("pinhole_au", "0", "pinhole_au: 0.0 is less than or equal to the minimum of 0"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 24 else None)
def test_each_cell_problem_is_one_line_naming_row_sample_and_column(tmp_path, columns, cells, message):
    path = sheet(tmp_path, f"sample\tinput\t{columns}\nd\tsynthetic\t{cells}\n")
    with pytest.raises(InputError) as info:
        read_sample_sheet(path, SCHEMA)
    text = str(info.value)
    assert "\n" not in text
    assert text == f"sample sheet {path}, row 1, sample d: {message}" or text.startswith(
        f"sample sheet {path}, row 1, sample d: {message}"), text


@pytest.mark.parametrize("text, message", [
    ("sample\tinput\tcolour\nd\tsynthetic\tred\n", "unknown column(s) 'colour'; columns are: sample, input,"),
    ("sample\tinput\nd\tsynthetic\textra\n", "row 1 has more cells than the header; separate columns with tabs"),
    ("sample\tinput\nd\tsynthetic\nd\tsynthetic\n", "row 2: sample 'd' appears twice; rename one"),
    ("sample\tinput\n", "lists no sample; add a row"),
    ("sample\tinput\nd/x\tsynthetic\n", "row 1, sample d/x: sample: 'd/x' does not match"),
    ("sample\tinput\n\tsynthetic\n", "row 1, sample (none): 'sample' is a required property"),
])
def test_sheet_problems(tmp_path, text, message):
    with pytest.raises(InputError) as info:
        read(tmp_path, text)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_missing_sheet(tmp_path):
    with pytest.raises(InputError, match=r"sample sheet .*nope.tsv does not exist; set samples: in the config"):
        read_sample_sheet(tmp_path / "nope.tsv", SCHEMA)


def config_with(samples: Path, **sections) -> dict:
    config = copy.deepcopy(CONFIG)
    config["samples"] = str(samples)
    config.update(sections)
    return config


def problems_of(tmp_path, text, **sections) -> list[str]:
    path = sheet(tmp_path, text)
    return sample_problems(read_sample_sheet(path, SCHEMA), config_with(path, **sections))


def test_cross_checks_list_every_problem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tifffile.imwrite("nometa.tif", np.zeros((8, 16, 16), np.uint16), photometric="minisblack")
    tifffile.imwrite("meta.tif", np.zeros((8, 16, 16), np.uint16), imagej=True, resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"spacing": 0.1, "unit": "um"})
    problems = problems_of(tmp_path, (
        "sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\tmodel_from\tgt\tpsf_kind\tmodel\n"
        "a\tmissing.tif\t\t\t\t\t\t\t\n"
        "b\tnometa.tif\t\t\t\t\tgt.tif\t\t\n"
        "c\tmeta.tif\t\t\t\ta\t\t\t\n"
        "d\tsynthetic\t0.8\t0.2\t0.3\tc\t\t\t\n"
        "e\tsynthetic\t\t\t\te\t\tconfocal\tisonet1\n"
    ), overrides={"e": {"train": {"model": "isonet2"}}, "zz": {}})
    assert problems == [
        "overrides: 'zz' is not a sample of samples.tsv".replace("samples.tsv", str(tmp_path / "samples.tsv")),
        f"sample a: input missing.tif does not exist (relative paths start at {tmp_path})",
        "sample b: gt gt.tif does not exist",
        "sample b: nometa.tif has no voxel size in its metadata; fill voxel_size_z, voxel_size_y and voxel_size_x"
        " (µm) in the sample sheet",
        "sample c: voxel size ratio z/x = 0.1/0.2 = 0.5 is below 1, so z is sampled more finely than x and there is"
        " nothing to restore; check the voxel sizes (z y x) or set subsample: for this sample",
        "sample d: lateral voxel sizes differ (y 0.2 µm, x 0.3 µm); resample to square pixels first",
        "sample d: model_from 'c' takes its model from another sample; name the sample that trains the model",
        "sample e: model_from names the sample itself",
        "sample e: train.model is set both by the sample sheet column model and by overrides; set it in one place",
        "sample e: psf kind 'confocal' differs from the config's, but its parameters are the config's; give"
        " psf_params (sheet) or overrides.<sample>.psf.params",
    ]
    assert all("\n" not in p for p in problems)


def test_measured_psf_needs_its_bead_stack(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = 'sample\tinput\tpsf_kind\tpsf_params\tpsf_file\nd\tsynthetic\tmeasured\t{{}}\t{file}\n'
    assert problems_of(tmp_path, text.format(file="")) == [
        "sample d: psf kind 'measured' needs a bead stack: set psf_file (sheet) or psf.file"]
    assert problems_of(tmp_path, text.format(file="beads.tif")) == ["sample d: psf file beads.tif does not exist"]


def test_settings_merge_config_overrides_then_sheet(tmp_path):
    path = sheet(tmp_path, 'sample\tinput\tpsf_kind\tpsf_params\nd\tsynthetic\tconfocal\t{"na": 1.2}\ne\tsynthetic\t\t\n')
    samples = read_sample_sheet(path, SCHEMA)
    config = config_with(path, overrides={"d": {"psf": {"mode": "split"}}, "e": {"train": {"epochs": 3}}})
    assert sample_settings(samples, config, "d", "psf") == {"kind": "confocal", "params": {"na": 1.2},
                                                            "mode": "split", "file": ""}
    assert sample_settings(samples, config, "e", "train")["epochs"] == 3
    assert sample_settings(samples, config, "d", "train")["epochs"] == CONFIG["train"]["epochs"]
    assert load_samples(config, SCHEMA) == samples


def test_load_samples_raises_all_problems_at_once(tmp_path):
    path = sheet(tmp_path, "sample\tinput\tmodel_from\na\tnone.tif\tz\n")
    with pytest.raises(SampleSheetError) as info:
        load_samples(config_with(path), SCHEMA)
    assert info.value.problems == [
        f"sample a: input none.tif does not exist (relative paths start at {Path.cwd()})",
        "sample a: model_from 'z' is not a sample",
    ]
    assert str(info.value).startswith("invalid samples or config:\n  sample a: input none.tif")


def test_config_validation_names_the_key():
    config = copy.deepcopy(CONFIG)
    assert validate_config(config, CONFIG_SCHEMA) is config
    config["train"]["epoch"] = 3
    config["overrides"] = {"d": {"train": {"epochs": 0}}}
    with pytest.raises(SampleSheetError) as info:
        validate_config(config, CONFIG_SCHEMA)
    assert info.value.problems == [
        "config: overrides.d.train.epochs: 0 is less than the minimum of 1",
        "config: train: Additional properties are not allowed ('epoch' was unexpected)",
    ]


def test_psf_kind_auto_is_a_whole_psf_section():
    from isonet.psf.acquired import SETTINGS

    config = copy.deepcopy(CONFIG)
    config["psf"] = {"kind": "auto"}
    assert validate_config(config, CONFIG_SCHEMA)["psf"] == {"kind": "auto", "params": {}, "mode": "full", "file": ""}
    config["psf"] = {"kind": "auto", "params": {"na": 1.1}, "mode": "split"}
    assert validate_config(config, CONFIG_SCHEMA)["psf"] == {"kind": "auto", "params": {"na": 1.1}, "mode": "split",
                                                             "file": ""}
    # the schema lists exactly the settings psf auto takes
    schema = yaml.safe_load(CONFIG_SCHEMA.read_text())
    assert schema["$defs"]["psf"]["then"]["properties"]["params"]["propertyNames"]["enum"] == list(SETTINGS)
    # another kind's parameters under kind auto, and a kind other than auto without parameters
    for psf, problem in (
        ({"kind": "auto", "params": {"sigma_xy": 2.0}}, "config: psf.params: 'sigma_xy' is not one of ['microscope'"),
        ({"kind": "gaussian"}, "config: psf: 'params' is a required property"),
    ):
        config["psf"] = psf
        with pytest.raises(SampleSheetError) as info:
            validate_config(config, CONFIG_SCHEMA)
        assert len(info.value.problems) == 1 and info.value.problems[0].startswith(problem), info.value.problems
