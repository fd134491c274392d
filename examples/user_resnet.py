"""A user-defined residual net for potq: `--model examples/user_resnet.py:build`.

potq calls build(in_shape, classes) with the data's (C, H, W) and class count, captures the model's
graph with torch.fx, and quantizes, verifies, costs and exports it like any zoo model. It uses a 5x5
stem without BatchNorm, a stride-2 convolution, residual additions, ReLU6, a channel concatenation and
global average pooling.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class UserResNet(nn.Module):
    def __init__(self, in_shape=(3, 32, 32), classes=10, width=16):
        super().__init__()
        self.stem = nn.Conv2d(in_shape[0], width, 5, padding=2)  # no BatchNorm
        self.block1 = Block(width)
        self.down = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU6())
        self.side = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU())
        self.block2 = Block(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.block1(torch.relu(self.stem(x)))
        x = self.down(x)
        x = torch.cat([x, self.side(x)], dim=1)  # potq gives both inputs one scale
        x = self.block2(x)
        return self.fc(self.drop(self.pool(x).view(x.size(0), -1)))


def build(in_shape, classes):
    return UserResNet(tuple(in_shape), classes)
