"""Pipeline stages: each reads its inputs from disk (TIFF / OME-Zarr), writes its outputs
atomically through :mod:`isonet.storage`, and reports progress through a ``log`` callable or the
standard ``logging`` module. One module per stage; the CLI exposes one subcommand per stage.

- :mod:`isonet.stages.convert`: any TIFF or OME-Zarr input to a chunked OME-Zarr image.
"""
