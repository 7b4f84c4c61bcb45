"""Stage ``report``: the per-dataset figures of the workflow report.

* :func:`orthoviews_stage` — xy / xz / yz views through the middle of the input, the restoration
  and (where present) the ground truth, as one PNG. Volumes are read plane by plane from the
  coarsest pyramid level that still shows ``max_plane_size`` pixels, so a terabyte volume costs
  three small reads.
* :func:`training_curve_stage` — ``training.tsv`` (epoch, train_loss, val_loss, seconds) as a PNG.
* :func:`metrics_table_stage` — ``metrics.json`` from ``evaluate`` as an HTML table.

Rendering itself lives in :mod:`isonet.figures`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from isonet.errors import InputError
from isonet.figures import metrics_html, orthogonal_planes, orthoview_figure, plane_indices, training_curve_figure
from isonet.stages.common import check_output_path
from isonet.storage import atomic_path, open_volume, read_ome_zarr, write_text

logger = logging.getLogger(__name__)


def _ome_zarr_level(path, max_plane_size: int, t: int | None = None, c: int | None = None):
    """The finest level of an OME-Zarr whose lateral size is at most ``max_plane_size`` (else the coarsest)."""
    level = 0
    array, voxel_size = read_ome_zarr(path, 0, t=t, c=c)
    while max(array.shape[-2:]) > max_plane_size:
        try:
            array, voxel_size = read_ome_zarr(path, level + 1, t=t, c=c)
        except InputError:
            break
        level += 1
    return array, voxel_size, level


def _open_any(path, max_plane_size: int, t: int | None = None, c: int | None = None):
    """(array, voxel size, close) for an OME-Zarr (pyramid level chosen; time point ``t``, channel ``c``) or a TIFF."""
    name = Path(path).name.lower()
    if Path(path).is_dir() or name.endswith((".zarr", ".zarr/")):
        array, voxel_size, level = _ome_zarr_level(path, max_plane_size, t, c)
        if level:
            logger.info("report: %s: drawing pyramid level %d %s", path, level, tuple(array.shape))
        return array, voxel_size, lambda: None
    return open_volume(path)


def _save_png(figure, path, dpi: int) -> Path:
    path = check_output_path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def orthoviews_stage(out_png, input_zarr, restored_zarr, gt=None, title: str | None = None,
                     max_plane_size: int = 1024, dpi: int = 120, t: int | None = None,
                     c: int | None = None) -> dict:
    """Orthogonal views of input, restoration and ground truth through one point.

    The planes go through the middle acquired plane of the input (and the middle of y and x),
    located in µm, so all rows show the same place even where the grids differ.

    Parameters
    ----------
    out_png : path
        PNG to write.
    input_zarr, restored_zarr : path
        OME-Zarr images (the converted input and the restoration).
    gt : path, optional
        Ground truth on the isotropic grid: TIFF or OME-Zarr with voxel sizes. When it has no
        voxel size, the restoration's is used.
    title : str, optional
        Figure title (e.g. the sample name).
    max_plane_size : int
        Largest plane side drawn; finer pyramid levels are skipped above it.
    dpi : int
        PNG resolution.
    t, c : int, optional
        Time point and channel drawn from a time-lapse / multi-channel input and restoration
        (OME-Zarr with t / c axes); the ground truth is a 3D image of that volume.

    Returns
    -------
    summary : dict
        ``rows`` (label, shape, voxel size and plane indices of each volume) and ``output``.
    """
    volumes = [("input", input_zarr), ("restored", restored_zarr)] + ([("GT", gt)] if gt else [])
    rows, summary_rows, center_um = [], [], None
    restored_vs = None
    for label, path in volumes:
        array, voxel_size, close = _open_any(path, max_plane_size, *((t, c) if label != "GT" else (None, None)))
        try:
            if len(array.shape) != 3:
                raise InputError(f"{path}: expected a 3D (z, y, x) image, got shape {tuple(array.shape)}")
            if voxel_size is None:
                if restored_vs is None:
                    raise InputError(f"{path}: no voxel size in the file; cannot place its planes")
                voxel_size = restored_vs
            if label == "restored":
                restored_vs = voxel_size
            if center_um is None:  # the input's middle plane, in µm
                center_um = tuple(i * v for i, v in zip(plane_indices(array.shape, voxel_size), voxel_size))
            indices = plane_indices(array.shape, voxel_size, center_um)
            rows.append((label, orthogonal_planes(array, indices), voxel_size))
            summary_rows.append({"label": label, "path": str(path), "shape": list(array.shape),
                                 "voxel_size": list(voxel_size), "planes_zyx": list(indices)})
        finally:
            close()
    figure = orthoview_figure(rows, title=title)
    _save_png(figure, out_png, dpi)
    logger.info("report: orthogonal views of %s -> %s", ", ".join(r[0] for r in rows), out_png)
    return {"output": str(out_png), "rows": summary_rows}


def read_training_table(path) -> dict[str, list[float]]:
    """Columns of ``training.tsv`` as float lists (``epoch``, ``train_loss``, ``val_loss``, ...)."""
    try:
        with open(path, newline="") as f:
            records = list(csv.DictReader(f, delimiter="\t"))
    except OSError as err:
        raise InputError(f"{path}: cannot read the training table ({err.strerror})") from err
    needed = ("epoch", "train_loss", "val_loss")
    if not records or any(k not in records[0] for k in needed):
        raise InputError(f"{path}: expected a tab-separated table with columns {', '.join(needed)} and one row per epoch")
    try:
        return {k: [float(r[k]) for r in records] for k in records[0]}
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: non-numeric value in the training table ({err})") from err


def training_curve_stage(curve_tsv, out_png, title: str | None = None, dpi: int = 120) -> dict:
    """Plot ``training.tsv`` (from ``isonet train``) into ``out_png``."""
    table = read_training_table(curve_tsv)
    figure = training_curve_figure(table["epoch"], table["train_loss"], table["val_loss"], title=title)
    _save_png(figure, out_png, dpi)
    logger.info("report: training curve of %d epoch(s) -> %s", len(table["epoch"]), out_png)
    return {"output": str(out_png), "epochs": len(table["epoch"])}


def metrics_table_stage(metrics_json: str | os.PathLike, out_html: str | os.PathLike, title: str | None = None) -> dict:
    """Render ``metrics.json`` (from ``isonet evaluate``) as an HTML page."""
    try:
        metrics = json.loads(Path(metrics_json).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{metrics_json}: cannot read the metrics ({err})") from err
    check_output_path(out_html, [metrics_json])
    write_text(out_html, metrics_html(metrics, title=title))
    logger.info("report: metrics table -> %s", out_html)
    return {"output": str(out_html)}
