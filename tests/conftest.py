"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
from _workflow import REPO, TINY, deploy, run_snakemake


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Groups for `pytest -n 2 --dist loadgroup` (make test): a module's tests stay on one worker, so
    its module-scoped fixtures (a workflow run, a trained model) are built once; the tests of every
    module that use the session's tiny workflow run share one group, so it runs once too."""
    for item in items:
        group = "tiny_run" if "tiny_run" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One run of the whole workflow on a 32x96x96 phantom (600 patches of 32², 3 epochs), NGFF 0.4 export on.

    Shared by tests/test_workflow.py (outputs, report, reruns) and tests/test_ngff.py (every
    OME-Zarr it writes validated with ome-zarr-models).
    """
    overlay = {k: v for k, v in TINY.items() if k != "samples"}
    overlay["stitch"] = {**TINY["stitch"], "export_ngff04": True}
    workdir = deploy(tmp_path_factory.mktemp("tiny"), "sample\tinput\ntiny\tsynthetic\n", overlay)
    result = run_snakemake(workdir, "--workflow-profile", str(REPO / "profiles" / "default"), "--cores", "2",
                           "--configfile", "overlay.yaml", timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir
