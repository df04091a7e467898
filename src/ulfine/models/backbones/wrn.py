"""Wide ResNet (Zagoruyko & Komodakis 2016) as FixMatch and ACR train it from scratch.

WRN-28-2: depth 28 (n = (28 - 4) / 6 = 4 pre-activation basic blocks per stage), widths
16 -> 32, 64, 128 (widen factor 2), stages at strides 1, 2, 2, then BN + LeakyReLU + global
average pooling -> 128-d features. 1,467,610 parameters with a 10-class linear classifier
(ULFINE.md section 4). Values as in FixMatch's PyTorch reference (kekmodel/FixMatch-pytorch,
models/wideresnet.py; ACR uses the same network):

- BatchNorm momentum 0.001 (running stats move slowly: TF's decay 0.999), LeakyReLU(0.1);
- 3x3 convolutions without bias, kaiming-normal (fan_out, leaky_relu); BN weight 1, bias 0;
- dropout 0;
- the first block of stage 1 applies BN + activation before the residual split
  (``activate_before_residual``). In the first block of stages 2 and 3 the reference feeds the
  raw input to conv1 (its BN + activation output is unused); that is kept, so the network
  (and its parameter count) is the one the LTSSL papers report.

The classifier is not part of the backbone: the method's linear head (``head.name=linear``,
randomly initialised) plays the role of the reference's ``fc``.
"""
from __future__ import annotations

from torch import Tensor, nn

from ulfine.models.backbones import BACKBONES

BN_MOMENTUM = 0.001
LEAKY_SLOPE = 0.1


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv3x3(c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN -> act -> conv3x3(stride) -> BN -> act -> conv3x3, plus the (projected) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, activate_before_residual: bool = False) -> None:
        super().__init__()
        self.bn1, self.conv1 = _bn(c_in), _conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = _bn(c_out), _conv3x3(c_out, c_out, 1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.same_shape = c_in == c_out and stride == 1
        self.shortcut = None if self.same_shape else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x: Tensor) -> Tensor:
        if self.same_shape:
            out = self.conv1(self.act(self.bn1(x)))
            residual = x
        else:
            if self.activate_before_residual:
                x = self.act(self.bn1(x))
            out = self.conv1(x)  # the reference's quirk: raw input otherwise (module docstring)
            residual = self.shortcut(x)
        out = self.conv2(self.act(self.bn2(out)))
        return residual + out


class WideResNet(nn.Module):
    """Images [B, 3, H, W] -> pooled features [B, 64 * widen]."""

    def __init__(self, depth: int = 28, widen: int = 2) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = _conv3x3(3, widths[0], 1)
        stages = []
        for stage, stride in enumerate((1, 2, 2)):
            c_in, c_out = widths[stage], widths[stage + 1]
            blocks = [PreActBlock(c_in, c_out, stride, activate_before_residual=stage == 0)]
            blocks += [PreActBlock(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = _bn(widths[-1])
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor) -> Tensor:
        out = self.act(self.bn(self.stages(self.conv1(images))))
        return self.pool(out).flatten(1)


@BACKBONES.register("wrn28_2")
def wrn28_2() -> WideResNet:
    return WideResNet(depth=28, widen=2)


@BACKBONES.register("wrn28_8")
def wrn28_8() -> WideResNet:
    """The CIFAR-100 backbone of FixMatch / ACR."""
    return WideResNet(depth=28, widen=8)
