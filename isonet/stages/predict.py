"""Stage ``predict``: block-wise axial restoration, written block by block into Zarr.

The output grid is split into blocks (whole multiples of the output chunks, so no two blocks
write the same chunk). A reader thread reads and upsamples the next block's windows (with a halo
of at least the network's receptive radius, only in the plane of each pass) while the network
restores the current one, and a writer thread stores the previous one. The store is built under
``<output>.partial``; a finished block leaves a marker there, so a killed run resumes where it
stopped, and the store is signed with the input's content, the model and the settings, so a
rerun on anything else starts afresh. The store is moved to ``output`` when every block is done.

One prediction can be split over jobs (a cluster's GPUs or nodes): ``--init`` creates the
store, ``--shard I/N`` jobs fill disjoint sets of blocks at the same time, ``--finish`` checks
and publishes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import zarr

from isonet.errors import InputError
from isonet.modelfile import load_model
from isonet.provenance import array_sha256, file_sha256, provenance_record
from isonet.pipeline import run_pipeline
from isonet.predict import (
    block_ranges,
    check_block_start,
    iso_shape,
    prepare_model,
    read_block_windows,
    resolve_precision,
    restore_windows,
    tta_flips,
)
from isonet.stages.common import Progress, axial_factor, check_output_path, isotropic_voxel_size, same_factor
from isonet.storage import WRITE_CONFIG, create_ome_zarr, naming_path, read_ome_zarr, write_json
from isonet.train import pick_device, use_deterministic_torch

logger = logging.getLogger(__name__)


def _round_up(n: int, m: int) -> int:
    return -(-int(n) // m) * m


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``; ValueError otherwise.

    Examples
    --------
    >>> parse_shard("2/3")
    (2, 3)
    """
    try:
        index, count = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r} is not I/N (e.g. 0/4)") from None
    if not 0 <= index < count:
        raise ValueError(f"shard {text!r}: I must lie in 0..N-1")
    return index, count


def shard_blocks(n_blocks: int, shard: tuple[int, int]) -> list[int]:
    """Indices of the blocks shard ``(I, N)`` computes: ``I, I + N, I + 2N, ...``.

    Examples
    --------
    >>> shard_blocks(7, (1, 3))
    [1, 4]
    """
    index, count = shard
    return list(range(index, n_blocks, count))


STEPS = ("all", "init", "shard", "finish")


