"""Model zoo.

Every model is ``nn.Sequential(Normalize(mean, std), body)``: inputs are images in [0, 1], the
normalization travels with the weights, and a checkpoint alone (architecture name + kwargs +
normalization + state dict) rebuilds the classifier for certification.

Architectures: ``mlp``, ``cnn_small`` (8x8 and 28x28 inputs), ``lenet``, ``resnet20`` and
``resnet110`` (CIFAR ResNets of He et al., as used by Cohen et al.), ``resnet50`` (the ImageNet
ResNet-50 in torchvision's layout and parameter names, which Cohen et al.'s ImageNet models use), ``cnn7`` (the CNN-7 with batch
norm of Shi et al. 2021 / ACERT, 17M parameters at 32x32), ``cnn_ibp`` (a small CNN for IBP on
digits / Fashion-MNIST).
"""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """(x - mean) / std per channel; x: (B, C, H, W) or (B, D) with C = len(mean)."""

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.shape != std.shape:
            raise ValueError("mean and std must have the same length")
        if not torch.all(std > 0):
            raise ValueError("std must be > 0")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (1, C, 1, ..., 1) against the channel axis; written so that torch.jit.script compiles it
        shape = [1, -1]
        for _ in range(x.dim() - 2):
            shape.append(1)
        return (x - self.mean.view(shape)) / self.std.view(shape)


def _mlp(input_shape, num_classes, hidden=(256, 256)):
    d = 1
    for s in input_shape:
        d *= int(s)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def _cnn_small(input_shape, num_classes, width=32):
    c, h, w = input_shape
    if h >= 28:  # 28x28: two stride-2 convs -> 7x7
        body = [nn.Conv2d(c, width, 3, 1, 1), nn.ReLU(), nn.Conv2d(width, width, 4, 2, 1), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, 1, 1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 4, 2, 1), nn.ReLU()]
        hh, ww = h // 4, w // 4
    else:  # 8x8 digits: one stride-2 conv -> 4x4
        body = [nn.Conv2d(c, width, 3, 1, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU()]
        hh, ww = h // 2, w // 2
    return nn.Sequential(*body, nn.Flatten(), nn.Linear(2 * width * hh * ww, 128), nn.ReLU(),
                         nn.Linear(128, num_classes))


def _lenet(input_shape, num_classes):
    c, h, w = input_shape
    pad = 2 if h == 28 else 0
    hh = ((h + 2 * pad - 4) // 2 - 4) // 2
    ww = ((w + 2 * pad - 4) // 2 - 4) // 2
    if hh < 1 or ww < 1:
        raise ValueError(f"lenet needs inputs of at least 28x28, got {input_shape}")
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * hh * ww, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))


def _cnn_ibp(input_shape, num_classes, width=16):
    """Small IBP-friendly CNN (conv-conv-fc, no pooling), after Gowal et al.'s 'small' model."""
    c, h, w = input_shape
    h1, w1 = (h - 4 + 2) // 2 + 1, (w - 4 + 2) // 2 + 1
    h2, w2 = (h1 - 4 + 2) // 2 + 1, (w1 - 4 + 2) // 2 + 1
    return nn.Sequential(nn.Conv2d(c, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * width * h2 * w2, 100), nn.ReLU(), nn.Linear(100, num_classes))


def _cnn7(input_shape, num_classes, width=64, linear=512):
    """CNN-7 of Shi et al. 2021: 5 conv (64,64,128,128,128; third one stride 2) + 2 linear, BN after each."""
    c, h, w = input_shape
    layers = [nn.Conv2d(c, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
              nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
              nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
              nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
              nn.Conv2d(2 * width, 2 * width, 3, 1, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
              nn.Flatten(), nn.Linear(2 * width * ((h + 1) // 2) * ((w + 1) // 2), linear),
              nn.BatchNorm1d(linear), nn.ReLU(), nn.Linear(linear, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016): 3 stages of n basic blocks, 16/32/64 channels."""

    def __init__(self, depth, input_shape, num_classes):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError("depth must be 6n+2")
        n = (depth - 2) // 6
        c = input_shape[0]
        self.conv = nn.Conv2d(c, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        blocks, cin = [], 16
        for i, cout in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.pool(self.layers(x)).flatten(1)
        return self.fc(x)


class Bottleneck(nn.Module):
    """ResNet-50 block (torchvision's layout: the stride sits on the 3x3 conv): 1x1 -> 3x3 -> 1x1 (x4)."""
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 (He et al. 2016) with torchvision's module names (conv1, bn1, layer1..layer4 of
    Bottleneck blocks, fc), so torchvision's and Cohen et al.'s ImageNet state dicts load unchanged.
    ``width`` is the stem width (64 in the paper); smaller values give the same graph, cheaper."""

    def __init__(self, input_shape, num_classes, width=64):
        super().__init__()
        width = int(width)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.conv1 = nn.Conv2d(input_shape[0], width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = width
        for i, (planes, blocks) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), (3, 4, 6, 3))):
            layer = []
            for j in range(blocks):
                layer.append(Bottleneck(cin, planes, 2 if (j == 0 and i > 0) else 1))
                cin = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


ARCHS = {
    "mlp": _mlp,
    "cnn_small": _cnn_small,
    "lenet": _lenet,
    "cnn_ibp": _cnn_ibp,
    "cnn7": _cnn7,
    "resnet20": lambda s, k: CifarResNet(20, s, k),
    "resnet110": lambda s, k: CifarResNet(110, s, k),
    "resnet50": lambda s, k, width=64: ResNet50(s, k, width),
}


def build_model(arch: str, input_shape, num_classes: int, mean=(0.0,), std=(1.0,), **kwargs) -> nn.Sequential:
    """Build ``Sequential(Normalize(mean, std), <arch body>)`` for inputs of ``input_shape`` (C, H, W)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    body = ARCHS[arch](input_shape, int(num_classes), **kwargs)
    return nn.Sequential(Normalize(mean, std), body)
