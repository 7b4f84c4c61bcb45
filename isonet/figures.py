"""Figures for the workflow report: orthogonal views, the training curve, the metrics table.

Pure rendering: arrays and numbers in, a matplotlib :class:`~matplotlib.figure.Figure` (or an
HTML string) out. Nothing here reads or writes files; :mod:`isonet.stages.report` does. Figures
are built with the object-oriented API (no ``pyplot``), so no GUI backend or global state is
involved and rendering works on headless cluster nodes.

Orthogonal views are drawn in physical units (µm): each plane is shown with its voxel size as
pixel size, so an anisotropic input appears on the same isotropic footing as the restoration
(each acquired plane stretched over ``σ`` isotropic planes, nearest neighbour) and aspect ratios
are right.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

VIEWS = ("xy", "xz", "yz")


def _check_voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        vs = ()
    if len(vs) != 3 or not all(math.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"voxel_size must be three positive numbers (z, y, x) in µm, got {voxel_size!r}")
    return vs  # type: ignore[return-value]


def plane_indices(shape: Sequence[int], voxel_size: Sequence[float],
                  center_um: Sequence[float] | None = None) -> tuple[int, int, int]:
    """Indices ``(z, y, x)`` of the planes through a point given in µm (default: the middle).

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape ``(z, y, x)``.
    voxel_size : sequence of 3 float
        Voxel size ``(z, y, x)`` in µm.
    center_um : sequence of 3 float, optional
        Point in µm (voxel ``i`` sits at ``i * voxel_size``). Default: the middle voxel
        ``shape // 2``.

    Returns
    -------
    indices : tuple of 3 int
        Nearest voxel indices, clipped to the volume.

    Examples
    --------
    >>> plane_indices((16, 64, 64), (0.8, 0.2, 0.2))
    (8, 32, 32)
    >>> plane_indices((64, 64, 64), (0.2, 0.2, 0.2), center_um=(6.4, 6.4, 6.4))
    (32, 32, 32)
    """
    vs = _check_voxel_size(voxel_size)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive integers (z, y, x), got {shape!r}")
    if center_um is None:
        return tuple(s // 2 for s in shape)  # type: ignore[return-value]
    return tuple(int(min(max(round(c / v), 0), s - 1)) for c, v, s in zip(center_um, vs, shape))  # type: ignore[return-value]


def orthogonal_planes(volume: Any, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """The xy, xz and yz planes of a ``(z, y, x)`` volume through ``indices``.

    Only the three planes are read, so ``volume`` may be a lazy array (zarr, memmap).

    Parameters
    ----------
    volume : array-like, 3D
        Anything with numpy slicing.
    indices : sequence of 3 int
        ``(z, y, x)`` of the planes, e.g. from :func:`plane_indices`.

    Returns
    -------
    planes : dict
        ``"xy"``: ``volume[z]`` (rows y, columns x); ``"xz"``: ``volume[:, y]`` (rows z, columns
        x); ``"yz"``: ``volume[:, :, x]`` (rows z, columns y); float32.

    Examples
    --------
    >>> v = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    >>> {k: p.shape for k, p in orthogonal_planes(v, (1, 1, 1)).items()}
    {'xy': (3, 4), 'xz': (2, 4), 'yz': (2, 3)}
    """
    if len(volume.shape) != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {tuple(volume.shape)}")
    z, y, x = (int(i) for i in indices)
    return {
        "xy": np.asarray(volume[z], dtype=np.float32),
        "xz": np.asarray(volume[:, y, :], dtype=np.float32),
        "yz": np.asarray(volume[:, :, x], dtype=np.float32),
    }


def display_range(planes: Mapping[str, np.ndarray], percentiles: tuple[float, float] = (1.0, 99.8)) -> tuple[float, float]:
    """Grey-level range shared by a volume's planes: the given percentiles of their finite values.

    Examples
    --------
    >>> display_range({"xy": np.arange(101.0)}, (0, 100))
    (0.0, 100.0)
    >>> display_range({"xy": np.zeros((2, 2))})
    (0.0, 1.0)
    """
    values = np.concatenate([np.ravel(p) for p in planes.values()])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _extent(shape: Sequence[int], row_um: float, col_um: float) -> tuple[float, float, float, float]:
    """imshow extent placing the centre of pixel (i, j) at (i * row_um, j * col_um)."""
    rows, cols = shape
    return (-0.5 * col_um, (cols - 0.5) * col_um, (rows - 0.5) * row_um, -0.5 * row_um)


def orthoview_figure(rows: Sequence[tuple[str, Mapping[str, np.ndarray], Sequence[float]]],
                     title: str | None = None, cmap: str = "magma", width_inches: float = 12.0):
    """Orthogonal views of one or more volumes side by side, drawn in µm.

    Each volume gets the classic layout: xy top left, yz to its right (z running left to right,
    sharing the y axis), xz below it (sharing the x axis). Pixels are drawn with their physical
    size and centred on their positions, so an anisotropic input is shown on the isotropic
    footing of the restoration and aspect ratios are right.

    Parameters
    ----------
    rows : sequence of (label, planes, voxel_size)
        One entry per volume: ``label`` names it (e.g. "input", "restored", "GT"); ``planes`` as
        returned by :func:`orthogonal_planes`; ``voxel_size`` ``(z, y, x)`` in µm of that volume.
        Each volume has its own grey-level range (:func:`display_range`): volumes need not share
        intensity units.
    title : str, optional
        Figure title.
    cmap : str
        Matplotlib colormap.
    width_inches : float
        Figure width; the height follows from the physical sizes of the planes.

    Returns
    -------
    figure : matplotlib.figure.Figure
        Save with ``figure.savefig(path, dpi=...)``.

    Examples
    --------
    >>> v = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    >>> planes = orthogonal_planes(v, plane_indices(v.shape, (0.8, 0.2, 0.2)))
    >>> fig = orthoview_figure([("input", planes, (0.8, 0.2, 0.2))], title="demo")
    >>> [ax.get_title() for ax in fig.axes]
    ['input xy', 'input yz', 'input xz']
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("orthoview_figure needs at least one volume")
    checked = []
    for label, planes, voxel_size in rows:
        missing = [v for v in VIEWS if v not in planes]
        if missing:
            raise ValueError(f"volume {label!r} lacks the plane(s) {', '.join(missing)}")
        vs = _check_voxel_size(voxel_size)
        if planes["xy"].shape != (planes["yz"].shape[1], planes["xz"].shape[1]) or \
                planes["xz"].shape[0] != planes["yz"].shape[0]:
            raise ValueError(f"volume {label!r}: plane shapes {[planes[v].shape for v in VIEWS]} do not fit together")
        checked.append((str(label), planes, vs))

    # Physical limits (µm) covering every volume, so that all panels share one scale and box.
    def limits(axis, size):
        return (min(-0.5 * vs[axis] for _, _, vs in checked),
                max((size(p) - 0.5) * vs[axis] for _, p, vs in checked))

    z_lim = limits(0, lambda p: p["xz"].shape[0])
    y_lim = limits(1, lambda p: p["xy"].shape[0])
    x_lim = limits(2, lambda p: p["xy"].shape[1])
    z_um, y_um, x_um = (hi - lo for lo, hi in (z_lim, y_lim, x_lim))
    n = len(checked)
    scale = width_inches / (n * (x_um + z_um) * 1.25)
    height_inches = (y_um + z_um) * scale * 1.25 + (0.5 if title else 0.0) + 0.6
    fig = Figure(figsize=(width_inches, max(height_inches, 2.5)), layout="constrained")
    grid = fig.add_gridspec(2, 2 * n, width_ratios=[x_um, z_um] * n, height_ratios=[y_um, z_um])
    for i, (label, planes, (vz, vy, vx)) in enumerate(checked):
        lo, hi = display_range(planes)
        panels = (  # view, plane (rows, columns), cell, pixel size, axis labels and limits
            ("xy", planes["xy"], grid[0, 2 * i], (vy, vx), ("x (µm)", "y (µm)"), (x_lim, y_lim)),
            ("yz", planes["yz"].T, grid[0, 2 * i + 1], (vy, vz), ("z (µm)", "y (µm)"), (z_lim, y_lim)),
            ("xz", planes["xz"], grid[1, 2 * i], (vz, vx), ("x (µm)", "z (µm)"), (x_lim, z_lim)),
        )
        for view, plane, cell, (row_um, col_um), (xlabel, ylabel), (xlim, ylim) in panels:
            ax = fig.add_subplot(cell)
            ax.imshow(plane, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                      extent=_extent(plane.shape, row_um, col_um), aspect="equal")
            ax.set_xlim(*xlim)
            ax.set_ylim(ylim[1], ylim[0])
            ax.set_title(f"{label} {view}", fontsize=9)
            ax.tick_params(labelsize=7)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def training_curve_figure(epoch: Sequence[float], train_loss: Sequence[float], val_loss: Sequence[float],
                          title: str | None = None):
    """Training and validation loss per epoch, the best validation epoch marked.

    Parameters
    ----------
    epoch, train_loss, val_loss : sequences of float, same length (at least 1)
        Columns of ``training.tsv``. isonet's loss is the negative PSNR (dB): lower is better.
    title : str, optional

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> fig = training_curve_figure([1, 2, 3], [-20, -24, -25], [-21, -24.5, -24.8])
    >>> fig.axes[0].get_xlabel()
    'epoch'
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epoch, train_loss, val_loss = (np.asarray(a, dtype=float).ravel() for a in (epoch, train_loss, val_loss))
    if not (epoch.size == train_loss.size == val_loss.size) or epoch.size == 0:
        raise ValueError(
            f"epoch, train_loss and val_loss need the same, non-zero length; got {epoch.size}, "
            f"{train_loss.size}, {val_loss.size}"
        )
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(epoch, train_loss, "o-", label="training", markersize=4)
    ax.plot(epoch, val_loss, "s-", label="validation", markersize=4)
    if np.isfinite(val_loss).any():
        best = int(np.nanargmin(val_loss))
        ax.plot([epoch[best]], [val_loss[best]], "*", markersize=14, color="black",
                label=f"best validation (epoch {epoch[best]:g}: {val_loss[best]:.3f})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (−PSNR, dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else html.escape(str(value))
    if value is None:
        return "–"
    return html.escape(str(value))


def metrics_html(metrics: Mapping[str, Any], title: str | None = None) -> str:
    """A self-contained HTML page with the tables of ``metrics.json`` (from ``isonet evaluate``).

    Parameters
    ----------
    metrics : mapping
        ``{"factor", "restored_shape", "psnr": {ref: {method: dB}}, "seg": {name: score}}``, and
        for a time-lapse ``volumes`` (``[{"t", "channel", "psnr"}]``); missing parts are left out.
    title : str, optional
        Page heading.

    Returns
    -------
    page : str

    Examples
    --------
    >>> page = metrics_html({"factor": 4, "psnr": {"gt": {"restored": 30.0, "cubic": 27.5}}})
    >>> "<td>30.000</td>" in page
    True
    """
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title or 'metrics')}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #bbb;padding:3px 10px;text-align:right}th{background:#eee}</style>",
        "</head><body>",
    ]
    if title:
        parts.append(f"<h2>{html.escape(title)}</h2>")
    facts = []
    if "factor" in metrics:
        facts.append(f"axial factor {_cell(metrics['factor'])}")
    if "restored_shape" in metrics:
        facts.append("restored grid " + " × ".join(_cell(s) for s in metrics["restored_shape"]))
    if facts:
        parts.append(f"<p>{', '.join(facts)}</p>")
    psnr = metrics.get("psnr") or {}
    volumes = metrics.get("volumes") or []
    if volumes:  # a time-lapse / multi-channel sample: one row per time point, channel and reference
        parts.append("<h3>PSNR (dB, after affine intensity fit) of each time point and channel</h3><table><tr>"
                     "<th>time point</th><th>channel</th><th>reference</th><th>restored</th><th>cubic</th></tr>")
        for v in volumes:
            for ref, row in v["psnr"].items():
                parts.append(f"<tr><th>{_cell(v['t'])}</th><th>{html.escape(str(v['channel']))}</th>"
                             f"<th>{html.escape(str(ref))}</th><td>{_cell(row.get('restored'))}</td>"
                             f"<td>{_cell(row.get('cubic'))}</td></tr>")
        parts.append("</table>")
    if psnr:
        methods = sorted({m for row in psnr.values() for m in row}, key=lambda m: (m != "restored", m))
        mean = f", mean over the {len(volumes)} volumes" if volumes else ""
        parts.append(f"<h3>PSNR (dB, after affine intensity fit{mean})</h3><table><tr><th>reference</th>"
                     + "".join(f"<th>{html.escape(m)}</th>" for m in methods) + "</tr>")
        for ref, row in psnr.items():
            parts.append(f"<tr><th>{html.escape(str(ref))}</th>"
                         + "".join(f"<td>{_cell(row.get(m))}</td>" for m in methods) + "</tr>")
        parts.append("</table>")
    seg = metrics.get("seg") or {}
    if seg:
        parts.append("<h3>SEG (ISBI 2013, vs ground-truth labels)</h3><table><tr><th>segmentation of</th><th>SEG</th></tr>")
        for name, value in seg.items():
            parts.append(f"<tr><th>{html.escape(str(name))}</th><td>{_cell(value)}</td></tr>")
        parts.append("</table>")
    if not psnr and not seg:
        parts.append("<p>No metrics: this dataset has no ground truth.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _um(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def quality_html(quality: Mapping[str, Any], title: str | None = None) -> str:
    """A self-contained HTML page with the tables of ``quality.json`` (from ``isonet assess``).

    Parameters
    ----------
    quality : mapping
        ``{"resolution": {volume: {"fwhm_um": {z, y, x}, "isotropy_ratio"}}, "reacquisition":
        {volume: {"fresh_psnr_db", "psnr_db", "chi_square", "correlation", "worst_planes"}}, "uncertainty": {...},
        "how_to_read": {section: sentence}}``; missing parts are left out.
    title : str, optional
        Page heading.

    Returns
    -------
    page : str

    Examples
    --------
    >>> page = quality_html({"resolution": {"input": {"fwhm_um": {"z": 3.4, "y": 1.3, "x": 1.3},
    ...                                                "isotropy_ratio": 0.38}}})
    >>> "<td>3.400</td>" in page and "<td>0.380</td>" in page
    True
    """
    how = quality.get("how_to_read") or {}
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title or 'quality')}</title>",
        "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin-bottom:0.5em}"
        "td,th{border:1px solid #bbb;padding:3px 10px;text-align:right}th{background:#eee}"
        "p.read{color:#444;max-width:50em}</style>",
        "</head><body>",
    ]
    if title:
        parts.append(f"<h2>{html.escape(title)}</h2>")

    def explain(key):
        if key in how:
            parts.append(f"<p class='read'>{html.escape(how[key])}</p>")

    resolution = quality.get("resolution") or {}
    if resolution:
        parts.append("<h3>Resolution (FWHM, µm) and isotropy</h3><table><tr><th>volume</th><th>z</th><th>y</th>"
                     "<th>x</th><th>isotropy ratio</th></tr>")
        for name, row in resolution.items():
            fwhm = row.get("fwhm_um") or {}
            parts.append(f"<tr><th>{html.escape(str(name))}</th>"
                         + "".join(f"<td>{_um(fwhm.get(a))}</td>" for a in "zyx")
                         + f"<td>{_um(row.get('isotropy_ratio'))}</td></tr>")
        parts.append("</table>")
        explain("resolution")
        explain("isotropy_ratio")
    checks = quality.get("reacquisition") or {}
    if checks:
        parts.append("<h3>Re-acquisition check</h3><table><tr><th>volume</th><th>fresh PSNR (dB)</th>"
                     "<th>measured PSNR (dB)</th><th>chi-square</th><th>correlation</th>"
                     "<th>worst acquired planes</th></tr>")
        for name, row in checks.items():
            worst = ", ".join(str(k) for k in row.get("worst_planes", []))
            parts.append(f"<tr><th>{html.escape(str(name))}</th><td>{_cell(row.get('fresh_psnr_db'))}</td>"
                         f"<td>{_cell(row.get('psnr_db'))}</td><td>{_cell(row.get('chi_square'))}</td>"
                         f"<td>{_cell(row.get('correlation'))}</td><td>{html.escape(worst)}</td></tr>")
        parts.append("</table>")
        explain("reacquisition")
    spread = quality.get("uncertainty") or {}
    if spread:
        keys = [k for k in spread if k != "relative"]
        parts.append("<h3>Uncertainty (|xz − yz|)</h3><table><tr><th></th>"
                     + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
        parts.append("<tr><th>intensity units</th>" + "".join(f"<td>{_cell(spread[k])}</td>" for k in keys) + "</tr>")
        if "relative" in spread:
            parts.append("<tr><th>relative</th>"
                         + "".join(f"<td>{_cell(spread['relative'].get(k))}</td>" for k in keys) + "</tr>")
        parts.append("</table>")
        explain("uncertainty")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
