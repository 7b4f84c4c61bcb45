"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
from _workflow import REPO, TINY, deploy, run_snakemake


# The modules with workflow runs go first: `make test`'s workers (xdist, --dist loadfile) take
# modules in collection order, so the longest start at once and the short ones fill in around them.
SLOW_FIRST = ("test_timelapse_workflow.py", "test_workflow.py", "test_faults.py", "test_predict.py")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the order within each module is kept


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One run of the whole workflow on a 32x96x96 phantom (600 patches of 32², 3 epochs), NGFF 0.4 export on.

    Used by tests/test_workflow.py only (outputs, report, reruns, every OME-Zarr validated with
    ome-zarr-models), so that `make test`'s workers (xdist, --dist loadfile) run it once.
    """
    overlay = {k: v for k, v in TINY.items() if k != "samples"}
    overlay["stitch"] = {**TINY["stitch"], "export_ngff04": True}
    workdir = deploy(tmp_path_factory.mktemp("tiny"), "sample\tinput\ntiny\tsynthetic\n", overlay)
    result = run_snakemake(workdir, "--workflow-profile", str(REPO / "profiles" / "default"), "--cores", "2",
                           "--configfile", "overlay.yaml", timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir
