"""Generated malformed inputs through ``isonet convert`` and ``isonet patches``: never a traceback.

Hypothesis draws TIFF (plain, ImageJ, OME) and Zarr (plain array, OME-Zarr) inputs of any rank
from 1 to 5, tiny or empty sizes, integer/float/float16/int64/bool/complex data, constant,
near-constant or NaN/inf content, voxel sizes in the file and on the command line (0, negative,
NaN, inf, missing), OME axes strings and units, and damage (truncation at a random offset of
the file, of a Zarr metadata document or chunk, garbled metadata). Each case runs the CLI
in-process; the outcome must be either success, or exit status 2 with a one-line error that
names the input, no output written and the input's bytes unchanged. A conversion that succeeds
must hold exactly the input's pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from isonet.cli import main
from isonet.stages.psf import psf_stage
from isonet.storage import read_ome_zarr

EXAMPLES = 230  # generated cases; the target is >= 200
outcomes: Counter = Counter()


def digest(path: Path) -> str | None:
    """Hash of a file, or of a directory's relative names and file contents; None when absent."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    for p in sorted([path] if path.is_file() else path.rglob("*")):
        h.update(str(p.relative_to(path.parent)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    """``isonet argv`` in-process: exit status and the non-empty stderr lines it printed."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["--log-level", "ERROR", *argv])
    return rc, [line for line in err.getvalue().splitlines() if line.strip()]


# hypothesis draws the first entries more often: the damage a transfer does comes first
DEFECTS = ("damage", "rank", "content", "dtype", "file-voxels", "axes", "tiny", "cli-voxels", "no-voxels", "unit",
           "ratio")


@st.composite
def cases(draw):
    """A sound input (3D, numeric, with voxel sizes) with up to two defects drawn from DEFECTS."""
    fmt = draw(st.sampled_from(["tiff", "imagej", "ome-tiff", "zarr", "ome-zarr"]))
    case = {
        "format": fmt,
        "shape": (draw(st.sampled_from([2, 3, 5, 8])), draw(st.sampled_from([9, 13, 24])),
                  draw(st.sampled_from([9, 13, 24]))),
        "dtype": draw(st.sampled_from(["uint8", "uint16", "int16", "int64", "float16", "float32", "float64", "bool"])),
        "content": "random",
        "seed": draw(st.integers(0, 2**16)),
        "file_voxels": (draw(st.sampled_from([0.5, 1.0, 1.5, 2.0])), 0.5, 0.5),
        "cli_voxels": None,
        "axes": None,
        "unit": "micrometer",
        "damage": "none",
        "cut": 1.0,
    }
    if fmt in ("tiff", "zarr"):  # no voxel sizes in the file: give them on the command line
        case["cli_voxels"], case["file_voxels"] = case["file_voxels"], None
    n_defects = draw(st.sampled_from([0, 1, 1, 1, 2, 2]))
    defects = draw(st.lists(st.sampled_from(DEFECTS), min_size=n_defects, max_size=n_defects, unique=True))
    if "damage" not in defects and draw(st.integers(0, 4)) == 0:  # damage on top, in about 1 case of 4
        defects.append("damage")
    for defect in defects:
        if defect in ("rank", "tiny"):
            ndim = draw(st.sampled_from([1, 2, 3, 4, 5])) if defect == "rank" else 3
            sizes = [0, 1, 2, 3, 4] if defect == "tiny" else [1, 1, 2, 3, 9]
            if not fmt.endswith("zarr"):
                sizes = [s for s in sizes if s]  # tifffile writes no empty images
            case["shape"] = tuple(draw(st.sampled_from(sizes)) for _ in range(ndim))
        elif defect == "dtype":
            case["dtype"] = draw(st.sampled_from(["complex64", "complex128", "bool"]))
        elif defect == "content":
            case["content"] = draw(st.sampled_from(["constant", "one-voxel", "nan", "inf"]))
        elif defect in ("file-voxels", "cli-voxels", "ratio"):
            key = "file_voxels" if defect == "file-voxels" else "cli_voxels"
            bad = draw(st.sampled_from([0.0, -1.0, math.nan, math.inf])) if defect != "ratio" else 0.7
            size = [1.0, 0.5, 0.5]
            size[0 if defect == "ratio" else draw(st.integers(0, 2))] = bad
            case[key] = tuple(size)
        elif defect == "no-voxels":
            case["file_voxels"] = case["cli_voxels"] = None
        elif defect == "axes":
            case["axes"] = draw(st.text("TCZQYXS", min_size=len(case["shape"]), max_size=len(case["shape"])))
        elif defect == "unit":
            case["unit"] = draw(st.sampled_from(["parsec", "", "nanometer"]))
        elif defect == "damage":
            case["damage"] = draw(st.sampled_from(["truncate", "metadata", "array-metadata", "chunk"]))
            case["cut"] = draw(st.floats(0.0, 1.0))
    case["defects"] = defects
    return case


def make_data(case: dict) -> np.ndarray:
    rng = np.random.default_rng(case["seed"])
    shape, dtype = case["shape"], np.dtype(case["dtype"])
    if case["content"] == "constant":
        return np.full(shape, 3, dtype)
    if dtype == np.bool_:
        data = rng.random(shape) > 0.5
    elif dtype.kind == "c":
        data = (rng.normal(100, 30, shape) + 1j * rng.normal(0, 30, shape)).astype(dtype)
    elif dtype.kind == "f":
        data = rng.normal(100, 30, shape).astype(dtype)
    else:
        data = rng.integers(0, 200, shape).astype(dtype)
    if case["content"] == "one-voxel" and data.size:
        data = np.full(shape, 3, dtype)
        data.flat[rng.integers(data.size)] = 1
    if case["content"] in ("nan", "inf") and data.size and dtype.kind in "fc":
        data.flat[rng.integers(data.size)] = np.nan if case["content"] == "nan" else -np.inf
    return data


def expected_volume(data: np.ndarray) -> np.ndarray:
    """What a conversion must store: length-1 axes before y, x dropped; bool as uint8."""
    keep = [s for a, s in enumerate(data.shape) if s != 1 or a >= data.ndim - 2]
    out = data.reshape(keep)
    return out.astype(np.uint8) if out.dtype == np.bool_ else out


def write_tiff(case: dict, data: np.ndarray, path: Path) -> None:
    fmt, voxels = case["format"], case["file_voxels"]
    vz, vy, vx = voxels if voxels else (1.0, 1.0, 1.0)
    try:
        if fmt == "imagej":
            metadata = {}
            if voxels:
                metadata.update(spacing=vz, unit="micron")
            tifffile.imwrite(path, data, imagej=True, metadata=metadata,
                             resolution=(1 / vx, 1 / vy) if voxels and vx > 0 and vy > 0 else None)
            return
        if fmt == "ome-tiff":
            metadata = {} if case["axes"] is None else {"axes": case["axes"]}
            if voxels:
                metadata.update(PhysicalSizeZ=vz, PhysicalSizeY=vy, PhysicalSizeX=vx)
            tifffile.imwrite(path, data, ome=True, metadata=metadata)
            return
    except Exception:  # tifffile refuses this dtype/rank/axes for the format: write a plain TIFF
        path.unlink(missing_ok=True)
    try:
        tifffile.imwrite(path, data, ome=False)  # (tifffile writes OME-TIFF by name, .ome.tif, unless told)
    except Exception:  # e.g. a 1D bool array: no TIFF to test with
        reject()


def write_zarr(case: dict, data: np.ndarray, path: Path) -> None:
    if case["format"] == "zarr":
        zarr.create_array(path, data=data, chunks=tuple(max(1, (s + 1) // 2) for s in data.shape))
        return
    group = zarr.open_group(path, mode="w")
    group.create_array("0", data=data, chunks=tuple(max(1, (s + 1) // 2) for s in data.shape))
    ndim = data.ndim
    names = list(case["axes"].lower()) if case["axes"] else ["t", "c", "z", "y", "x"][-ndim:]
    voxels = case["file_voxels"] or (1.0, 1.0, 1.0)
    scale = ([1.0] * ndim + list(voxels))[-ndim:] if case["file_voxels"] or ndim != 3 else None
    axes = [{"name": n, "type": "space" if n in "zyx" else "other", **({"unit": case["unit"]} if case["unit"] else {})}
            for n in names]
    dataset = {"path": "0"}
    if scale is not None:
        dataset["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dataset]}]}


def damage(case: dict, path: Path) -> bool:
    """Truncate or garble part of the input as the case says; True when something changed."""
    kind, cut = case["damage"], case["cut"]
    if kind == "none":
        return False
    if path.is_file():
        targets = [path] if kind == "truncate" else []
    elif kind == "metadata":
        targets = [path / "zarr.json"]
    elif kind == "array-metadata":
        targets = [p for p in [path / "0" / "zarr.json"] if p.exists()]
    else:
        chunks = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
        targets = chunks[:1] if kind == "chunk" else [path / "zarr.json"]
    if not targets:
        return False
    target = targets[0]
    raw = target.read_bytes()
    if kind == "metadata" and cut < 0.2:
        target.write_bytes(b"\x00\xff{ not json")
    else:
        target.write_bytes(raw[: int(cut * len(raw))])
    return True


def check_failure(rc: int, lines: list[str], command: str, named: Path, outputs: list[Path]) -> None:
    assert rc == 2, (rc, lines)
    errors = [line for line in lines if f"isonet {command}: error:" in line]
    assert len(errors) == 1, lines
    assert not any("Traceback" in line for line in lines), lines
    assert str(named) in errors[0], errors[0]
    for out in outputs:
        assert not out.exists(), f"{out} was written"
    leftovers = [p.name for p in outputs[0].parent.iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


@pytest.fixture(scope="module")
def psf_npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("psf")
    psf_stage(d / "psf.npz", d / "psf.json", "gaussian", {"sigma_xy": 0.8, "sigma_z": 1.5, "shape": [7, 5, 5]})
    return d / "psf.npz"


def run_case(case: dict, psf: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(case)
        is_tiff = not case["format"].endswith("zarr")
        source = tmp / ("in.ome.tif" if case["format"] == "ome-tiff" else "in.tif" if is_tiff else "in.zarr")
        (write_tiff if is_tiff else write_zarr)(case, data, source)
        damaged = damage(case, source)
        outcomes["cases"] += 1
        outcomes.update(f"defect {d}" for d in case["defects"] or ["none"])
        out_dir = tmp / "out"
        out_dir.mkdir()
        store = out_dir / "image.zarr"
        argv = ["convert", str(source), str(store)]
        if case["cli_voxels"]:
            argv += ["--voxel-size", *map(str, case["cli_voxels"])]
        before = digest(source)
        rc, lines = run_cli(argv)
        assert digest(source) == before, "convert changed its input"
        if rc != 0:
            outcomes["convert refused"] += 1
            check_failure(rc, lines, "convert", source, [store])
            return
        outcomes["convert accepted"] += 1
        converted, _ = read_ome_zarr(store)
        expected = expected_volume(data)
        assert converted.shape == expected.shape, (converted.shape, expected.shape, damaged)
        np.testing.assert_array_equal(converted[:], expected)

        npz = out_dir / "patches.npz"
        before = digest(store)
        rc, lines = run_cli(["patches", str(store), str(psf), str(npz), "--patch-size", "8", "--n-patches", "4",
                             "--max-planes", "4"])
        assert digest(store) == before, "patches changed its input"
        if rc != 0:
            outcomes["patches refused"] += 1
            check_failure(rc, lines, "patches", store, [npz])
            return
        outcomes["patches accepted"] += 1
        with np.load(npz) as f:
            assert f["Y"].shape == (4, 8, 8) and np.isfinite(f["S"]).all() and np.isfinite(f["Y"]).all()


def test_generated_malformed_inputs(psf_npz):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(cases())
    def check(case):
        run_case(case, psf_npz)

    outcomes.clear()
    check()
    print("fuzz outcomes:", json.dumps(dict(outcomes)))
    assert outcomes["cases"] >= 200  # inputs written and run (a few draws that tifffile cannot write are skipped)
    # the generator reaches every stage: some inputs pass convert, some patches, some are refused
    assert min(outcomes[k] for k in ("convert refused", "convert accepted", "patches refused",
                                     "patches accepted")) >= 5, outcomes
