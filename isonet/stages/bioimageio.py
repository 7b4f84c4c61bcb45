"""Stage ``export-bioimageio`` / ``import-bioimageio``: the trained 2D network as a BioImage Model Zoo model.

The package (model RDF, spec 0.5) holds the network's weights twice — a PyTorch state dict with
its architecture file (``isonet/nets.py``, which imports nothing from isonet at module level)
and TorchScript — a test input slice and the output the network gives for it, the
normalisation as ``scale_linear`` pre- and postprocessing, a README that says what happens
outside the network (z-upsampling, the xz and yz passes) and the citation of the method. The
isonet model metadata (factor, normalisation, PSF, training provenance) travel under
``config.isonet``, so :func:`import_bioimageio_stage` can turn a package back into an isonet
model file.

Packaging writes plain files and a zip with the standard library; validating the package
(:func:`validate_bioimageio_package`) needs the optional ``bioimageio`` extra
(``bioimageio.spec``, ``bioimageio.core``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from isonet import nets
from isonet.errors import InputError
from isonet.modelfile import load_model, save_model
from isonet.patches import Normalization
from isonet.stages.common import check_output_path
from isonet.storage import atomic_path

logger = logging.getLogger(__name__)

SPEC_VERSION = "0.5.4"
CITATION = {
    "text": "Weigert, M., Royer, L., Jug, F., Myers, G. Isotropic reconstruction of 3D fluorescence microscopy "
            "images using convolutional neural networks. MICCAI 2017.",
    "doi": "10.1007/978-3-319-66185-8_15",
}
_CALLABLES = {"isonet2": "IsoNet2", "isonet1": "IsoNet1", "tiny": "IsoNet2"}


def _yaml(obj, indent: int = 0) -> str:
    """YAML for plain dicts/lists/scalars (JSON scalars are valid YAML)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.append(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {json.dumps(v)}")
    else:
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                body = _yaml(v, indent + 1).lstrip()
                lines.append(f"{pad}- {body}")
            else:
                lines.append(f"{pad}- {json.dumps(v)}")
    return "\n".join(lines)


def _test_slice(norm: Normalization, size: int, seed: int = 0) -> np.ndarray:
    """A deterministic test slice in the model's intensity range (smooth blobs), shape (1, 1, size, size)."""
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.random((size, size)), 3)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-12)
    return (norm.low + field * (norm.high - norm.low)).astype(np.float32)[None, None]


def _readme(meta: dict, architecture: str) -> str:
    norm = meta["normalization"]
    return f"""# isonet {architecture} — isotropic restoration of anisotropic 3D volumes

This network is the 2D part of IsoNet (Weigert et al. 2017, doi:{CITATION['doi']}) as implemented by
isonet. It was trained on lateral planes degraded like the axial ones of volumes with an axial
factor of **{meta['factor']}** (z step = {meta['factor']} x the pixel size).

**What happens outside the network.** The network alone does not restore a volume. isonet
1. upsamples the acquired volume along z by the factor {meta['factor']} (cubic, acquired plane k
   on isotropic plane k x {meta['factor']}),
2. applies this network to every xz slice and to every yz slice of the upsampled volume, each
   slice oriented with z along the last axis (`x` here), and
3. averages the two results.
Run `isonet predict` (or import this package with `isonet import-bioimageio`) for that; a
generic bioimage.io consumer applying the network to 2D images restores only the slices given.

**Input**: one 2D slice (batch, channel, y, x) in the camera's intensity units; x is the axial
(z) direction, already upsampled. Preprocessing `scale_linear` maps the {norm['percentiles']}
percentiles of the training volume ({norm['low']:.6g}, {norm['high']:.6g}) to 0 and 1;
postprocessing maps the output back to intensity units. Sizes: multiples of
{meta['size_multiple']} pixels.

**Weights**: PyTorch state dict (architecture `{_CALLABLES[architecture]}` in `isonet_nets.py`) and
TorchScript. The test tensors are a smooth synthetic slice and this network's output for it.

# Validation

isonet validates its restorations on simulated volumes with known ground truth (PSNR and SEG
against it) and, without ground truth, with `isonet assess`: the resolution along each axis,
the isotropy ratio, and a re-acquisition check that blurs the restoration with the axial part
of the PSF and compares it with the acquired planes. A network trained for another axial factor
or PSF fails that check; use it only on data acquired like its training data.
"""


