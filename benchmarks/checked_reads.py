"""Cost of checksummed chunks and checked reads: slab and plane reads before/after, and verify speed.

"before": a store as isonet wrote it until now (zstd only) read through the plain zarr array;
"after": a store as isonet writes it now (zstd + crc32c, every chunk stored) read through
:func:`isonet.storage.read_ome_zarr` (a :class:`~isonet.storage.CheckedArray`). Reads are
interleaved, and the best of ``--repeats`` is reported (the machine may be shared).

    python benchmarks/checked_reads.py --shape 64 1024 1024 --chunks 64 256 256 --repeats 7
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
import zarr.codecs

from isonet.stages.verify import verify_store
from isonet.storage import build_pyramid, create_ome_zarr, read_ome_zarr

VS = (1.0, 0.25, 0.25)


def _best(fn, repeats, clock=time.perf_counter):
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[64, 1024, 1024])
    p.add_argument("--chunks", type=int, nargs=3, default=[64, 256, 256])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    shape, chunks = tuple(args.shape), tuple(args.chunks)
    rng = np.random.default_rng(0)
    data = (rng.poisson(200, shape[1:]).astype(np.uint16)[None] + rng.integers(0, 50, shape, dtype=np.uint16))
    root = Path(tempfile.mkdtemp())
    try:
        # before: zstd only, the plain zarr array
        old = zarr.create_array(root / "old.zarr", shape=shape, dtype=data.dtype, chunks=chunks,
                                compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0)
        old[:] = data
        _, new = create_ome_zarr(root / "new.zarr", shape, data.dtype, chunks, VS, provenance={"stage": "bench"})
        new[:] = data
        checked, _ = read_ome_zarr(root / "new.zarr")
        plain_new = zarr.open_array(root / "new.zarr" / "0", mode="r")
        slab = slice(0, chunks[0])
        assert np.array_equal(checked[slab], old[slab])
        arrays = {"before (zstd, zarr array)": old, "crc32c, zarr array": plain_new,
                  "after (crc32c, CheckedArray)": checked}
        planes = range(0, shape[0], max(1, shape[0] // 16))
        slab_times = {label: [] for label in arrays}
        cpu_times = {label: [] for label in arrays}
        plane_times = {label: [] for label in arrays}
        for _ in range(args.repeats):  # interleaved, so that a change of load hits all alike
            for label, array in arrays.items():
                slab_times[label].append(_best(lambda a=array: a[slab], 1))
                # CPU time of all threads: less exposed to other processes on a shared machine
                cpu_times[label].append(_best(lambda a=array: a[slab], 1, time.process_time))
                plane_times[label].append(_best(lambda a=array: [a[i] for i in planes], 1))
        results = {label: (min(slab_times[label]), min(plane_times[label]), min(cpu_times[label]))
                   for label in arrays}
        mb = np.prod((chunks[0],) + shape[1:]) * data.itemsize / 2**20
        print(f"volume {shape} uint16, chunks {chunks}; slab = {chunks[0]} planes ({mb:.0f} MiB); "
              f"best of {args.repeats}")
        for label, (t_slab, t_planes, t_cpu) in results.items():
            print(f"  {label:30s} slab {t_slab * 1e3:7.1f} ms wall ({mb / t_slab:5.0f} MiB/s), "
                  f"{t_cpu * 1e3:7.1f} ms CPU;   {len(planes)} single planes {t_planes * 1e3:7.1f} ms")
        before, after = results["before (zstd, zarr array)"], results["after (crc32c, CheckedArray)"]
        print(f"  slab read after/before: wall {after[0] / before[0]:.3f}, CPU {after[2] / before[2]:.3f}")
        # the two costs added, each measured alone (less exposed to the machine's load)
        _, small = create_ome_zarr(root / "small.zarr", (4, 4, 4), "uint8", (4, 4, 4), VS, provenance={})
        small[:] = 1
        small_checked, _ = read_ome_zarr(root / "small.zarr")
        small_plain = zarr.open_array(root / "small.zarr" / "0", mode="r")
        t_plain = _best(lambda: small_plain[0], 300)
        t_checked = _best(lambda: small_checked[0], 300)
        print(f"  one read of a 4x4x4 chunk: {t_plain * 1e6:.0f} µs plain, {t_checked * 1e6:.0f} µs through "
              f"CheckedArray (+{(t_checked - t_plain) * 1e6:.0f} µs per read)")
        blobs = [f.read_bytes()[:-4] for f in sorted((root / "new.zarr" / "0" / "c").rglob("*"))
                 if f.is_file()]
        chunks_per_slab = -(-shape[1] // chunks[1]) * -(-shape[2] // chunks[2])
        t_all = _best(lambda: [google_crc32c.value(b) for b in blobs], args.repeats, time.process_time)
        t_crc = t_all / len(blobs) * chunks_per_slab
        print(f"  crc32c of one slab's compressed chunks: {t_crc * 1e3:.2f} ms CPU "
              f"({100 * t_crc / results['before (zstd, zarr array)'][2]:.2f} % of the slab read's CPU time before)")
        build_pyramid(root / "new.zarr", n_levels=2)
        t0 = time.perf_counter()
        report = verify_store(root / "new.zarr", log=lambda m: None)
        t = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (root / "new.zarr").rglob("*") if f.is_file()) / 2**20
        print(f"  verify: {report['chunks']} chunks, {size:.0f} MiB on disk, "
              f"{data.nbytes * 8 / 7 / 2**20:.0f} MiB decoded, {t:.2f} s; {report['summary']}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
