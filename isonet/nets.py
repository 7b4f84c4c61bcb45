"""The IsoNet networks (Weigert et al. 2017), as PyTorch modules working on 2D slices.

Both take and return tensors of shape ``(N, 1, H, W)``. The slices are oriented with the
anisotropic (axial, or subsampled) axis along W. IsoNet-2 needs H and W divisible by 4 (two
2× poolings); :func:`isonet.predict.predict_slices` pads to that.
"""

from __future__ import annotations

import torch
from torch import nn

#: Valid values of the config's ``model:`` key. ``tiny`` is IsoNet-2's shape at a hundredth of its
#: compute (4 features, 3×3 kernels): for benchmarks and tests of the machinery (memory, sharding,
#: resume), not for restoration.
ARCHITECTURES = ("isonet2", "isonet1", "tiny")
#: IsoNet-2 keyword arguments of the ``tiny`` network.
TINY = {"base": 4, "kernel": 3}


class IsoNet1(nn.Module):
    """IsoNet-1: conv 64@9×9 → 32@5×5 → 1@5×5 → 1@1×1, ReLU after each (SRCNN-like).

    Predicts the restored slice directly (not a residual).
    """

    #: Pixels on each side of an output pixel that it depends on.
    receptive_radius = 4 + 2 + 2
    #: Input size multiple needed by the architecture.
    size_multiple = 1

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 64, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(64, 32, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(32, 1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(1, 1, 1),
            nn.ReLU(inplace=True),
        )
        # With a ReLU on the output, a random start can leave the last layers dead (all outputs 0,
        # no gradient). Start them as a pass-through of positive activations instead.
        nn.init.constant_(self.body[-2].weight, 1.0)
        nn.init.zeros_(self.body[-2].bias)
        nn.init.constant_(self.body[-4].bias, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, dropout: float):
        layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class IsoNet2(nn.Module):
    """IsoNet-2: residual U-Net.

    16@7×7 → pool2 → 32@7×7 → pool2 → 64@7×7 → up2 → 32@7×7 → up2 → 16@7×7 → 1@1×1, ReLU after
    every 7×7 convolution, dropout after each of them, skip connections by concatenation, and the
    output added to the input (the network predicts the residual). With ``zero_init`` the
    output layer starts at zero, so the untrained network returns its input (the cubic
    upsampling) and training starts from there.
    """

    # 7×7 convs at scales 1, 2, 4, 2, 1 (radius 3 each, scaled) plus the pooling/upsampling offsets;
    # an instance with another kernel has its own (set in __init__).
    receptive_radius = 3 + 1 + 6 + 2 + 12 + 2 + 6 + 1 + 3
    size_multiple = 4

    def __init__(self, dropout: float = 0.2, kernel: int = 7, base: int = 16, zero_init: bool = True):
        super().__init__()
        if kernel != 7:  # the class attribute is for 7×7 kernels: radius r at scales 1, 2, 4, 2, 1 plus offsets
            self.receptive_radius = 10 * (kernel // 2) + 6
        self.down0 = _ConvBlock(1, base, kernel, dropout)
        self.down1 = _ConvBlock(base, 2 * base, kernel, dropout)
        self.bottom = _ConvBlock(2 * base, 4 * base, kernel, dropout)
        self.up1 = _ConvBlock(4 * base + 2 * base, 2 * base, kernel, dropout)
        self.up0 = _ConvBlock(2 * base + base, base, kernel, dropout)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(base, 1, 1)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.down0(x)
        s1 = self.down1(self.pool(s0))
        b = self.bottom(self.pool(s1))
        u1 = self.up1(torch.cat([self.upsample(b), s1], dim=1))
        u0 = self.up0(torch.cat([self.upsample(u1), s0], dim=1))
        return x + self.out(u0)


def build_network(name: str, dropout: float = 0.2, seed: int | None = None, zero_init: bool = True) -> nn.Module:
    """Build an untrained network by its config name (``isonet2``, ``isonet1`` or ``tiny``).

    ``seed`` makes the initial weights a function of the seed alone (drawn under a forked torch
    random state, so the global one is left as it was). ``zero_init`` starts IsoNet-2's residual
    output at zero (the network then begins as the identity).

    Examples
    --------
    >>> net = build_network("isonet2")
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
    >>> torch.equal(build_network("isonet2", seed=0).out.weight, build_network("isonet2", seed=0).out.weight)
    True
    """
    from .errors import InputError  # imported here: the bioimage.io export ships this file standalone

    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in ARCHITECTURES:
        raise InputError(f"model: unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        if key == "isonet1":
            return IsoNet1(dropout=dropout)
        return IsoNet2(dropout=dropout, zero_init=zero_init, **(TINY if key == "tiny" else {}))


def halo_for(net: nn.Module, extra: int = 0) -> int:
    """Halo (pixels) a tile needs so that its interior matches whole-image inference.

    At least the receptive radius plus ``extra``, rounded up to the architecture's size multiple
    so that tiles stay aligned with the pooling grid.
    """
    need = int(net.receptive_radius) + int(extra)
    m = int(net.size_multiple)
    return -(-need // m) * m
