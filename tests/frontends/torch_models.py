"""Compact, faithful PyTorch definitions of torchvision's ResNet-18 and MobileNetV3-small (torchvision
itself does not import beside the CPU torch of these machines: TVM_NOTES.md), and a small
TransformerEncoder; random weights, batch norms with non-trivial running statistics.

The layer structure, channel counts, kernel sizes, strides, paddings, biases, batch-norm eps and
activations are those of torchvision 0.2x (`torchvision.models.resnet18`,
`torchvision.models.mobilenet_v3_small`), so the exported graphs have the same operators in the
same order; only the weights are random.
"""

from __future__ import annotations

import torch
from torch import nn

# ---- ResNet-18 (torchvision.models.resnet: BasicBlock x [2, 2, 2, 2]) ----------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- MobileNetV3-small (torchvision.models.mobilenetv3) -----------------------------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation with BatchNorm2d (eps 0.001 as MobileNetV3 sets it)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.Hardswish):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation(input, squeeze, scale_activation=Hardsigmoid)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return s * x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, expanded: int, cout: int, use_se: bool, act: str, stride: int):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(ConvBNAct(cin, expanded, 1, act=activation))
        layers.append(ConvBNAct(expanded, expanded, k, stride, groups=expanded, act=activation))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8)))
        layers.append(ConvBNAct(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


# (input, kernel, expanded, output, SE, activation, stride) of mobilenet_v3_small, width 1.0
MOBILENET_V3_SMALL = [
    (16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1), (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1), (96, 5, 576, 96, True, "HS", 1),
]


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int = 1000, last_channel: int = 1024):
        super().__init__()
        layers = [ConvBNAct(3, 16, 3, 2)]
        layers += [InvertedResidual(*cfg) for cfg in MOBILENET_V3_SMALL]
        layers.append(ConvBNAct(96, 6 * 96, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(576, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(0.2, inplace=True), nn.Linear(last_channel, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ---- a transformer encoder ----------------------------------------------------------------------


def transformer_encoder(d_model: int = 64, heads: int = 4, layers: int = 2, ffn: int = 128,
                        generator: torch.Generator | None = None) -> nn.Module:
    """nn.TransformerEncoder of `layers` nn.TransformerEncoderLayer(batch_first=True, post-norm,
    ReLU feed-forward). nn.TransformerEncoder deep-copies one layer, so at initialisation all layers
    have the same weights; as in a trained model, every layer gets weights of its own here (and
    layer norms away from weight 1, bias 0)."""
    layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=ffn, batch_first=True)
    encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    generator = generator or torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if p.dim() > 1:  # projection weights: uniform in +-1/sqrt(fan_in), as nn.Linear initialises them
                bound = p.shape[1] ** -0.5
                p.copy_((torch.rand(p.shape, generator=generator) * 2 - 1) * bound)
            elif ".norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
            else:  # biases (of projections and layer norms)
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return encoder


def randomize_batch_norms(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Running statistics and affine parameters away from their defaults (mean 0, var 1, weight 1,
    bias 0), so that folding the batch norms into the convolutions is really exercised."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
    return model
