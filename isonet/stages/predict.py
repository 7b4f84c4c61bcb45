"""Stage ``predict``: block-wise axial restoration over dask, written block by block into Zarr.

The output grid is split into blocks (whole multiples of the output chunks, so no two tasks
write the same chunk). Each dask task reads its block's window from the input with a halo of at
least the network's receptive radius plus the interpolation support, restores it and writes the
block into the output array. The store is built under ``<output>.partial``; a finished block
leaves a marker there, so a killed run resumes where it stopped. The store is moved to
``output`` when every block is done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import dask
import numpy as np
import torch
import zarr

from isonet.errors import InputError
from isonet.modelfile import load_model
from isonet.provenance import array_sha256, file_sha256, provenance_record
from isonet.predict import block_ranges, iso_shape, prepare_model, resolve_precision, restore_block, tta_flips
from isonet.stages.common import Progress, axial_factor, check_output_path, isotropic_voxel_size, same_factor
from isonet.storage import WRITE_CONFIG, create_ome_zarr, naming_path, read_ome_zarr
from isonet.train import pick_device, use_deterministic_torch

logger = logging.getLogger(__name__)


def _round_up(n: int, m: int) -> int:
    return -(-int(n) // m) * m


def predict_stage(
    input_zarr,
    model_path,
    output_zarr,
    chunks=(64, 128, 128),
    block=(128, 256, 256),
    combine: str = "mean",
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 1,
    threads: int | None = None,
    compression_level: int = 3,
    subsample: float | None = None,
    tta: bool = False,
    channel: int | None = None,
    time: int | None = None,
) -> dict:
    """Restore ``input_zarr`` with the model at ``model_path`` into the OME-Zarr ``output_zarr``.

    Parameters
    ----------
    chunks : (z, y, x)
        Output chunk shape (rounded up to the network's size multiple).
    block : (z, y, x)
        Output block computed by one task (rounded up to a multiple of ``chunks``). Larger
        blocks waste less work on halos but need more memory: about
        ``4 * prod(block + 2 * halo)`` bytes per worker, times a few for the slices.
    combine : {"mean", "geometric"}
        How the xz and yz restorations are combined.
    workers : int
        Blocks computed at once (dask threads); torch uses ``threads // workers`` threads each.
    subsample : float, optional
        Axial factor σ, not necessarily an integer; default from the input's voxel sizes. Must
        equal the model's (within a relative 1e-6).
    tta : bool
        Test-time augmentation: also restore every slice flipped along the axes on which the
        model's training kernel is symmetric (``commuting_flips`` of its PSF) and average; up to
        4× the network time. Block-wise results stay identical to whole-volume ones.
    channel, time : int, optional
        For a time-lapse or multi-channel input: the volume to restore (one time point of one
        channel); the output is that 3D volume (``isonet assemble`` gathers them into a
        ``(t, c, z, y, x)`` image).
    """
    if threads:
        torch.set_num_threads(max(1, int(threads) // max(1, int(workers))))
    use_deterministic_torch()
    check_output_path(output_zarr, [input_zarr, model_path], store=True)
    selected = {} if channel is None and time is None else {"t": time, "c": channel}
    source, voxel_size = read_ome_zarr(input_zarr, **selected)
    if voxel_size is None or source.ndim != 3 or source.shape[0] < 2:
        raise InputError(
            f"{input_zarr}: predict needs a 3D OME-Zarr image with voxel sizes and at least 2 planes, got shape "
            f"{tuple(source.shape)}; convert the input with `isonet convert`"
        )
    model, meta = load_model(model_path)
    factor = axial_factor(voxel_size, subsample, source=str(input_zarr))
    if not same_factor(factor, meta["factor"]):
        raise InputError(
            f"{input_zarr}: axial factor {factor:.8g} differs from the model's ({meta['factor']:.8g}, {model_path}); "
            "use a model trained on data with the same z step"
        )
    dev = pick_device(device)
    prec = resolve_precision(precision, dev)
    model = prepare_model(model, dev)
    m = int(model.size_multiple)
    out_shape = iso_shape(source.shape, factor)
    chunks = tuple(min(_round_up(c, m), _round_up(s, m)) for c, s in zip(chunks, out_shape))
    block = tuple(min(_round_up(b, c), _round_up(s, c)) for b, c, s in zip(block, chunks, out_shape))
    halo = int(meta["halo"]) + 4  # receptive radius + cubic support (2 input planes), on the size grid
    halo = _round_up(halo, m)
    out_vs = isotropic_voxel_size(voxel_size, factor)
    norm = meta["normalization"]
    flips = tta_flips((meta.get("psf") or {}).get("commuting_flips", ())) if tta else ()

    output_zarr = Path(output_zarr)
    partial = output_zarr.with_name(output_zarr.name + ".partial")
    input_sha256 = array_sha256(source)
    model_sha256 = file_sha256(model_path)
    signature = {
        "input": str(Path(input_zarr).resolve()), "input_sha256": input_sha256, "model_sha256": model_sha256,
        **selected,
        "shape": out_shape, "chunks": chunks, "block": block, "combine": combine, "precision": prec, "halo": halo,
        "tta": [list(f) for f in flips],
    }
    done_dir = partial / ".isonet-done"
    if partial.exists():
        old = _read_signature(partial)
        if old != json.loads(json.dumps(signature)):
            logger.info("predict: discarding %s (different input, model or settings)", partial)
            shutil.rmtree(partial)
        else:  # zarr writes a chunk as <key>.<uuid>.partial, then renames it: drop those a kill cut short
            for stray in (partial / "0").rglob("*.partial"):
                stray.unlink()
    if not partial.exists():
        create_ome_zarr(
            partial, out_shape, np.float32, chunks, out_vs, name="restored", compression_level=compression_level,
            provenance=provenance_record(
                "predict",
                {"chunks": chunks, "block": block, "combine": combine, "precision": prec, "halo": halo,
                 "batch_size": batch_size, "device": str(dev), "workers": workers, "threads": torch.get_num_threads(),
                 "factor": factor},
                {"image": {"path": str(input_zarr), "sha256": input_sha256, "hash": "array_sha256",
                           "shape": list(source.shape), "dtype": str(source.dtype), **selected},
                 "model": {"path": str(model_path), "sha256": model_sha256,
                           "weights_sha256": meta.get("weights_sha256"), "training": meta.get("provenance")}},
            ),
        )
        done_dir.mkdir()
        (partial / ".isonet-signature.json").write_text(json.dumps(signature))
    out = zarr.open_array(partial / "0", mode="r+").with_config(WRITE_CONFIG)  # every chunk stored

    blocks = list(block_ranges(out_shape, block))
    todo = [(i, r) for i, r in enumerate(blocks) if not (done_dir / str(i)).exists()]
    logger.info(
        "predict: %s -> %s voxels %s µm, factor %.8g, %d blocks of %s (%d to do), halo %d, %s on %s, %s",
        source.shape, out_shape, tuple(round(v, 5) for v in out_vs), factor, len(blocks), block, len(todo), halo,
        prec, dev, combine,
    )
    if tta:
        logger.info("predict: test-time augmentation over flips %s (%d passes per slice)", flips, len(flips) + 1)
    progress = Progress("predict: blocks", len(todo))

    def run_block(i, ranges):
        restored = restore_block(model, source, factor, ranges, norm, halo, combine, batch_size, dev, prec, flips)
        out[tuple(slice(a, b) for a, b in ranges)] = restored
        (done_dir / str(i)).touch()
        progress.advance()
        return i

    tasks = [dask.delayed(run_block)(i, r) for i, r in todo]
    try:
        dask.compute(*tasks, scheduler="threads", num_workers=max(1, int(workers)))
    except InputError:  # e.g. a damaged input chunk: keep finished blocks for the rerun, else nothing
        if not any(done_dir.iterdir()):
            shutil.rmtree(partial)
        raise
    except OSError as err:  # a block whose write failed has no marker: the rerun computes it again
        raise naming_path(err, partial) from err

    # the signature goes first: a run killed from here on finds no signature and starts over,
    # never a signed store whose block markers are gone
    os.remove(partial / ".isonet-signature.json")
    shutil.rmtree(done_dir)
    if output_zarr.exists():
        shutil.rmtree(output_zarr)
    os.replace(partial, output_zarr)
    logger.info("predict: wrote %s", output_zarr)
    return {"shape": out_shape, "voxel_size": out_vs, "blocks": len(blocks), "factor": factor}


def _read_signature(partial: Path):
    try:
        return json.loads((partial / ".isonet-signature.json").read_text())
    except (OSError, ValueError):
        return None