def export_bioimageio_stage(model_path, out_zip, name: str | None = None, authors=("isonet user",),
                            test_size: int = 64) -> dict:
    """Package an isonet model file as a bioimage.io model (zip).

    Parameters
    ----------
    model_path : path
        isonet model file (safetensors).
    out_zip : path
        Package to write (``.zip``).
    name : str, optional
        Name of the dataset or model, used in the RDF's name ``isonet <name> axial factor <f>``.
    authors : sequence of str
        Author names.
    test_size : int
        Side of the square test slice (rounded up to the network's size multiple).

    Returns
    -------
    dict
        ``output`` and the RDF's ``name`` and ``weights`` formats.
    """
    out_zip = check_output_path(out_zip, [model_path])
    if out_zip.suffix != ".zip":
        raise InputError(f"{out_zip}: the bioimage.io package must be a .zip file")
    net, meta = load_model(model_path)
    architecture = str(meta["architecture"]).lower().replace("-", "").replace("_", "")
    norm: Normalization = meta["normalization"]
    m = int(net.size_multiple)
    size = -(-int(test_size) // m) * m
    x = _test_slice(norm, size)
    with torch.no_grad():
        y = norm.invert(net.eval()(torch.from_numpy(norm.apply(x))).numpy())
    kwargs = {"dropout": float(meta.get("dropout", 0.2))}
    if architecture in ("isonet2", "tiny"):
        kwargs["zero_init"] = False
    if architecture == "tiny":
        from isonet.nets import TINY

        kwargs.update(TINY)
    scale = norm.high - norm.low
    isonet_meta = {"factor": int(meta["factor"]), "architecture": architecture,
                   "normalization": norm.to_dict(), "receptive_radius": int(meta["receptive_radius"]),
                   "halo": int(meta["halo"]), "dropout": kwargs["dropout"], "psf": meta.get("psf"),
                   "weights_sha256": meta.get("weights_sha256")}
    space = {"min": max(16, m), "step": m}
    rdf = {
        "type": "model",
        "format_version": SPEC_VERSION,
        "name": f"isonet {name or architecture} axial factor {meta['factor']}",  # the spec wants >= 5 characters
        "description": "IsoNet 2D network restoring axial slices of anisotropic 3D fluorescence volumes; the "
                       "z-upsampling and the xz/yz passes happen outside the network (see README).",
        "authors": [{"name": a} for a in authors],
        "cite": [CITATION],
        "license": "BSD-3-Clause",
        "documentation": "README.md",
        "tags": ["isotropic-reconstruction", "axial-resolution", "fluorescence-light-microscopy", "2d", "pytorch",
                 "isonet"],
        "inputs": [{
            "id": "input",
            "description": "2D slice with the upsampled axial direction along x, intensity units",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["raw"]},
                     {"type": "space", "id": "y", "size": space},
                     {"type": "space", "id": "x", "size": space, "description": "axial (z), upsampled"}],
            "test_tensor": {"source": "test_input.npy"},
            "data": {"type": "float32"},
            "preprocessing": [{"id": "scale_linear", "kwargs": {"gain": 1.0 / scale, "offset": -norm.low / scale}}],
        }],
        "outputs": [{
            "id": "output",
            "description": "restored slice, intensity units",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["restored"]},
                     {"type": "space", "id": "y", "size": {"tensor_id": "input", "axis_id": "y"}},
                     {"type": "space", "id": "x", "size": {"tensor_id": "input", "axis_id": "x"}}],
            "test_tensor": {"source": "test_output.npy"},
            "data": {"type": "float32"},
            "postprocessing": [{"id": "scale_linear", "kwargs": {"gain": scale, "offset": norm.low}}],
        }],
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt",
                "architecture": {"source": "isonet_nets.py", "callable": _CALLABLES[architecture], "kwargs": kwargs},
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "torchscript": {"source": "weights_torchscript.pt", "pytorch_version": torch.__version__.split("+")[0],
                            "parent": "pytorch_state_dict"},
        },
        "config": {"isonet": isonet_meta},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "test_input.npy", x)
        np.save(tmp / "test_output.npy", y.astype(np.float32))
        torch.save(net.state_dict(), tmp / "weights.pt")
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript, which the model zoo still reads
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.script(net.eval()).save(str(tmp / "weights_torchscript.pt"))
        shutil.copyfile(nets.__file__, tmp / "isonet_nets.py")
        (tmp / "README.md").write_text(_readme({**isonet_meta, "size_multiple": m}, architecture))
        (tmp / "rdf.yaml").write_text(_yaml(rdf) + "\n")
        with atomic_path(out_zip) as part:
            with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for f in sorted(tmp.iterdir()):
                    z.write(f, f.name)
    logger.info("export-bioimageio: %s -> %s (%s, factor %d)", model_path, out_zip, architecture, meta["factor"])
    return {"output": str(out_zip), "name": rdf["name"], "weights": list(rdf["weights"])}


def validate_bioimageio_package(package, run_tests: bool = True) -> dict:
    """Validate a package with bioimageio.spec and (``run_tests``) run its test tensors with bioimageio.core.

    Returns
    -------
    dict
        ``status`` ("passed" or "failed"), ``format_version`` and the summary's text.

    Raises
    ------
    InputError
        When the optional ``bioimageio`` extra is not installed.
    """
    try:
        from bioimageio.spec import load_description
    except ImportError:
        raise InputError("validating a bioimage.io package needs the optional extra: pip install 'isonet[bioimageio]'") \
            from None
    descr = load_description(str(package), perform_io_checks=True)
    summary = descr.validation_summary
    status = summary.status
    if run_tests and status != "failed":
        from bioimageio.core import test_model

        summary = test_model(descr)
        status = summary.status
    return {"status": str(status), "format_version": str(getattr(descr, "format_version", "?")),
            "summary": summary.format() if hasattr(summary, "format") else str(summary)}


def import_bioimageio_stage(package, model_out) -> dict:
    """Turn a package written by :func:`export_bioimageio_stage` back into an isonet model file.

    The weights are read with ``torch.load(weights_only=True)`` (tensors only, no code); the
    architecture is isonet's own, named in ``config.isonet``.
    """
    model_out = check_output_path(model_out, [package])
    try:
        with zipfile.ZipFile(package) as z:
            rdf_text = z.read("rdf.yaml").decode()
            with tempfile.TemporaryDirectory() as tmp:
                z.extract("weights.pt", tmp)
                state = torch.load(Path(tmp) / "weights.pt", weights_only=True, map_location="cpu")
    except (OSError, KeyError, zipfile.BadZipFile, RuntimeError) as err:
        raise InputError(f"{package}: not a readable isonet bioimage.io package ({err})") from None
    meta = _isonet_config(rdf_text, package)
    net = nets.build_network(meta["architecture"], dropout=meta.get("dropout", 0.2))
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise InputError(f"{package}: weights do not fit the {meta['architecture']} network ({str(err).splitlines()[0]})") \
            from None
    norm = Normalization.from_dict(meta["normalization"])
    save_model(model_out, net, meta["architecture"], meta["factor"], norm, dropout=meta.get("dropout", 0.2),
               psf=meta.get("psf"), provenance={"stage": "import-bioimageio", "inputs": {"package": str(package)}})
    logger.info("import-bioimageio: %s -> %s", package, model_out)
    return {"output": str(model_out), "factor": meta["factor"], "architecture": meta["architecture"]}


def _isonet_config(rdf_text: str, package) -> dict:
    import yaml

    try:
        rdf = yaml.safe_load(rdf_text)
        meta = rdf["config"]["isonet"]
        meta["factor"], meta["architecture"], meta["normalization"]  # noqa: B018  (all three must be there)
    except (yaml.YAMLError, KeyError, TypeError):
        raise InputError(f"{package}: rdf.yaml has no config.isonet (factor, architecture, normalization); "
                         "only packages written by isonet export-bioimageio can be imported") from None
    return meta