def predict_stage(
    input_zarr,
    model_path,
    output_zarr,
    chunks=(64, 128, 128),
    block=(256, 512, 512),
    combine: str = "mean",
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 1,
    threads: int | None = None,
    compression_level: int = 3,
    subsample: float | None = None,
    tta: bool = False,
    edges: str = "mirror",
    step: str = "all",
    shard: tuple[int, int] = (0, 1),
    done_file=None,
    channel: int | None = None,
    time: int | None = None,
    uncertainty_zarr=None,
) -> dict:
    """Restore ``input_zarr`` with the model at ``model_path`` into the OME-Zarr ``output_zarr``.

    Parameters
    ----------
    chunks : (z, y, x)
        Output chunk shape (rounded up to the network's size multiple).
    block : (z, y, x)
        Output block computed at once (rounded up to a multiple of ``chunks``). Larger blocks
        waste less work on halos but need more memory: about
        ``4 * 2 * prod(block + 2 * halo)`` bytes per block in flight (up to four: one being
        read, one computed, one written and one queued).
    combine : {"mean", "geometric"}
        How the xz and yz restorations are combined.
    batch_size : int, optional
        Slices per forward pass; None sizes batches for the device (see
        :func:`isonet.predict.auto_batch_size`).
    workers : int
        Blocks computed at once (threads); torch uses ``threads // workers`` threads each.
    subsample : float, optional
        Axial factor σ; default from the input's voxel sizes (need not be an integer). Must
        equal the model's (relative tolerance 1e-6).
    tta : bool
        Test-time augmentation: also restore every slice flipped along the axes on which the
        model's training kernel is symmetric (``commuting_flips`` of its PSF) and average; up to
        4× the network time. Block-wise results stay identical to whole-volume ones.
    edges : {"mirror", "clip"}
        Past the volume's edges, slices get a mirrored halo (``mirror``) or end there and are
        only padded to the network's size multiple (``clip``, as CSBDeep; saves the network's
        work on mirrored voxels, up to a third of it for a volume 256 planes deep).
    step : {"all", "init", "shard", "finish"}
        ``all`` does everything in this process. The other three split one prediction over
        several jobs: ``init`` creates the shared store ``<output>.partial`` (discarding one left
        by a different input, model or settings), then any number of ``shard`` jobs, at once,
        compute the blocks of their ``shard``, and ``finish`` checks that every block is done
        and moves the store to ``output_zarr``.
    shard : (I, N)
        For ``step="shard"``: compute blocks ``I, I + N, ...`` (each block is whole chunks, so
        no two shards write the same chunk).
    done_file : path, optional
        Written (a JSON summary) when the step has finished: a marker for the workflow.
    channel, time : int, optional
        For a time-lapse or multi-channel input: the volume to restore (one time point of one
        channel); the output is that 3D volume (``isonet assemble`` gathers them into a
        ``(t, c, z, y, x)`` image).
    uncertainty_zarr : path, optional
        Also write the per-voxel disagreement ``|xz - yz|`` of the two axial passes (each
        averaged over the TTA flips when enabled), in the input's intensity units, as an
        OME-Zarr image on the same grid and chunks (built under ``<uncertainty>.partial`` next
        to the restoration's and moved into place with it). High where the network is unsure.
    """
    if step not in STEPS:
        raise ValueError(f"step must be one of {', '.join(STEPS)}, got {step!r}")
    if threads:
        torch.set_num_threads(max(1, int(threads) // max(1, int(workers))))
    use_deterministic_torch()
    check_output_path(output_zarr, [input_zarr, model_path], store=True)
    if uncertainty_zarr:
        check_output_path(uncertainty_zarr, [input_zarr, model_path, output_zarr], store=True)
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
    # the receptive radius on the size grid; upsampled planes are computed exactly wherever they
    # lie (read_window), so the cubic interpolation needs no halo of its own
    halo = _round_up(int(meta["halo"]), m)
    out_vs = isotropic_voxel_size(voxel_size, factor)
    norm = meta["normalization"]
    flips = tta_flips((meta.get("psf") or {}).get("commuting_flips", ())) if tta else ()

    output_zarr = Path(output_zarr)
    partial = output_zarr.with_name(output_zarr.name + ".partial")
    done_dir = partial / ".isonet-done"
    spread_partial = Path(str(uncertainty_zarr) + ".partial") if uncertainty_zarr else None
    input_sha256 = array_sha256(source)
    model_sha256 = file_sha256(model_path)
    # what the stored blocks depend on: the input's content (not its path), the model, the settings
    signature = {
        "input_sha256": input_sha256, "model_sha256": model_sha256, "shape": out_shape, "chunks": chunks,
        "block": block, "combine": combine, "precision": prec, "halo": halo, "tta": [list(f) for f in flips],
        "edges": edges, **selected,
        "uncertainty": str(Path(uncertainty_zarr).resolve()) if uncertainty_zarr else None,
    }
    blocks = list(block_ranges(out_shape, block))
    summary = {"shape": out_shape, "voxel_size": out_vs, "blocks": len(blocks), "factor": factor, "step": step}

    def create_spread():
        if spread_partial.exists():
            shutil.rmtree(spread_partial)
        create_ome_zarr(
            spread_partial, out_shape, np.float32, chunks, out_vs, name="uncertainty",
            compression_level=compression_level,
            provenance=provenance_record(
                "predict", {"quantity": "|xz - yz| restoration, input intensity units", "combine": combine,
                            "tta": [list(f) for f in flips], "halo": halo, "factor": factor, "edges": edges},
                {"image": {"path": str(input_zarr), "sha256": input_sha256, "hash": "array_sha256", **selected},
                 "model": {"path": str(model_path), "sha256": model_sha256}},
            ),
        )

    if step in ("all", "init"):
        if spread_partial and not spread_partial.exists() and partial.exists():
            shutil.rmtree(partial)  # the blocks done so far lack their uncertainty: start over
        _create_or_reuse_partial(partial, signature, lambda: (create_spread() if spread_partial else None, create_ome_zarr(
            partial, out_shape, np.float32, chunks, out_vs, name="restored", compression_level=compression_level,
            provenance=provenance_record(
                "predict",
                {"chunks": chunks, "block": block, "combine": combine, "precision": prec, "halo": halo, "edges": edges,
                 "batch_size": batch_size, "device": str(dev), "workers": workers, "threads": torch.get_num_threads(),
                 "factor": factor},
                {"image": {"path": str(input_zarr), "sha256": input_sha256, "hash": "array_sha256",
                           "shape": list(source.shape), "dtype": str(source.dtype), **selected},
                 "model": {"path": str(model_path), "sha256": model_sha256,
                           "weights_sha256": meta.get("weights_sha256"), "training": meta.get("provenance")}},
            ),
        )))
    elif _read_signature(partial) != json.loads(json.dumps(signature)):
        raise InputError(
            f"{partial}: no store for this input, model and settings to "
            f"{'add blocks to' if step == 'shard' else 'finish'}; run `isonet predict` with the same arguments "
            "and --init first"
        )
    if step == "init":
        logger.info("predict: %s ready for %d blocks of %s", partial, len(blocks), block)
        _write_done(done_file, summary)
        return summary

    if step in ("all", "shard"):
        mine = shard_blocks(len(blocks), shard if step == "shard" else (0, 1))
        todo = [i for i in mine if not (done_dir / str(i)).exists()]
        logger.info(
            "predict: %s -> %s voxels %s µm, factor %.8g, %d blocks of %s (%d to do), halo %d, %s on %s, %s%s",
            source.shape, out_shape, tuple(round(v, 5) for v in out_vs), factor, len(blocks), block, len(todo),
            halo, prec, dev, combine, f", shard {shard[0]}/{shard[1]} ({len(mine)} blocks)" if step == "shard" else "",
        )
        if tta:
            logger.info("predict: test-time augmentation over flips %s (%d passes per slice)", flips, len(flips) + 1)
        out = zarr.open_array(partial / "0", mode="r+").with_config(WRITE_CONFIG)  # every chunk stored
        if spread_partial:
            out = (out, zarr.open_array(spread_partial / "0", mode="r+").with_config(WRITE_CONFIG))
        _restore_blocks(model, source, factor, norm, halo, edges, [(i, blocks[i]) for i in todo], out, done_dir,
                        dict(combine=combine, batch_size=batch_size, device=dev, precision=prec, tta=flips),
                        workers, partial, drop_if_empty=step == "all")
    if step == "shard":
        _write_done(done_file, summary)
        return summary

    missing = [i for i in range(len(blocks)) if not (done_dir / str(i)).exists()]
    if missing:
        raise InputError(
            f"{partial}: {len(missing)} of {len(blocks)} blocks not done (first: {missing[0]}); run the "
            "missing shards (`isonet predict ... --shard I/N`) before --finish"
        )
    # zarr writes a chunk as <key>.<uuid>.partial, then renames it: drop those a kill cut short
    for store in (partial, spread_partial) if spread_partial else (partial,):
        for stray in (store / "0").rglob("*.partial"):
            stray.unlink()
    # the signature goes first: a run killed from here on finds no signature and starts over,
    # never a signed store whose block markers are gone
    os.remove(partial / ".isonet-signature.json")
    shutil.rmtree(done_dir)
    if output_zarr.exists():
        shutil.rmtree(output_zarr)
    if spread_partial:  # before the restoration: a finished output_zarr means both are there
        if Path(uncertainty_zarr).exists():
            shutil.rmtree(uncertainty_zarr)
        os.replace(spread_partial, uncertainty_zarr)
        logger.info("predict: wrote %s", uncertainty_zarr)
    os.replace(partial, output_zarr)
    logger.info("predict: wrote %s", output_zarr)
    _write_done(done_file, summary)
    return summary


def _create_or_reuse_partial(partial: Path, signature: dict, create) -> None:
    """Keep ``partial`` when it was made for ``signature`` (a resumed run), else make it afresh."""
    if partial.exists():
        if _read_signature(partial) == json.loads(json.dumps(signature)):
            return
        logger.info("predict: discarding %s (different input, model or settings)", partial)
        shutil.rmtree(partial)
    create()
    (partial / ".isonet-done").mkdir()
    (partial / ".isonet-signature.json").write_text(json.dumps(signature))  # last: the store is complete


def _restore_blocks(model, source, factor, norm, halo, edges, todo, out, done_dir: Path, options: dict, workers: int,
                    partial: Path, drop_if_empty: bool) -> None:
    """Restore the blocks ``todo`` (``(index, ranges)``) into ``out``, reading, computing and
    writing in a pipeline; a block's marker is left once its chunks are stored. ``out`` is the
    restoration's array, or a pair (restoration, uncertainty). On an input error with no block
    done, ``drop_if_empty`` removes the store (not when shards share it)."""
    spread_out = None
    if isinstance(out, tuple):
        out, spread_out = out
    progress = Progress("predict: blocks", len(todo))
    for _, ranges in todo:
        check_block_start(model, ranges)

    def read(task):
        return read_block_windows(source, factor, task[1], norm, halo, edges)

    def compute(windows):
        if spread_out is None:
            return norm.invert(restore_windows(model, windows, **options)), None
        restored, spread = restore_windows(model, windows, **options, disagreement=True)
        return norm.invert(restored), spread * np.float32(norm.high - norm.low)

    def write(task, result):
        index, ranges = task
        where = tuple(slice(a, b) for a, b in ranges)
        restored, spread = result
        if spread_out is not None:
            spread_out[where] = spread
        out[where] = restored
        (done_dir / str(index)).touch()
        progress.advance()

    try:
        run_pipeline(todo, read, compute, write, depth=1, workers=workers)
    except InputError:  # e.g. a damaged input chunk: keep finished blocks for the rerun, else nothing
        if drop_if_empty and not any(done_dir.iterdir()):
            shutil.rmtree(partial)
        raise
    except OSError as err:  # a block whose write failed has no marker: the rerun computes it again
        raise naming_path(err, partial) from err


def _write_done(done_file, summary: dict) -> None:
    if done_file:
        write_json(done_file, summary)


def _read_signature(partial: Path):
    try:
        return json.loads((partial / ".isonet-signature.json").read_text())
    except (OSError, ValueError):
        return None
