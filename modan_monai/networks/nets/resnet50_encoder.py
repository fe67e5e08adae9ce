"""ResNet-50 encoder (MONAI ``ResNet``, bottleneck blocks) in the torchvision layout, Adam-v2's official backbone."""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401 - used by the docstring example
from monai.networks.nets import ResNet

from .resnet_encoder import _DEFAULT_ACT, ResNet18Encoder

__all__ = ["ResNet50Encoder"]


class _BottleneckLayout(ResNet):
    """Gives the ``ResNet.__init__`` call of :class:`ResNet18Encoder` ResNet-50's blocks and depths.

    ``ResNet18Encoder.__init__`` calls ``super().__init__(block="basic", layers=[2, 2, 2, 2], ...)``; in
    :class:`ResNet50Encoder`'s method resolution order this class stands between ``ResNet18Encoder`` and
    ``ResNet``, so the call arrives here and goes on with ``block="bottleneck"``, ``layers=[3, 4, 6, 3]``. Stem,
    ``act`` / ``norm`` handling, ``encoder_kwargs`` and ``forward_features`` are ResNet18Encoder's, unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.update(block="bottleneck", layers=[3, 4, 6, 3])
        super().__init__(**kwargs)


class ResNet50Encoder(ResNet18Encoder, _BottleneckLayout):
    """ResNet-50 feature extractor (no classification layer): Adam-v2's official backbone (torchvision layout).

    :class:`monai.networks.nets.ResNet` with ``block="bottleneck"`` (expansion 4, stride in the 3x3 convolution as
    torchvision's v1.5), ``layers=[3, 4, 6, 3]``, ``block_inplanes=[64, 128, 256, 512]``, 1x1 bias-free
    downsampling shortcuts, max-pool kept. The parameter names are torchvision's (``conv1``, ``bn1``,
    ``layer1.0.conv1`` ... ``layer4.2.bn3``, ``layerN.0.downsample.{0,1}``). Everything else is
    :class:`ResNet18Encoder`'s: the stem option, ``act`` / ``norm`` in every block, ``encoder_kwargs``,
    ``forward_features``.

    - ``stem="7x7"`` (default): 7x7 kernel, stride 2 (torchvision / the official release).
    - ``stem="3x3"``: 3x3 kernel, stride 1 (small images).

    Args:
        spatial_dims: number of spatial dimensions (2 for images, 3 for volumes).
        in_channels: number of input channels.
        stem: ``"7x7"`` or ``"3x3"``.
        act: activation, MONAI factory name or ``(name, kwargs)``.
        norm: normalisation, MONAI factory name or ``(name, kwargs)``.

    Shapes:
        - input: ``(B, in_channels, *spatial)``.
        - output of ``forward``: ``(B, 2048)`` (global average pooled ``layer4``).
        - ``forward_features``: ``[stem, layer1, layer2, layer3, layer4]`` with 64, 256, 512, 1024, 2048 channels
          (sizes as for ResNet-18: ``H/2``, ``H/4`` ... ``H/32`` with the 7x7 stem).

    Raises:
        ValueError: for an unknown ``stem``.

    Example:
        >>> encoder = ResNet50Encoder(spatial_dims=2, in_channels=1)
        >>> encoder(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 2048])
        >>> [f.shape[1] for f in encoder.forward_features(torch.zeros(2, 1, 32, 32))]
        [64, 256, 512, 1024, 2048]
    """

    out_features: int = 2048

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        stem: str = "7x7",
        act: str | tuple = _DEFAULT_ACT,
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__(spatial_dims=spatial_dims, in_channels=in_channels, stem=stem, act=act, norm=norm)
