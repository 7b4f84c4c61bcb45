import zipfile

import numpy as np
import pytest
import torch

from isonet.modelfile import load_model, save_model
from isonet.nets import build_network
from isonet.patches import Normalization
from isonet.stages.bioimageio import export_bioimageio_stage, import_bioimageio_stage


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, build_network("isonet2", seed=0, zero_init=False), "isonet2", 4, Normalization(100.0, 1100.0),
               dropout=0.2, psf={"kind": "gaussian", "commuting_flips": [0, 1]})
    return path


def test_export_writes_a_spec_05_package_that_imports_back(model_file, tmp_path):
    out = tmp_path / "m.zip"
    export_bioimageio_stage(model_file, out, name="ab")  # a short name still makes a valid RDF name
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        readme = z.read("README.md").decode()
        x = np.load(z.open("test_input.npy"))
        y = np.load(z.open("test_output.npy"))
    assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "isonet_nets.py", "README.md"} <= names
    assert "outside the network" in readme and "10.1007/978-3-319-66185-8_15" in readme
    net, meta = load_model(model_file)
    with torch.no_grad():
        expected = meta["normalization"].invert(net(torch.from_numpy(meta["normalization"].apply(x))).numpy())
    np.testing.assert_allclose(y, expected, rtol=1e-6)

    back = tmp_path / "back.safetensors"
    import_bioimageio_stage(out, back)
    net2, meta2 = load_model(back)
    assert meta2["factor"] == 4 and meta2["normalization"] == meta["normalization"]
    assert meta2["psf"]["commuting_flips"] == [0, 1]
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), k


def test_import_refuses_a_package_without_isonet_config(tmp_path):
    from isonet.cli import main

    bad = tmp_path / "other.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("rdf.yaml", "type: model\nname: x\n")
        buf = tmp_path / "w.pt"
        torch.save({}, buf)
        z.write(buf, "weights.pt")
    assert main(["import-bioimageio", str(bad), str(tmp_path / "m.safetensors")]) == 2
    assert not (tmp_path / "m.safetensors").exists()


def test_package_validates_with_bioimageio_and_runs_its_test_tensors(model_file, tmp_path):
    pytest.importorskip("bioimageio.core")
    from isonet.stages.bioimageio import validate_bioimageio_package

    out = tmp_path / "m.zip"
    export_bioimageio_stage(model_file, out, name="ab")
    result = validate_bioimageio_package(out)
    assert result["status"] == "passed", result["summary"]
    assert result["format_version"].startswith("0.5")
    assert "Reproduce test outputs from test inputs (torchscript)" in result["summary"]
    assert "Reproduce test outputs from test inputs (pytorch_state_dict)" in result["summary"]
