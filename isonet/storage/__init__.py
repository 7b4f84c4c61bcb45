
from isonet.storage.acquisition import Acquisition, ChannelInfo
from isonet.storage.atomic import atomic_path, naming_path, write_json, write_text
from isonet.storage.axes import AxesView, IndexedView, SqueezedArray
from isonet.storage.integrity import WRITE_CONFIG, CheckedArray
from isonet.storage.omezarr import (
    NGFF_VERSION,
    PYRAMID_BLOCK_BYTES,
    SPATIAL_AXES,
    build_pyramid,
    channel_axis,
    create_labels,
    create_ome_zarr,
    channel_labels,
    image_axes,
    label_name,
    omero_channels,
    read_ome_zarr,
    time_axis,
    write_ome_zarr_metadata,
)
from isonet.storage.tiff import IMAGEJ_DTYPES, export_hyperstack_tiff, export_tiff
from isonet.storage.volumes import TIFF_SUFFIXES, ZARR_SUFFIXES, open_volume, read_planes
from isonet.storage.voxels import check_voxel_size
from isonet.storage.hyperstack import Hyperstack, open_hyperstack  # noqa: E402  (after volumes)

__all__ = [
    "Acquisition", "AxesView", "ChannelInfo", "Hyperstack", "IndexedView", "channel_axis", "channel_labels",
    "image_axes", "label_name",
    "omero_channels", "open_hyperstack",
    "time_axis",
    "IMAGEJ_DTYPES", "NGFF_VERSION", "PYRAMID_BLOCK_BYTES", "SPATIAL_AXES", "TIFF_SUFFIXES", "WRITE_CONFIG",
    "ZARR_SUFFIXES", "CheckedArray", "SqueezedArray", "atomic_path", "build_pyramid", "check_voxel_size",
    "create_labels", "create_ome_zarr", "export_hyperstack_tiff", "export_tiff", "naming_path", "open_volume", "read_ome_zarr", "read_planes", "write_json",
    "write_ome_zarr_metadata",
    "write_text",
]
