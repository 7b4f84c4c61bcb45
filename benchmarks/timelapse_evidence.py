"""docs/evidence/timelapse-run.md from a finished run of the workflow on a multi-channel time-lapse.

Usage (after the run; see the commands in the document it writes)::

    python benchmarks/timelapse_evidence.py WORKDIR docs/evidence

WORKDIR is the Snakemake working directory of one sample ``run`` (as tests/test_timelapse_workflow.py
deploys it). Writes ``timelapse-run.md`` and copies each channel's orthoview PNG next to it.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import zarr


def job_stats(workdir: Path) -> str:
    """The job-stats table of the first Snakemake log in WORKDIR/.snakemake/log."""
    log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[0]
    text = log.read_text()
    table = re.search(r"Job stats:\n(.*?\ntotal +\d+)\n", text, re.S)
    return table.group(1) if table else "(no job stats in the log)"


def job_times(workdir: Path) -> list[tuple[str, float, float]]:
    """(job, wall s, max RSS MB) from the rules' benchmark files."""
    rows = []
    for tsv in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        header, values = tsv.read_text().splitlines()[:2]
        record = dict(zip(header.split("\t"), values.split("\t")))
        rows.append((str(tsv.relative_to(workdir / "logs" / "benchmarks").with_suffix("")),
                     float(record["s"]), float(record["max_rss"])))
    return rows


def tree(root: Path, depth: int = 3) -> list[str]:
    """Files and folders under root to ``depth`` levels; zarr stores are one line (with their arrays)."""
    lines = []

    def walk(path: Path, level: int):
        for child in sorted(path.iterdir()):
            rel = child.relative_to(root)
            if child.name.endswith(".zarr"):
                arrays = sorted(p.parent.relative_to(child).as_posix() for p in child.rglob("zarr.json")
                                if json.loads(p.read_text()).get("node_type") == "array")
                lines.append(f"{rel}/  (zarr: {', '.join(arrays)})")
            elif child.is_dir():
                lines.append(f"{rel}/")
                if level < depth:
                    walk(child, level + 1)
            else:
                lines.append(f"{rel}  ({child.stat().st_size:,} bytes)")

    walk(root, 1)
    return lines


