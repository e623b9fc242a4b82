"""PyTorch twins of resnet_jax's models, with the same state_dict keys.

The ImageNet layout is torchvision's own ResNet. The CIFAR layouts (the
paper's option-A nets, the CIFAR-stem projection nets, and their plain
counterparts) are built here, mirroring resnet_jax/models/ layer for layer.
"""

from __future__ import annotations

from resnet_jax import create_model
from torch_side.required import F, torch

nn = torch.nn  # imported through the guard: one line where PyTorch is missing


class Block(nn.Module):
    """torchvision's BasicBlock / Bottleneck, with option-A shortcuts and a plain mode."""

    def __init__(self, inplanes: int, planes: int, stride: int, bottleneck: bool,
                 shortcut: str, residual: bool):
        super().__init__()
        width, out = planes, planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.conv3 = nn.Conv2d(width, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
        else:
            self.conv1 = nn.Conv2d(inplanes, width, 3, stride, 1, bias=False)
            self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(width), nn.BatchNorm2d(width)
        self.bottleneck, self.residual, self.stride = bottleneck, residual, stride
        self.changes_shape = stride != 1 or inplanes != out
        self.extra_channels = out - inplanes
        if residual and self.changes_shape and shortcut == "projection":
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False),
                                            nn.BatchNorm2d(out))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if not self.changes_shape:
            return x
        if hasattr(self, "downsample"):
            return self.downsample(x)
        x = x[:, :, ::self.stride, ::self.stride]
        low = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, low, self.extra_channels - low))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        if self.residual:
            y = y + self.shortcut(x)
        return F.relu(y)


class CifarResNet(nn.Module):
    """3x3 stem, no max-pool, then stages of blocks, as resnet_jax's 'cifar' stem."""

    def __init__(self, stage_sizes, stage_widths, bottleneck: bool, shortcut: str,
                 residual: bool, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stage_widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        inplanes = stage_widths[0]
        for stage, (blocks, width) in enumerate(zip(stage_sizes, stage_widths, strict=True)):
            layers = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(Block(inplanes, width, stride, bottleneck, shortcut, residual))
                inplanes = width * (4 if bottleneck else 1)
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.num_stages = len(stage_sizes)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def torch_model(name: str, num_classes: int, residual: bool = True) -> nn.Module:
    """The PyTorch model whose state_dict keys equal to_torchvision(create_model(name))'s."""
    spec = create_model(name)
    if spec.stem == "imagenet":
        if not residual:
            raise ValueError("plain (residual=False) ImageNet-layout nets have no torchvision twin")
        import torchvision

        return getattr(torchvision.models, name)(num_classes=num_classes)
    bottleneck = spec.block_cls.expansion == 4
    return CifarResNet(spec.stage_sizes, spec.stage_widths, bottleneck, spec.shortcut, residual,
                       num_classes)
