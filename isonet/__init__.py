"""isonet: self-supervised isotropic restoration of anisotropic 3D fluorescence microscopy volumes."""

__version__ = "0.1.0"