def main(workdir: str, out_dir: str) -> None:
    workdir, out_dir = Path(workdir), Path(out_dir)
    results = workdir / "results" / "run"
    image = zarr.open_group(results / "restored.ome.zarr", mode="r")
    names = [ch["label"] for ch in image.attrs["ome"]["omero"]["channels"]]
    md = ["# A multi-channel time-lapse through the workflow (issue 9)", "",
          "One run of the Snakemake workflow on the synthetic 2-channel, 3-time-point confocal OME-TIFF of",
          "`tests/test_timelapse_workflow.py` (`simulated_series`: nuclei, 12 planes of 48 × 48 pixels per",
          "volume, voxel 0.8 × 0.2 × 0.2 µm, axial factor 4; OME-XML with objective NA 0.8 water, each",
          "channel's wavelengths and pinhole, `LaserScanningConfocalMicroscopy`; each channel imaged with the",
          "PSF `psf.kind: auto` builds from that metadata). Sample sheet: `psf_kind` `auto`, `train_timepoints`",
          "2, `iso_gt` the isotropic ground truth (OME-TIFF, TCZYX); config overlay `OVERLAY` of that test",
          "(384 patches of 32², 150 training steps per channel, `segment.channels: [GFP]`). CPU only, 2 CPU",
          "cores shared with other work (wall times below are not benchmarks).", "",
          "## Commands", "", "```bash",
          "# inputs and config as the test's series_run fixture writes them (run.ome.tif, iso_gt.ome.tif,",
          "# config/, overlay.yaml), into WORKDIR; then",
          "python -m snakemake -s workflow/Snakefile -d WORKDIR --cores 2 --configfile overlay.yaml",
          "python benchmarks/timelapse_evidence.py WORKDIR docs/evidence   # this file", "```", "",
          "## Jobs (Snakemake's job stats)", "", "```", job_stats(workdir), "```", "",
          "| job | wall s | max RSS MB |", "|---|---|---|"]
    md += [f"| {job} | {s:.1f} | {rss:.0f} |" for job, s, rss in job_times(workdir)]
    md += ["", "## Outputs", "", "```", *tree(results), "```", "",
           "## PSF of each channel, from the metadata", "",
           "Values `psf.kind: auto` used (from `results/run/c<c>/psf/psf.json`, each with its source) and the",
           "model's parameters:", "",
           "| channel | model | NA | immersion n | excitation nm | emission nm | pinhole AU | lateral voxel µm "
           "| PSF shape | FWHM z / xy (voxels) |", "|---|---|---|---|---|---|---|---|---|---|"]
    sources = set()
    for c, name in enumerate(names):
        psf = json.loads((results / f"c{c}" / "psf" / "psf.json").read_text())
        values = psf["acquisition"]["values"]
        sources |= {f"{k}: {v['source']}" for k, v in values.items()}
        cell = lambda k: str(values[k]["value"]) if k in values else "–"  # noqa: E731
        fwhm = psf["fwhm_voxels"]
        md.append(f"| {name} | {psf['kind']} | {cell('na')} | {cell('immersion_ri')} | {cell('excitation_nm')} "
                  f"| {cell('emission_nm')} | {cell('pinhole_au')} | {cell('voxel_size_x')} | {psf['shape']} "
                  f"| {fwhm['z']:.2f} / {fwhm['x']:.2f} |")
    md += ["", "Sources: " + "; ".join(sorted(sources)) + ".", ""]
    md += ["## Metrics per channel and time point", "",
           "`results/run/metrics.md`, written by rule `evaluate_series` (`isonet evaluate-series`):", ""]
    md += [line.replace("# Evaluation", "#### Evaluation") for line in (results / "metrics.md").read_text().splitlines()]
    md += ["", "## Labels inside the restored image", ""]
    for summary in sorted((results / "segment").glob("c*.json")):
        s = json.loads(summary.read_text())
        md.append(f"Channel {s['channel_name']}: `restored.ome.zarr/labels/{s['channel_name']}`, "
                  + "; ".join(f"time point {p['t']}: {p['n_objects']} object(s) of mean volume {p['mean_volume']:.0f} "
                              f"voxels ({p['threshold_method']} threshold {p['threshold']:.4g})"
                              for p in s["timepoints"]) + " (the 48³ phantom volumes hold few nuclei).")
    try:
        from ome_zarr_models.v05 import Image

        ngff = Image.from_zarr(image)
        label = ngff.labels.get_image_labels_group(ngff.labels.label_paths[0])
        axes = [a.name for a in label.ome_attributes.multiscales[0].axes]
        shape = zarr.open_group(results / "restored.ome.zarr" / "labels" / ngff.labels.label_paths[0])["0"].shape
        md += ["", f"ome-zarr-models reads `restored.ome.zarr` as an Image whose labels are {ngff.labels.label_paths}; "
                   f"the label image has axes {axes} and shape {tuple(shape)} (image {tuple(image['0'].shape)})."]
    except ImportError:
        pass
    md += ["", "## Orthogonal views of the middle time point, per channel", ""]
    for c, name in enumerate(names):
        target = out_dir / f"timelapse-orthoviews-{name}.png"
        shutil.copy(results / f"c{c}" / "report" / "orthoviews.png", target)
        md += [f"Channel {name} (`results/run/c{c}/report/orthoviews.png`, rule `orthoviews_channel`: input and "
               f"restoration of time point {image['0'].shape[0] // 2} of {image['0'].shape[0]}):", "", f"![{name}]({target.name})", ""]
    (out_dir / "timelapse-run.md").write_text("\n".join(md) + "\n")
    print(out_dir / "timelapse-run.md")


if __name__ == "__main__":
    main(*sys.argv[1:3])
