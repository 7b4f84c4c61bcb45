"""The Snakemake workflow on a time-lapse, multi-channel sample (issue 9).

A synthetic 2-channel, 3-time-point OME-TIFF whose OME-XML carries the optics (objective NA and
immersion, each channel's wavelengths, confocal acquisition) runs through the whole workflow
with ``psf_kind auto``: one PSF and one model per channel, one predict job per (time point,
channel), one TCZYX restoration with the input's scales, channel names and time step.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
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
    "train": {"steps": 150, "batch_size": 16, "warmup_steps": 10},
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
    # psf_kind auto in the sheet (the config's kind is gaussian); train on 2 of the 3 time points
    deploy(workdir, "sample\tinput\tpsf_kind\ttrain_timepoints\nrun\trun.ome.tif\tauto\t2\n", OVERLAY)
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
    assert sorted(p.name for p in (results / "segment").glob("*.json")) == [f"t{t}_c0.json" for t in range(N_T)]
    assert json.loads((results / "segment" / "t1_c0.json").read_text())["n_objects"] > 0


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
    restored = zarr.open_group(workdir / "results" / "run" / "restored.ome.zarr", mode="r")["0"]
    for c, (name, _, _) in enumerate(CHANNELS):
        gains = []
        for t in range(N_T):
            r = restored[t, c]
            cubic = cubic_upsample(stack[t, c].astype(np.float32), FACTOR)
            n = min(r.shape[0], cubic.shape[0])
            gains.append(psnr_affine(r[:n], truth[t, c][:n]) - psnr_affine(cubic[:n], truth[t, c][:n]))
        print(name, "restored - cubic PSNR (dB) per time point:", np.round(gains, 2))
        assert min(gains) > 0.5, (name, gains)  # 2.5 to 4 dB seen; an untrained (identity) network gives 0


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
    sheet = ("sample\tinput\tvoxel_size_z\tvoxel_size_y\tvoxel_size_x\tpsf_kind\tna\n"
             "stack\tstack.tif\t0.8\t0.2\t0.2\t\t\nrun\trun.ome.tif\t\t\t\tauto\t0.9\n")
    deploy(tmp_path, sheet, OVERLAY)
    result = run_snakemake(tmp_path, "-n", "-p", "--configfile", "overlay.yaml", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["stitch"] == 1 and counts["assemble"] == 1 and counts["convert"] == 2
    assert counts["train"] == 1 and counts["train_channel"] == 2 and counts["predict_timepoint"] == 6
    assert counts["segment"] == 1 and counts["segment_timepoint"] == 3
    # the sheet's na overrides the file's, for every channel
    assert result.stdout.count('"na": 0.9') == 2


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
    plain = tmp_path / "stack.tif"
    tifffile.imwrite(plain, stack[0, 0], photometric="minisblack")
    assert series_layout(Sample(name="stack", input=str(plain))) is None  # a z-stack keeps the 3D rules
    assert series_layout(Sample(name="demo", input="synthetic")) is None
