"""Peak memory and time of ``segment`` and ``evaluate`` on a real restoration, tiled to 1x and 8x (issue 8).

Predicting a large volume with the default network takes hours on a small CPU; segmenting one
does not. This script takes a finished workflow run (its ``results/<sample>/restored.ome.zarr``
and ``input.ome.zarr``, and the synthetic sample's references in
``resources/synthetic/<sample>/``) and builds larger volumes by **mirror-tiling laterally**: tile
(a, b) of a layout ``TYxTX`` is the sample flipped in y when a is odd and in x when b is odd, so
neighbouring tiles meet without a seam; z is untouched, so every tile is a whole restoration (each
nucleus keeps its shape) and the acquired input's axial factor still holds. The acquired input,
GT, iso-GT and GT labels are tiled the same way. GT labels get new ids per tile, so a nucleus cut
by a tile's border and its mirror image across the seam are two objects (the segmentation of the
restoration keeps them apart too: 746 objects for 4 x 188 at 2x2); ``--merge-seams`` makes
them one.

Everything is written as the workflow writes it: the acquired TIFF through
:func:`isonet.storage.export_tiff` and ``isonet convert`` with the run's ``convert`` settings;
the restoration as a predict-stage OME-Zarr turned into ``restored.ome.zarr`` by ``isonet
stitch``; the references as TIFFs (as ``isonet synthetic`` writes them). Then ``isonet
segment`` and ``isonet evaluate`` run with the exact arguments of the workflow's rules
(``workflow/rules/segment.smk``, ``evaluate.smk``; the run's ``segment`` settings), each in its
own process under ``nice -n 19 /usr/bin/time -v`` (``--nice``), which gives its peak RSS (``Maximum resident
set size``), wall, user and system time.

    python benchmarks/segment_eval_tiled.py --run /work/exp/cos600_s0 --sample demo \\
        --layouts 2x2 4x8 --workdir /tmp/isonet-tiled --json docs/benchmark/segment-eval-tiled.json

The first layout is "x1", the last "x8"; figures are last / first. ``--keep`` reuses volumes
already built in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from isonet.storage import create_ome_zarr, export_tiff, open_volume, read_ome_zarr

ISONET = [sys.executable, "-m", "isonet.cli"]
MEASURE = ["/usr/bin/time", "-v"]
#: workflow defaults (config/config.yaml) for settings a run's config leaves out
DEFAULTS = {"segment": {"min_distance": 5, "min_size": 64, "block": [64, 128, 128], "halo": 40},
            "convert": {"chunks": [32, 256, 256], "compression_level": 3, "pyramid_levels": 2},
            "stitch": {"pyramid_levels": 3}}
REFERENCES = {"gt": "gt.tif", "iso_gt": "iso_gt.tif", "gt_labels": "labels.tif"}


def mirror_index(n: int, tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """Source index and tile number of each position along an axis of ``tiles`` mirrored copies of length ``n``.

    Examples
    --------
    >>> src, tile = mirror_index(3, 3)
    >>> src.tolist(), tile.tolist()
    ([0, 1, 2, 2, 1, 0, 0, 1, 2], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    """
    pos = np.arange(n * tiles)
    tile, offset = np.divmod(pos, n)
    return np.where(tile % 2 == 0, offset, n - 1 - offset), tile


class MirrorTiles:
    """A ``(z, y, x)`` volume mirror-tiled ``tiles = (ty, tx)`` times laterally, computed on slicing.

    ``lut`` (one row per tile, ``ty * tx`` rows, indexed by the volume's values) maps the values
    of each tile: new label ids. Numpy-sliceable with slices, as :func:`isonet.storage.export_tiff`
    reads it.
    """

    def __init__(self, volume: np.ndarray, tiles: tuple[int, int], lut: np.ndarray | None = None):
        self.volume, self.tiles, self.lut = volume, tiles, lut
        self.y_src, self.y_tile = mirror_index(volume.shape[1], tiles[0])
        self.x_src, self.x_tile = mirror_index(volume.shape[2], tiles[1])
        self.shape = (volume.shape[0], len(self.y_src), len(self.x_src))
        self.dtype = volume.dtype if lut is None else lut.dtype

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        z, y, x = (*index, slice(None), slice(None))[:3]
        part = self.volume[z][:, self.y_src[y]][:, :, self.x_src[x]]
        if self.lut is None:
            return part
        tile = self.y_tile[y][:, None] * self.tiles[1] + self.x_tile[x][None, :]
        return self.lut[tile[None], part]


def tiled_label_ids(labels: np.ndarray, tiles: tuple[int, int], merge_seams: bool = False) -> np.ndarray:
    """New ids of the labels of every tile: ``lut[tile, label]``, tile ``a * tx + b``, 0 stays 0.

    Each tile's objects get ids of their own. With ``merge_seams`` an object on a tile's border
    is one object with its mirror image across the seam (the two touch there, voxel for voxel):
    their ids are merged. Ids are numbered 1..N in the order of (tile, label).

    Examples
    --------
    >>> tiled_label_ids(np.array([[[0, 1, 2]]]), (1, 2)).tolist()
    [[0, 1, 2], [0, 3, 4]]
    >>> tiled_label_ids(np.array([[[0, 1, 2]]]), (1, 2), merge_seams=True).tolist()
    [[0, 1, 2], [0, 3, 2]]
    """
    ty, tx = tiles
    n = int(labels.max()) + 1
    parent = np.arange(ty * tx * n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def merge(tile_a: int, tile_b: int, border: np.ndarray) -> None:
        for label in np.unique(border[border > 0]):
            ra, rb = root(tile_a * n + int(label)), root(tile_b * n + int(label))
            parent[max(ra, rb)] = min(ra, rb)

    # the seam between tiles a and a+1 along y is the source row that tile a ends on (and a+1 starts on)
    for a in range(ty - 1 if merge_seams else 0):
        row = labels[:, -1 if a % 2 == 0 else 0, :]
        for b in range(tx):
            merge(a * tx + b, (a + 1) * tx + b, row)
    for b in range(tx - 1 if merge_seams else 0):
        column = labels[:, :, -1 if b % 2 == 0 else 0]
        for a in range(ty):
            merge(a * tx + b, a * tx + b + 1, column)
    present = np.zeros(n, bool)
    present[np.unique(labels)] = True
    present[0] = False
    roots = np.array([root(i) for i in range(ty * tx * n)])
    used = np.tile(present, ty * tx)
    new_ids = np.zeros(ty * tx * n, np.int64)
    # a root is the first (tile, label) of its object: sorted roots number objects in that order
    new_ids[used] = np.unique(roots[used], return_inverse=True)[1] + 1
    dtype = np.uint16 if new_ids.max() < 2**16 else np.uint32
    return new_ids.reshape(ty * tx, n).astype(dtype)


def run_config(run: Path) -> dict:
    """The run's settings for segment, convert and stitch (workflow defaults where it has none)."""
    config = {}
    path = run / "config" / "config.yaml"
    if path.exists():
        config = yaml.safe_load(path.read_text()) or {}
    return {section: {**values, **(config.get(section) or {})} for section, values in DEFAULTS.items()}


def run_quiet(cmd: list[str], log: Path) -> None:
    """Run a step that builds inputs (not measured)."""
    with open(log, "w") as out:
        if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"{' '.join(map(str, cmd))} failed; see {log}")


def build(run: Path, sample: str, tiles: tuple[int, int], work: Path, config: dict,
          merge_seams: bool = False) -> dict:
    """Write the tiled acquired input (converted), restoration (stitched) and references into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    results, synthetic = run / "results" / sample, run / "resources" / "synthetic" / sample
    restored_arr, restored_voxel = read_ome_zarr(results / "restored.ome.zarr")
    restored = np.asarray(restored_arr[:], dtype=np.float32)
    volumes = {}
    for name in ("acquired", *REFERENCES):
        array, voxel_size, close = open_volume(synthetic / (REFERENCES.get(name) or f"{name}.tif"))
        volumes[name] = (np.asarray(array[:]), voxel_size)
        close()
    lut = tiled_label_ids(volumes["gt_labels"][0], tiles, merge_seams)

    acquired, acquired_voxel = volumes["acquired"]
    export_tiff(MirrorTiles(acquired, tiles), work / "acquired.tif", acquired_voxel)
    c = config["convert"]
    run_quiet([*ISONET, "convert", str(work / "acquired.tif"), str(work / "input.ome.zarr"), "--chunks",
               *map(str, c["chunks"]), "--compression-level", str(c["compression_level"]),
               "--levels", str(c["pyramid_levels"])], work / "convert.log")
    (work / "acquired.tif").unlink()

    tiled = MirrorTiles(restored, tiles)
    chunks = tuple(restored_arr.chunks)
    provenance = dict(read_provenance(results / "restored.ome.zarr"))
    provenance["tiled"] = {"source": str(results / "restored.ome.zarr"), "tiles": list(tiles), "mirrored": True}
    _, level0 = create_ome_zarr(work / "predicted.ome.zarr", tiled.shape, np.float32, chunks, restored_voxel,
                                provenance=provenance)
    for z0 in range(0, tiled.shape[0], chunks[0]):
        for y0 in range(0, tiled.shape[1], chunks[1]):
            region = (slice(z0, z0 + chunks[0]), slice(y0, y0 + chunks[1]), slice(None))
            level0[region] = tiled[region]
    run_quiet([*ISONET, "stitch", str(work / "predicted.ome.zarr"), str(work / "restored.ome.zarr"),
               "--levels", str(config["stitch"]["pyramid_levels"])], work / "stitch.log")
    shutil.rmtree(work / "predicted.ome.zarr")

    for name, filename in REFERENCES.items():
        volume, voxel_size = volumes[name]
        export_tiff(MirrorTiles(volume, tiles, lut if name == "gt_labels" else None), work / filename, voxel_size)
    summary = {"tiles": list(tiles), "restored_shape": list(tiled.shape), "voxels": int(np.prod(tiled.shape)),
               "restored_float32_mib": round(int(np.prod(tiled.shape)) * 4 / 2**20, 1),
               "gt_objects": int(lut.max()), "gt_seams_merged": merge_seams, "sample_gt_objects": int(len(np.unique(volumes["gt_labels"][0])) - 1)}
    (work / "built.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def read_provenance(path: Path) -> dict:
    import zarr

    return dict(zarr.open_group(path, mode="r").attrs.get("isonet") or {})


def measured(cmd: list[str], log: Path, nice: int = 19) -> dict:
    """Run ``cmd`` under ``nice -n NICE /usr/bin/time -v``: peak RSS (MiB), wall, user and system seconds, load."""
    load = os.getloadavg()[0]
    with open(log, "w") as out:
        code = subprocess.run(["nice", "-n", str(nice), *MEASURE, *cmd], stdout=out,
                              stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}")
    return {**figures_from_log(log.read_text()), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def figures_from_log(text: str) -> dict:
    """Peak RSS (MiB), wall, user and system seconds from ``/usr/bin/time -v``'s report at the end of a stage's log,
    and the windows segment grew around blobs larger than the halo allows (its warnings)."""

    def field(name: str) -> str:
        return re.search(rf"^\s*{re.escape(name)}: (.+)$", text, re.M).group(1).strip()

    wall = 0.0
    for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"):
        wall = wall * 60 + float(part)
    grown = re.findall(r"a blob of extent (\d+)x(\d+)x(\d+) voxels exceeds halo", text)
    largest = max((tuple(map(int, g)) for g in grown), key=np.prod, default=None)
    return {"max_rss_mib": round(int(field("Maximum resident set size (kbytes)")) / 1024, 1),
            "wall_s": round(wall, 1), "user_s": float(field("User time (seconds)")),
            "system_s": float(field("System time (seconds)")),
            "grown_windows": len(grown), "largest_grown_blob": list(largest) if largest else None,
            "parts_split_in_window": sum(int(n) for n in re.findall(r"segment: (\d+) parts of blobs", text))}


def stage_commands(work: Path, config: dict) -> dict[str, list[str]]:
    """``isonet segment`` and ``isonet evaluate`` as the workflow's rules call them."""
    s = config["segment"]
    common = ["--min-distance", str(s["min_distance"]), "--min-size", str(s["min_size"]),
              "--block", *map(str, s["block"]), "--halo", str(s["halo"]),
              *(["--max-window", str(s["max_window"])] if s.get("max_window") else [])]
    restored, labels = work / "restored.ome.zarr", work / "restored.ome.zarr" / "labels" / "nuclei"
    return {
        "segment": [*ISONET, "segment", str(restored), str(labels), "--summary-json", str(work / "labels.json"),
                    *common],
        "evaluate": [*ISONET, "evaluate", str(work / "input.ome.zarr"), str(restored), str(labels),
                     str(work / "metrics.json"), str(work / "metrics.md"),
                     *[a for name, f in REFERENCES.items() for a in (f"--{name.replace('_', '-')}", str(work / f))],
                     *common],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="/work/exp/cos600_s0", help="a finished workflow run (read only)")
    p.add_argument("--sample", default="demo", help="a synthetic sample of that run")
    p.add_argument("--layouts", nargs="+", default=["2x2", "4x8"], help="tiles TYxTX; first = x1, last = x8")
    p.add_argument("--workdir", default="/tmp/isonet-segment-eval-tiled")
    p.add_argument("--keep", action="store_true", help="reuse volumes already built in --workdir")
    p.add_argument("--stages", nargs="+", choices=["segment", "evaluate"], default=["segment", "evaluate"])
    p.add_argument("--merge-seams", action="store_true",
                   help="GT labels: an object cut by a tile's border and its mirror image are one object "
                        "(default: each tile's objects keep ids of their own)")
    p.add_argument("--records-only", action="store_true",
                   help="run nothing: take the figures from the stage logs of an earlier run in --workdir")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--nice", type=int, default=19, help="niceness of the measured stages (default 19)")
    p.add_argument("--max-window", type=int, default=None,
                   help="segment.max_window for both stages (default: the run's config, else isonet's default)")
    args = p.parse_args()
    run = Path(args.run)
    config = run_config(run)
    if args.max_window:
        config["segment"]["max_window"] = args.max_window
    sample_metrics = json.loads((run / "results" / args.sample / "metrics.json").read_text())
    sample_labels = json.loads((run / "results" / args.sample / "labels.json").read_text())
    runs = {}
    for layout in args.layouts:
        tiles = tuple(int(t) for t in layout.split("x"))
        work = Path(args.workdir) / layout
        if (args.keep or args.records_only) and (work / "built.json").exists():
            built = json.loads((work / "built.json").read_text())
            if "restored_float32_mb" in built:  # written by the first version of this script, in MiB
                built["restored_float32_mib"] = built.pop("restored_float32_mb")
        elif args.records_only:
            raise SystemExit(f"{work}: no volumes built there (built.json); run without --records-only first")
        else:
            shutil.rmtree(work, ignore_errors=True)
            t0 = time.perf_counter()
            built = build(run, args.sample, tiles, work, config, args.merge_seams)
            print(f"{layout}: built {built['restored_shape']} in {time.perf_counter() - t0:.0f} s", flush=True)
        entry = {**built, "stages": {}}
        for stage, cmd in stage_commands(work, config).items():
            if stage not in args.stages:
                continue
            if args.records_only:
                log = work / f"{stage}.log"
                if log.exists() and "Maximum resident set size" in log.read_text():
                    entry["stages"][stage] = {**figures_from_log(log.read_text()),
                                              "command": " ".join(MEASURE + cmd)}
                continue
            if stage == "segment" and (work / "restored.ome.zarr" / "labels").exists():
                shutil.rmtree(work / "restored.ome.zarr" / "labels")
            entry["stages"][stage] = figures = measured(cmd, work / f"{stage}.log", args.nice)
            entry["stages"][stage]["command"] = " ".join(["nice", "-n", str(args.nice), *MEASURE, *cmd])
            print(f"{layout} {stage:9s} peak {figures['max_rss_mib']:7.1f} MiB, wall {figures['wall_s']:7.1f} s, "
                  f"cpu {figures['user_s'] + figures['system_s']:7.1f} s, grown windows {figures['grown_windows']} "
                  f"(largest {figures['largest_grown_blob']}), load {figures['load_before']}-{figures['load_after']}",
                  flush=True)
        if (work / "labels.json").exists():
            entry["n_objects"] = json.loads((work / "labels.json").read_text())["n_objects"]
        if (work / "metrics.json").exists():
            metrics = json.loads((work / "metrics.json").read_text())
            entry["seg"], entry["psnr"] = metrics["seg"], metrics["psnr"]
        runs[layout] = entry
    small, large = runs[args.layouts[0]], runs[args.layouts[-1]]
    growth, time_ratio = {}, {}
    for stage in args.stages:
        if stage not in small["stages"] or stage not in large["stages"]:
            continue
        a, b = small["stages"][stage], large["stages"][stage]
        growth[stage] = round(b["max_rss_mib"] / a["max_rss_mib"], 3)
        time_ratio[stage] = {
            "wall": round((b["wall_s"] / large["voxels"]) / (a["wall_s"] / small["voxels"]), 3),
            "cpu": round(((b["user_s"] + b["system_s"]) / large["voxels"])
                         / ((a["user_s"] + a["system_s"]) / small["voxels"]), 3)}
    peak_small = max(s["max_rss_mib"] for s in small["stages"].values())
    result = {
        "memory_growth": growth, "per_voxel_time_ratio": time_ratio,
        "voxel_ratio": round(large["voxels"] / small["voxels"], 3),
        "larger_volume_exceeds_smaller_peak": large["restored_float32_mib"] > peak_small,
        "sample": {"run": str(run), "sample": args.sample, "seg": sample_metrics.get("seg"),
                   "n_objects": sample_labels.get("n_objects"), "restored_shape": sample_metrics.get("restored_shape")},
        "settings": config, "runs": runs, "command": " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(f"x{result['voxel_ratio']:.0f} the voxels: " + ", ".join(
        f"{s} peak x{growth[s]:.2f}, time per voxel x{time_ratio[s]['wall']:.2f} wall / x{time_ratio[s]['cpu']:.2f} cpu"
        for s in growth))
    for layout, entry in runs.items():
        if entry.get("seg"):
            print(f"{layout}: SEG restored {entry['seg'].get('restored'):.4f} (sample {result['sample']['seg']['restored']:.4f}), "
                  f"objects {entry.get('n_objects')} vs GT {entry['gt_objects']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
