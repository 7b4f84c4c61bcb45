import json

import numpy as np
import pytest

from isonet.benchmark import METHODS, CellSettings, format_mean_std, gap_closed, table_markdown
from isonet.errors import InputError
from isonet.stages.benchmark import benchmark_cell_stage, benchmark_table_stage

TINY = {
    "shape": [24, 48, 48], "n_patches": 16, "patch_size": 32, "epochs": 1, "batch_size": 8,
    "rl_iterations": 2, "seg_min_size": 8, "seg_min_distance": 3,
}


def test_tiny_cell_end_to_end_writes_all_methods(tmp_path):
    out = tmp_path / "cell.json"
    benchmark_cell_stage(out, "nuclei", "gaussian", "gaussian", {"sigma_xy": 1.0, "sigma_z": 3.0}, 0, TINY, threads=1)
    r = json.loads(out.read_text())
    assert r["acquired_shape"] == [6, 48, 48] and r["n_iso_planes"] == 21
    for ref in ("iso_gt", "gt"):
        assert set(r["psnr"][ref]) == set(METHODS)
        assert all(np.isfinite(v) for v in r["psnr"][ref].values())
    assert {"iso_gt", "input", "isonet2_full"} <= set(r["seg"])
    assert r["settings"]["rl_iterations"] == 2
    assert set(r["training"]) == {"srcnn", "isonet1_full", "isonet1_split", "isonet2_full", "isonet2_split"}


def test_settings_reject_unknown_keys_and_methods():
    with pytest.raises(InputError, match="epoch"):
        CellSettings.from_dict({"epoch": 3})
    with pytest.raises(InputError, match="methods"):
        CellSettings.from_dict({"methods": ["cubic", "magic"]})


def cell(phantom, psf, stack, psnr_iso, seg=None):
    return {"phantom": phantom, "psf": psf, "stack": stack, "settings": {},
            "psnr": {"iso_gt": psnr_iso, "gt": {k: v - 5 for k, v in psnr_iso.items()}}, "seg": seg}


def test_table_bolds_the_best_mean_and_formats_mean_std(tmp_path):
    cells = [
        cell("nuclei", "gaussian", 0, {"cubic": 20.0, "rl": 21.0, "isonet2_full": 24.0},
             {"iso_gt": 0.9, "input": 0.5, "isonet2_full": 0.85}),
        cell("nuclei", "gaussian", 1, {"cubic": 22.0, "rl": 23.0, "isonet2_full": 26.0},
             {"iso_gt": 0.9, "input": 0.7, "isonet2_full": 0.85}),
        cell("membranes", "gaussian", 0, {"cubic": 30.0, "rl": 31.5, "isonet2_full": 31.0}),
    ]
    md = table_markdown(cells)
    rows = [line for line in md.splitlines() if line.startswith("| nuclei | gaussian")]
    # PSNR vs iso-GT: means 21 (1.41), 22 (1.41), 25 (1.41); std with ddof 1
    assert rows[0] == "| nuclei | gaussian | 2 | 21.00 (1.41) | 22.00 (1.41) | **25.00** (1.41) |"
    assert "| membranes | gaussian | 1 | 30.00 (0.00) | **31.50** (0.00) | 31.00 (0.00) |" in md
    assert md.index("against iso-GT") < md.index("against GT")
    # SEG: iso 0.9, input 0.6, restored 0.85 -> gap closed (0.85 - 0.6) / 0.3 = 83 %
    assert rows[-1] == "| nuclei | gaussian | 2 | 0.900 (0.000) | 0.600 (0.141) | 0.850 (0.000) | 83 % |"
    paths = []
    for i, c in enumerate(cells):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(c))
    text = benchmark_table_stage(paths, tmp_path / "table1.md", notes="note")
    assert (tmp_path / "table1.md").read_text() == text and text.rstrip().endswith("note")
    assert "psnr_affine" in text


def test_formatting_helpers():
    assert format_mean_std(1.005, 0.0449) == "1.00 (0.04)" or format_mean_std(1.005, 0.0449) == "1.01 (0.04)"
    assert format_mean_std(3, 1, digits=1, bold=True) == "**3.0** (1.0)"
    assert gap_closed(0.5, 0.6, 0.6) is None
    assert gap_closed(0.9, 0.5, 0.9) == 1.0
