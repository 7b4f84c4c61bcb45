"""The Snakemake workflow on a time-lapse, multi-channel sample (issue 9).

A synthetic 2-channel, 3-time-point OME-TIFF whose OME-XML carries the optics (objective NA and
immersion, each channel's wavelengths, confocal acquisition) runs through the whole workflow
with ``psf_kind auto``: one PSF and one model per channel, one predict job per (time point,
channel), one TCZYX restoration with the input's scales, channel names and time step, the
segmented channel's NGFF labels inside it, and PSNR per time point and channel against the
isotropic ground truth (the sheet's iso_gt, an OME-TIFF with the input's time points and channels).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import yaml
import zarr

from isonet.baselines import cubic_upsample
from isonet.metrics import psnr_affine
from isonet.psf import isotropic_psf, make_psf, psf_from_acquisition
from isonet.storage import Acquisition, ChannelInfo
from isonet.synthetic import make_dataset
from test_workflow import deploy, job_counts, run_snakemake

CHANNELS = (("GFP", 488.0, 510.0), ("mCherry", 561.0, 610.0))
VOXEL = (0.8, 0.2, 0.2)  # axial factor 4
ISO = (48, 48, 48)  # each volume on the isotropic grid: 12 acquired planes of 48 x 48
N_T, N_C, FACTOR = 3, 2, 4
NA = 0.8  # water: a long axial PSF, so restoration has something to gain over cubic upsampling


def ome_xml(shape) -> str:
    t, c, z, y, x = shape
    channels = "".join(
        f'<Channel ID="Channel:0:{i}" Name="{name}" SamplesPerPixel="1" ExcitationWavelength="{ex}" '
        f'EmissionWavelength="{em}" PinholeSize="50" AcquisitionMode="LaserScanningConfocalMicroscopy"/>'
        for i, (name, ex, em) in enumerate(CHANNELS))
    return ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            f'<Instrument ID="Instrument:0"><Objective ID="Objective:0" LensNA="{NA}" Immersion="Water" '
            'NominalMagnification="40"/></Instrument><Image ID="Image:0"><InstrumentRef ID="Instrument:0"/>'
            '<ObjectiveSettings ID="Objective:0"/>'
            f'<Pixels ID="Pixels:0" DimensionOrder="XYZCT" Type="uint16" SizeX="{x}" SizeY="{y}" SizeZ="{z}" '
            f'SizeC="{c}" SizeT="{t}" PhysicalSizeX="{VOXEL[2]}" PhysicalSizeY="{VOXEL[1]}" '
            f'PhysicalSizeZ="{VOXEL[0]}" TimeIncrement="30" TimeIncrementUnit="s">{channels}<TiffData/>'
            '</Pixels></Image></OME>')


def simulated_series():
    """(stack (t, c, z, y, x) uint16, {(t, c): isotropic ground truth}), each channel imaged with
    the PSF `psf.kind: auto` builds from the same optics."""
    acquisition = Acquisition(
        channels=tuple(ChannelInfo(n, ex, em, 50.0) for n, ex, em in CHANNELS), na=NA, immersion="Water",
        magnification=40.0, microscope="confocal", voxel_size=VOXEL, source="OME-XML")
    stack = np.zeros((N_T, N_C, ISO[0] // FACTOR, *ISO[1:]), np.uint16)
    truth = {}
    for c in range(N_C):
        kind, params, _ = psf_from_acquisition(acquisition, c)
        h = make_psf(kind, **params)
        for t in range(N_T):
            ds = make_dataset("nuclei", ISO, h, isotropic_psf(h), FACTOR, seed=10 * c + t, photons=500)
            stack[t, c], truth[t, c] = ds.acquired, ds.iso_gt
    return stack, truth


OVERLAY = {
    "convert": {"chunks": [12, 48, 48]},
    "psf": {"kind": "gaussian", "params": {"sigma_xy": 2.0, "sigma_z": 8.0}, "mode": "full", "file": ""},
    # 80 steps on 256 patches left one channel's network at the identity (restored == cubic)
    "patches": {"n_patches": 384, "patch_size": 32},
    "train": {"steps": 150, "batch_size": 16, "warmup_steps": 10, "rounds": 2, "refine_steps": 10, "refine_planes": 24},
    "predict": {"chunks": [48, 48, 48], "block": [48, 48, 48]},
    "stitch": {"pyramid_levels": 2, "export_tiff": True},
    "segment": {"min_distance": 5, "min_size": 16, "channels": ["GFP"]},
    "resources": {"default": {"threads": 1, "mem_mb": 1000, "runtime": 10},
                  "train": {"threads": 2}, "predict": {"threads": 2}},
}


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("series")
    stack, truth = simulated_series()
    tifffile.imwrite(workdir / "run.ome.tif", stack, description=ome_xml(stack.shape), metadata=None,
                     photometric="minisblack")
    iso_gt = np.stack([np.stack([truth[t, c] for c in range(N_C)]) for t in range(N_T)]).astype(np.float32)
    tifffile.imwrite(workdir / "iso_gt.ome.tif", iso_gt, ome=True, metadata={"axes": "TCZYX"})
    # psf_kind auto in the sheet (the config's kind is gaussian); train on 2 of the 3 time points
    deploy(workdir, "sample\tinput\tpsf_kind\ttrain_timepoints\tiso_gt\n"
                    "run\trun.ome.tif\tauto\t2\tiso_gt.ome.tif\n", OVERLAY)
    result = run_snakemake(workdir, "--cores", "2", "--configfile", "overlay.yaml", timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, stack, truth


def test_one_model_per_channel_every_time_point_restored(series_run):
    workdir, _, _ = series_run
    results = workdir / "results" / "run"
    for c, (name, _, emission) in enumerate(CHANNELS):
        psf = json.loads((results / f"c{c}" / "psf" / "psf.json").read_text())
        assert psf["requested_kind"] == "auto" and psf["kind"] == "confocal"
        assert psf["acquisition"]["values"]["emission_nm"] == {"value": emission, "source": "OME-XML"}
        assert psf["acquisition"]["values"]["na"] == {"value": NA, "source": "OME-XML"}
        with np.load(results / f"c{c}" / "train" / "patches.npz") as f:
            meta = json.loads(str(f["meta"]))
        assert meta["channel"] == c and meta["timepoints"] == [0, 2]
        assert (results / f"c{c}" / "train" / "model.safetensors").stat().st_size > 0
        assert (results / f"c{c}" / "report" / "orthoviews.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (results / f"c{c}" / "report" / "training_curve.png").is_file()
    assert sorted(p.name for p in (results / "predict").iterdir()) == sorted(
        f"t{t}_c{c}.ome.zarr" for t in range(N_T) for c in range(N_C))
    assert not (results / "train").exists() and not (results / "psf").exists()  # no 3D-sample jobs
    # segment.channels: [GFP] -> every time point of channel 0, nothing of channel 1
    assert sorted(p.name for p in (results / "segment").iterdir()) == ["c0.json"]
    summary = json.loads((results / "segment" / "c0.json").read_text())
    assert summary["channel_name"] == "GFP" and [p["t"] for p in summary["timepoints"]] == list(range(N_T))
    assert min(p["n_objects"] for p in summary["timepoints"]) > 0


def test_segmented_channel_is_ngff_labels_of_the_restored_image(series_run):
    models = pytest.importorskip("ome_zarr_models.v05")
    workdir, _, _ = series_run
    restored = workdir / "results" / "run" / "restored.ome.zarr"
    ngff = models.Image.from_zarr(zarr.open_group(restored, mode="r"))
    assert ngff.labels.label_paths == ["GFP"]
    label = ngff.labels.get_image_labels_group("GFP")
    assert label.ome_attributes.image_label.source.image == "../../"
    assert [a.name for a in label.ome_attributes.multiscales[0].axes] == ["t", "c", "z", "y", "x"]
    image, labels = zarr.open_group(restored, mode="r"), zarr.open_group(restored / "labels" / "GFP", mode="r")
    assert labels["0"].shape == (N_T, 1, *image["0"].shape[2:])
    scale = labels.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [30.0, 1.0, 0.2, 0.2, 0.2]  # the image's time step and voxel size
    summary = json.loads((workdir / "results" / "run" / "segment" / "c0.json").read_text())
    for t in range(N_T):  # as many objects in each time point's labels as the summary says
        assert len(np.unique(labels["0"][t, 0])) - 1 == summary["timepoints"][t]["n_objects"]


def test_restored_axes_scales_channel_names_and_time_step(series_run):
    workdir, stack, _ = series_run
    results = workdir / "results" / "run"
    group = zarr.open_group(results / "restored.ome.zarr", mode="r")
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscale["axes"]] == ["t", "c", "z", "y", "x"]
    assert multiscale["axes"][0] == {"name": "t", "type": "time", "unit": "second"}
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [30.0, 1.0, 0.2, 0.2, 0.2]
    assert [ch["label"] for ch in group.attrs["ome"]["omero"]["channels"]] == [n for n, _, _ in CHANNELS]
    z = stack.shape[2]
    assert group["0"].shape == (N_T, N_C, (z - 1) * FACTOR + 1, *ISO[1:])
    with tifffile.TiffFile(results / "restored.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZCYX"
        assert tif.imagej_metadata["finterval"] == 30.0


def test_each_restored_channel_is_closer_to_its_ground_truth_than_cubic(series_run):
    workdir, stack, truth = series_run
    results = workdir / "results" / "run"
    metrics = json.loads((results / "metrics.json").read_text())
    assert [(v["t"], v["channel"]) for v in metrics["volumes"]] == [
        (t, name) for t in range(N_T) for name, _, _ in CHANNELS]
    for name, _, _ in CHANNELS:
        gains = [v["psnr"]["iso_gt"]["restored"] - v["psnr"]["iso_gt"]["cubic"]
                 for v in metrics["volumes"] if v["channel"] == name]
        print(name, "restored - cubic PSNR (dB) per time point:", np.round(gains, 2))
        assert min(gains) > 0.5, (name, gains)  # 2.5 to 4 dB seen; an untrained (identity) network gives 0
    # the workflow's figures are those of the volumes themselves (one checked in memory)
    restored = zarr.open_group(results / "restored.ome.zarr", mode="r")["0"][1, 1]
    cubic = cubic_upsample(stack[1, 1].astype(np.float32), FACTOR)
    n = restored.shape[0]
    volume = metrics["volumes"][1 * N_C + 1]
    assert volume["psnr"]["iso_gt"]["restored"] == pytest.approx(psnr_affine(restored, truth[1, 1][:n]), rel=1e-6)
    assert volume["psnr"]["iso_gt"]["cubic"] == pytest.approx(psnr_affine(cubic[:n], truth[1, 1][:n]), rel=1e-6)
    table = (results / "metrics.md").read_text()
    assert table.count("| iso_gt |") == N_T * N_C + 1  # one row per time point and channel, and the mean
    assert "<th>mCherry</th>" in (results / "report" / "metrics.html").read_text()


def test_orthoviews_show_the_middle_time_point_of_each_channel(series_run, tmp_path):
    from isonet.stages.report import orthoviews_stage

    workdir, _, _ = series_run
    results = workdir / "results" / "run"
    # input and restoration of time point t of channel c, drawn as the rule draws them
    for t, c in [(N_T // 2, c) for c in range(N_C)] + [(0, 0)]:
        name = CHANNELS[c][0]
        png = orthoviews_stage(tmp_path / f"t{t}_c{c}.png", results / "input.ome.zarr", results / "restored.ome.zarr",
                               title=f"run {name}", t=t, c=c)["output"]
        drawn = (results / f"c{c}" / "report" / "orthoviews.png").read_bytes()
        assert (open(png, "rb").read() == drawn) == (t == N_T // 2), (name, t)


def test_rerun_after_deleting_one_prediction_redoes_only_it_and_assemble(series_run):
    workdir, _, _ = series_run
    shutil.rmtree(workdir / "results" / "run" / "predict" / "t1_c0.ome.zarr")
    result = run_snakemake(workdir, "-n", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts.get("predict_timepoint") == 1 and counts.get("assemble") == 1, counts
    assert not {"convert", "psf_channel", "patches_channel", "train_channel"} & set(counts), counts
    assert "t1_c0.ome.zarr" in result.stdout + result.stderr


def test_three_d_samples_beside_a_series_keep_their_rules(series_run, tmp_path):
    """A sheet with a 3D z-stack and a series: the z-stack still goes through stitch, the series through assemble."""
    workdir, stack, _ = series_run
    shutil.copy(workdir / "run.ome.tif", tmp_path / "run.ome.tif")
    tifffile.imwrite(tmp_path / "stack.tif", stack[0, 0], photometric="minisblack")
    sheet = ("sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\tpsf_kind\tpsf_params\tna\n"
             'stack\tstack.tif\t0.8\t0.2\t0.2\tgaussian\t{"sigma_xy": 2, "sigma_z": 8}\t\n'
             "run\trun.ome.tif\t\t\t\t\t\t0.9\n")
    deploy(tmp_path, sheet, {k: v for k, v in OVERLAY.items() if k != "psf"})
    # `psf: {kind: auto}` as the config's whole psf section (no params, mode or file)
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({**config, "psf": {"kind": "auto"}}))
    result = run_snakemake(tmp_path, "-n", "-p", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["stitch"] == 1 and counts["assemble"] == 1 and counts["convert"] == 2
    assert counts["train"] == 1 and counts["train_channel"] == 2 and counts["predict_timepoint"] == 6
    assert counts["segment"] == 1 and counts["segment_channel"] == 1
    # the config's kind auto for the series, with the sheet's na overriding the file's for every channel
    assert result.stdout.count("--kind auto") == 2 and result.stdout.count('"na": 0.9') == 2
    assert result.stdout.count("--kind gaussian") == 1 and "--mode full" in result.stdout


def test_unknown_segment_channel_is_one_line_error(series_run, tmp_path):
    workdir, _, _ = series_run
    shutil.copy(workdir / "run.ome.tif", tmp_path / "run.ome.tif")
    overlay = {**OVERLAY, "segment": {**OVERLAY["segment"], "channels": ["DAPI"]}}
    deploy(tmp_path, "sample\tinput\tpsf_kind\nrun\trun.ome.tif\tauto\n", overlay)
    result = run_snakemake(tmp_path, "-n", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode != 0
    message = "segment.channels of sample run: no channel 'DAPI'; the sample has 2 (GFP, mCherry)"
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_series_layout_reads_the_header_with_the_sheets_selection(tmp_path):
    from isonet.errors import InputError
    from isonet.samples import Sample, series_layout

    stack = np.zeros((N_T, N_C, 4, 8, 8), np.uint16)
    path = tmp_path / "run.ome.tif"
    tifffile.imwrite(path, stack, description=ome_xml(stack.shape), metadata=None, photometric="minisblack")
    layout = series_layout(Sample(name="run", input=str(path)))
    assert (layout.n_times, layout.channel_names, layout.voxel_size) == (N_T, ("GFP", "mCherry"), VOXEL)
    chosen = series_layout(Sample(name="run", input=str(path), channels=("mCherry",), timepoints=(0, 2)))
    assert (chosen.n_times, chosen.channel_names) == (2, ("mCherry",))
    assert chosen.channel_index("mCherry", "segment.channels") == 0
    with pytest.raises(InputError, match=r"sample run: channels 'DAPI' is not in the input, which has 2 "
                                         r"\(GFP, mCherry\); fix the channels column"):
        series_layout(Sample(name="run", input=str(path), channels=("DAPI",)))
    with pytest.raises(InputError, match="timepoints 3 is not in the input, which has 3; fix the timepoints column"):
        series_layout(Sample(name="run", input=str(path), timepoints=(3,)))
    with pytest.raises(InputError, match="sample run: gt_labels is not used for a time-lapse or multi-channel sample"):
        series_layout(Sample(name="run", input=str(path), gt_labels="labels.tif"))
    plain = tmp_path / "stack.tif"
    tifffile.imwrite(plain, stack[0, 0], photometric="minisblack")
    assert series_layout(Sample(name="stack", input=str(plain))) is None  # a z-stack keeps the 3D rules
    assert series_layout(Sample(name="demo", input="synthetic")) is None
