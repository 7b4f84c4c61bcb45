"""Time-lapse, multi-channel inputs (OME-TIFF, ImageJ hyperstack, OME-Zarr t/c) and the PSF from their metadata."""

import json

import numpy as np
import pytest
import tifffile
import zarr

from isonet.cli import main
from isonet.errors import InputError
from isonet.stages.convert import convert
from isonet.stages.psf import psf_stage
from isonet.storage import export_hyperstack_tiff, image_axes, open_hyperstack, read_ome_zarr

T, C, Z, Y, X = 3, 2, 8, 24, 24
VOXEL = (0.8, 0.2, 0.2)
NAMES = ("GFP", "mCherry")


def series_data():
    """A (t, c, z, y, x) uint16 time-lapse: a blob moving over time, a different one per channel."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in (Z, Y, X)), indexing="ij")
    data = np.zeros((T, C, Z, Y, X), np.uint16)
    for t in range(T):
        for c in range(C):
            centre = (3 + c, 8 + 3 * t, 10 + 2 * c)
            r2 = ((zz - centre[0]) * 4) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
            data[t, c] = 100 + (1000 * (c + 1) * np.exp(-r2 / 20.0)).astype(np.uint16) + 7 * t
    return data


def ome_xml(na="1.1", mode="LaserScanningConfocalMicroscopy", shape=(T, C, Z, Y, X)):
    t, c, z, y, x = shape
    lens = f' LensNA="{na}"' if na is not None else ""
    channels = "".join(
        f'<Channel ID="Channel:0:{i}" Name="{name}" SamplesPerPixel="1" ExcitationWavelength="{ex}" '
        f'EmissionWavelength="{em}" PinholeSize="50" AcquisitionMode="{mode}"/>'
        for i, (name, ex, em) in enumerate(zip(NAMES, (488, 561), (510, 610)))
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        f'<Instrument ID="Instrument:0"><Objective ID="Objective:0"{lens} Immersion="Water" '
        'NominalMagnification="40"/></Instrument>'
        '<Image ID="Image:0"><InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:0"/>'
        f'<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="{x}" SizeY="{y}" SizeZ="{z}" '
        f'SizeC="{c}" SizeT="{t}" PhysicalSizeX="0.2" PhysicalSizeY="0.2" PhysicalSizeZ="0.8" '
        f'TimeIncrement="30" TimeIncrementUnit="s">{channels}<TiffData/></Pixels></Image></OME>'
    )


def write_ome_tiff(path, data, **xml):
    tifffile.imwrite(path, data, description=ome_xml(shape=data.shape, **xml), metadata=None,
                     photometric="minisblack", compression="zlib")
    return path


def write_imagej(path, data):
    tifffile.imwrite(path, data.transpose(0, 2, 1, 3, 4), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TZCYX", "spacing": 0.8, "unit": "um", "finterval": 0.5, "tunit": "min"},
                     photometric="minisblack")
    return path


def write_ngff_zarr(path, data):
    """An NGFF 0.4 (zarr v2) image with t and c axes, written with zarr alone (not by isonet)."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1, 1, Z, Y, X))
    axes = [{"name": "t", "type": "time", "unit": "second"}, {"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    group.attrs.update({
        "multiscales": [{"version": "0.4", "axes": axes, "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [30.0, 1.0, *VOXEL]}]}]}],
        "omero": {"channels": [{"label": n} for n in NAMES]},
    })
    return path


@pytest.fixture(scope="module")
def data():
    return series_data()


@pytest.fixture(scope="module")
def ome_tiff(tmp_path_factory, data):
    return write_ome_tiff(tmp_path_factory.mktemp("ome") / "series.ome.tif", data)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, ome_tiff):
    out = tmp_path_factory.mktemp("conv") / "series.zarr"
    convert(ome_tiff, out, chunks=(4, 16, 16), log=lambda m: None)
    return out


def test_ome_tiff_converts_to_tczyx_with_scales_channel_names_and_time_step(converted, data):
    group = zarr.open_group(converted, mode="r")
    ome = group.attrs["ome"]
    multiscale = ome["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
    assert multiscale["axes"][0] == {"name": "t", "type": "time", "unit": "second"}
    assert multiscale["axes"][1] == {"name": "c", "type": "channel"}
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [30.0, 1.0, 0.8, 0.2, 0.2]
    assert multiscale["datasets"][1]["coordinateTransformations"][0]["scale"] == [30.0, 1.0, 1.6, 0.4, 0.4]
    assert [ch["label"] for ch in ome["omero"]["channels"]] == list(NAMES)
    assert ome["omero"]["channels"][1]["window"]["max"] == float(data[:, 1].max())
    np.testing.assert_array_equal(group["0"][:], data)
    assert group["0"].chunks == (1, 1, 4, 16, 16)  # one (t, c) per chunk: time points are separate jobs
    assert group["1"].shape == (T, C, Z // 2, Y // 2, X // 2)
    acquisition = group.attrs["isonet"]["acquisition"]
    assert acquisition["na"] == 1.1 and acquisition["immersion"] == "Water" and acquisition["microscope"] == "confocal"
    assert [(c["name"], c["excitation_nm"], c["emission_nm"]) for c in acquisition["channels"]] == [
        ("GFP", 488.0, 510.0), ("mCherry", 561.0, 610.0)]
    assert acquisition["time_increment_s"] == 30.0 and acquisition["voxel_size"] == list(VOXEL)
    assert main(["verify", str(converted)]) == 0


def test_converted_store_is_valid_ngff_05(converted):
    models = pytest.importorskip("ome_zarr_models.v05.image")
    image = models.Image.from_zarr(zarr.open_group(converted, mode="r"))
    axes = image.ome_attributes.multiscales[0].axes
    assert [(a.name, a.type) for a in axes] == [("t", "time"), ("c", "channel"), ("z", "space"), ("y", "space"),
                                                ("x", "space")]


def test_imagej_hyperstack_and_ome_zarr_give_the_same_arrays_as_ome_tiff(tmp_path, converted, data):
    reference = zarr.open_group(converted, mode="r")
    for source in (write_imagej(tmp_path / "series_ij.tif", data), write_ngff_zarr(tmp_path / "series_in.zarr", data)):
        out = tmp_path / f"{source.stem}.out.zarr"
        summary = convert(source, out, chunks=(4, 16, 16), log=lambda m: None)
        group = zarr.open_group(out, mode="r")
        for level in ("0", "1"):
            np.testing.assert_array_equal(group[level][:], reference[level][:])
        assert summary["axes"] == "tczyx" and summary["time_step_s"] == 30.0 and summary["voxel_size"] == VOXEL
        scale = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert scale == [30.0, 1.0, 0.8, 0.2, 0.2]
    assert summary["channels"] == list(NAMES)  # the OME-Zarr's omero labels


def test_ome_zarr_with_bioformats2raw_ome_xml_gives_the_optics(tmp_path, data):
    root = tmp_path / "run.zarr"
    image = write_ngff_zarr(root / "0", data)
    (root / "OME").mkdir()
    (root / "OME" / "METADATA.ome.xml").write_text(ome_xml())
    stack = open_hyperstack(image)
    acquisition = stack.acquisition
    assert (acquisition.na, acquisition.microscope, acquisition.voxel_size) == (1.1, "confocal", VOXEL)
    assert acquisition.channel(1).emission_nm == 610.0 and acquisition.channel(1).name == "mCherry"


def test_reading_one_volume_reads_no_other(ome_tiff, converted, data, monkeypatch):
    import tifffile.zarr

    keys = []
    original = tifffile.zarr.ZarrTiffStore.get

    async def counting_get(self, key, *args, **kwargs):
        keys.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(tifffile.zarr.ZarrTiffStore, "get", counting_get)
    stack = open_hyperstack(ome_tiff)
    try:
        assert stack.array.shape == (T, C, Z, Y, X) and stack.axes == "TC"
        np.testing.assert_array_equal(stack.volume(2, 1)[:], data[2, 1])
    finally:
        stack.close()
    chunks = [k for k in keys if k[0].isdigit()]
    assert len(chunks) == Z and all(k.startswith("2.1.") for k in chunks)  # the Z pages of t=2, c=1 only

    # the OME-Zarr view reads only its volume's chunks: the other volumes' chunk files can go
    for path in (converted / "0" / "c" / "0").rglob("*"):
        if path.is_file():
            path.rename(path.with_name(path.name + ".away"))
    try:
        volume, voxel_size = read_ome_zarr(converted, t=2, c=1)
        assert volume.shape == (Z, Y, X) and voxel_size == VOXEL
        np.testing.assert_array_equal(volume[:], data[2, 1])
        with pytest.raises(InputError, match="chunk c/0/0/0/0/0 .* missing"):
            read_ome_zarr(converted, t=0, c=0)[0][:]
    finally:
        for path in (converted / "0" / "c" / "0").rglob("*.away"):
            path.rename(path.with_name(path.name[: -len(".away")]))


def test_volume_selection_errors_name_the_option(converted):
    with pytest.raises(InputError, match="has 3 along axis 't'; choose one time point with --time"):
        read_ome_zarr(converted, c=0)
    with pytest.raises(InputError, match="no channel 2; there are 2"):
        read_ome_zarr(converted, t=0, c=2)


def test_channels_and_timepoints_selection(tmp_path, ome_tiff, data):
    out = tmp_path / "sel.zarr"
    summary = convert(ome_tiff, out, chunks=(4, 16, 16), channels=["mCherry"], timepoints=[0, 2], log=lambda m: None)
    assert summary["shape"] == (2, 1, Z, Y, X) and summary["channels"] == ["mCherry"]
    assert summary["time_step_s"] == 60.0
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["0"][:], data[[0, 2]][:, [1]])
    with pytest.raises(InputError, match=r"no channel 'DAPI'; the image has 2 \(GFP, mCherry\): fix --channels"):
        convert(ome_tiff, tmp_path / "bad.zarr", channels=["DAPI"], log=lambda m: None)


def test_file_without_axes_is_one_line_error_until_declared(tmp_path, data, capsys):
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, data[0], photometric="minisblack")  # tifffile's shaped (c, z, y, x): axes QQYX
    assert main(["convert", str(plain), str(tmp_path / "p.zarr"), "--voxel-size", "0.8", "0.2", "0.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--axes" in err and "CZYX" in err
    assert main(["convert", str(plain), str(tmp_path / "p.zarr"), "--voxel-size", "0.8", "0.2", "0.2",
                 "--axes", "CZYX"]) == 0
    assert image_axes(tmp_path / "p.zarr") == ["c", "z", "y", "x"]
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "p.zarr", mode="r")["0"][:], data[0])
    assert main(["convert", str(plain), str(tmp_path / "q.zarr"), "--axes", "TCZYX"]) == 2
    assert "declared axes 'TCZYX' do not fit" in capsys.readouterr().err


def test_psf_auto_equals_the_parameters_given_by_hand(tmp_path, ome_tiff, converted):
    auto = psf_stage(tmp_path / "auto.npz", tmp_path / "auto.json", kind="auto", source_path=ome_tiff, channel=1)
    by_hand = psf_stage(tmp_path / "hand.npz", tmp_path / "hand.json", kind="confocal", params={
        "shape": [21, 11, 11], "voxel_size_um": 0.2, "na": 1.1, "refractive_index": 1.333,
        "wavelength_excitation_um": 0.561, "wavelength_emission_um": 0.61,
        "pinhole_au": round(50 / (40 * 1.22 * 0.61 / 1.1), 5)})
    with np.load(tmp_path / "auto.npz") as a, np.load(tmp_path / "hand.npz") as b:
        for name in ("psf", "psf_rot", "psf_iso", "kernel"):
            np.testing.assert_array_equal(a[name], b[name])
    assert auto["kind"] == by_hand["kind"] == "confocal"
    written = json.loads((tmp_path / "auto.json").read_text())
    values = written["acquisition"]["values"]
    assert written["requested_kind"] == "auto" and written["acquisition"]["channel"] == 1
    assert values["na"] == {"value": 1.1, "source": "OME-XML"}
    assert values["immersion_ri"] == {"value": 1.333, "source": "OME-XML (immersion Water)"}
    assert values["emission_nm"] == {"value": 610.0, "source": "OME-XML"}
    # the converted store keeps the record; a sample-sheet value overrides the file's
    again = psf_stage(tmp_path / "z.npz", tmp_path / "z.json", kind="auto", source_path=converted, channel=1,
                      params={"na": 1.0})
    assert again["acquisition"]["values"]["na"] == {"value": 1.0, "source": "sample sheet"}
    assert again["params"]["na"] == 1.0 and again["acquisition"]["values"]["excitation_nm"]["value"] == 561.0


def test_psf_auto_without_na_is_a_one_line_error(tmp_path, data, capsys):
    no_na = write_ome_tiff(tmp_path / "no_na.ome.tif", data[:1], na=None)
    code = main(["psf", "--out-npz", str(tmp_path / "p.npz"), "--out-json", str(tmp_path / "p.json"),
                 "--kind", "auto", "--from", str(no_na)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.endswith("no objective NA in the OME-XML metadata; set the `na` column of the sample sheet")
    assert not (tmp_path / "p.npz").exists()
    # the sample sheet's value supplies it
    assert main(["psf", "--out-npz", str(tmp_path / "p.npz"), "--out-json", str(tmp_path / "p.json"),
                 "--kind", "auto", "--from", str(no_na), "--params", '{"na": 1.1}']) == 0


def test_psf_auto_widefield_and_lightsheet_need_their_values(tmp_path, data):
    wide = write_ome_tiff(tmp_path / "wf.ome.tif", data[:1], mode="WideField")
    info = psf_stage(tmp_path / "w.npz", tmp_path / "w.json", kind="auto", source_path=wide)
    assert info["kind"] == "widefield" and info["params"]["wavelength_um"] == 0.51
    spim = write_ome_tiff(tmp_path / "ls.ome.tif", data[:1], mode="SPIM")
    with pytest.raises(InputError, match="no light-sheet illumination NA .* set `na_illumination`"):
        psf_stage(tmp_path / "l.npz", tmp_path / "l.json", kind="auto", source_path=spim)
    info = psf_stage(tmp_path / "l.npz", tmp_path / "l.json", kind="auto", source_path=spim,
                     params={"na_illumination": 0.1})
    assert info["kind"] == "lightsheet" and info["params"]["wavelength_illumination_um"] == 0.488


def test_export_tiff_writes_an_imagej_hyperstack(tmp_path, converted, data):
    out = tmp_path / "series.tif"
    assert main(["export-tiff", str(converted), str(out)]) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX"
        meta = tif.imagej_metadata
        assert (meta["frames"], meta["channels"], meta["slices"]) == (T, C, Z)
        assert meta["spacing"] == 0.8 and meta["finterval"] == 30.0
    stack = open_hyperstack(out)
    try:
        np.testing.assert_array_equal(np.asarray(stack.array), data)
        assert stack.voxel_size == VOXEL and stack.acquisition.time_increment_s == 30.0
    finally:
        stack.close()
    with pytest.raises(ValueError, match="axes"):
        export_hyperstack_tiff(np.zeros((2, 3, 4, 5)), ["z", "t", "y", "x"], tmp_path / "x.tif", VOXEL)


def test_cli_chain_one_model_per_channel_every_time_point_restored(tmp_path, converted, capsys):
    """psf auto, patches over time points, train, predict per (t, c), assemble: a TCZYX restoration."""
    w = tmp_path
    parts = []
    for c in range(C):
        assert main(["psf", "--out-npz", str(w / f"psf{c}.npz"), "--out-json", str(w / f"psf{c}.json"), "--kind",
                     "auto", "--from", str(converted), "--channel", str(c)]) == 0
        assert main(["patches", str(converted), str(w / f"psf{c}.npz"), str(w / f"p{c}.npz"), "--channel", str(c),
                     "--n-timepoints", "2", "--n-patches", "32", "--patch-size", "16"]) == 0
        with np.load(w / f"p{c}.npz") as f:
            meta = json.loads(str(f["meta"]))
        assert meta["channel"] == c and meta["timepoints"] == [0, 2] and meta["factor"] == 4
        assert main(["train", str(w / f"p{c}.npz"), str(w / f"psf{c}.json"), str(w / f"m{c}.safetensors"),
                     str(w / f"curve{c}.tsv"), "--steps", "2", "--batch-size", "8", "--warmup-steps", "0",
                     "--threads", "1"]) == 0
        for t in range(T):
            out = w / f"r_t{t}_c{c}.zarr"
            assert main(["predict", str(converted), str(w / f"m{c}.safetensors"), str(out), "--channel", str(c),
                         "--time", str(t), "--threads", "1"]) == 0
            parts += ["--part", str(t), str(c), str(out)]
    assert main(["predict", str(converted), str(w / "m0.safetensors"), str(w / "x.zarr")]) == 2
    assert "predict needs a 3D OME-Zarr image" in capsys.readouterr().err
    assert main(["assemble", str(converted), str(w / "restored.zarr"), *parts[:-4], "--levels", "2"]) == 2
    assert "no restored volume for time point 2 of channel 1" in capsys.readouterr().err
    assert main(["assemble", str(converted), str(w / "restored.zarr"), *parts, "--levels", "2",
                 "--tiff", str(w / "restored.tif")]) == 0
    group = zarr.open_group(w / "restored.zarr", mode="r")
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [30.0, 1.0, 0.2, 0.2, 0.2]
    assert [ch["label"] for ch in group.attrs["ome"]["omero"]["channels"]] == list(NAMES)
    assert group["0"].shape == (T, C, (Z - 1) * 4 + 1, Y, X)
    for t in range(T):
        for c in range(C):
            np.testing.assert_array_equal(group["0"][t, c], read_ome_zarr(w / f"r_t{t}_c{c}.zarr")[0][:])
    assert group.attrs["isonet"]["acquisition"]["channels"][1]["name"] == "mCherry"
    with tifffile.TiffFile(w / "restored.tif") as tif:
        assert tif.series[0].axes == "TZCYX" and tif.series[0].shape == (T, (Z - 1) * 4 + 1, C, Y, X)
