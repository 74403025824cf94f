"""Classifiers of powder patterns: the 1-D ResNet of Lolla et al. and the Park et al. CNN.

``build_model(cfg, input_length, in_channels, heads)`` returns a :class:`MultiHeadNet`: a
feature trunk and one linear head per task (space group 230, crystal system 7, Bravais
lattice 14, extinction group 97); ``forward`` returns ``{head: logits}``.

ResNet (Lolla et al., J. Appl. Cryst. 55, 2022; the classifier of usnistgov/semi-supervised-
neutron): stem convolution (kernel 13, stride 1, no padding) + channel LayerNorm + GELU,
max-pool (7, stride 7), four residual stages (channels 32, 64, 64, 64; kernels 5, 7, 17, 13;
first-block strides 4, 4, 5, 3; 2 blocks each), global max pooling. A block is
conv-LN-GELU, conv-LN, plus a shortcut, then GELU; every conv has dropout 0.05 after it.
``norm = "group"`` replaces the channel LayerNorm by GroupNorm(1, C) and ``stem_dropout = 0``
drops the stem's dropout: the same parameters and FLOPs, ~1.9x the CPU speed (the
full-length stem's dropout mask and LayerNorm transposes cost more than its convolution).
As in the published code every block's shortcut is a 1x1 convolution + LN (a projection
even where the shape does not change): that is what gives the published 0.64 M parameters.
Note: the published code builds the max-pool but its ``forward`` never calls it; the
numbers the study quotes for speed (52 MFLOP per sample, forward + backward, on 3296 points)
are those of the net *with* the pool, which is what is built here (``pool_kernel = 1`` gives
the net without it: 6.6x the FLOPs).

Park et al. (IUCrJ 4, 2017) baseline: three convolutions (80 channels, kernels 100, 50, 25
points on their 0.01-degree grid, i.e. 20, 10, 5 on the 0.05-degree BT-1 grid; strides 5, 5, 2), each followed by ReLU, dropout and average pooling (3, stride 2), then two
dense layers (2300, 1150) with ReLU and dropout, then the heads.
"""
from __future__ import annotations

from .config import HEADS, ModelConfig


def _torch():
    import torch
    import torch.nn as nn

    return torch, nn


def _layers():
    torch, nn = _torch()

    class ChannelLayerNorm(nn.Module):
        """LayerNorm over channels at every position of a (batch, channels, length) tensor."""

        def __init__(self, channels: int):
            super().__init__()
            self.norm = nn.LayerNorm(channels)

        def forward(self, x):
            return self.norm(x.transpose(1, 2)).transpose(1, 2)

    class ConvLN(nn.Module):
        def __init__(self, cin, cout, kernel, stride, dropout, padding, act, norm="layer"):
            super().__init__()
            self.conv = nn.Conv1d(cin, cout, kernel, stride, padding=padding, bias=False)
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.norm = ChannelLayerNorm(cout) if norm == "layer" else nn.GroupNorm(1, cout)
            self.act = nn.GELU() if act else nn.Identity()

        def forward(self, x):
            return self.act(self.norm(self.drop(self.conv(x))))

    class Block(nn.Module):
        def __init__(self, cin, cout, kernel, stride, dropout, norm):
            super().__init__()
            self.conv1 = ConvLN(cin, cout, kernel, stride, dropout, kernel // 2, True, norm)
            self.conv2 = ConvLN(cout, cout, kernel, 1, dropout, kernel // 2, False, norm)
            self.shortcut = ConvLN(cin, cout, 1, stride, 0.0, 0, False, norm)
            self.act = nn.GELU()

        def forward(self, x):
            return self.act(self.shortcut(x) + self.conv2(self.conv1(x)))

    class ResNet1d(nn.Module):
        def __init__(self, cfg: ModelConfig, in_channels: int):
            super().__init__()
            stem_drop = cfg.dropout if cfg.stem_dropout is None else cfg.stem_dropout
            self.stem = ConvLN(in_channels, cfg.dims[0], cfg.stem_kernel, cfg.stem_stride, stem_drop, 0, True, cfg.norm)
            self.pool = (nn.MaxPool1d(cfg.pool_kernel, cfg.pool_stride, padding=cfg.pool_kernel // 2)
                         if cfg.pool_kernel > 1 or cfg.pool_stride > 1 else nn.Identity())
            stages = []
            prev = cfg.dims[0]
            for dim, k, s, nb in zip(cfg.dims, cfg.kernels, cfg.strides, cfg.blocks):
                blocks = [Block(prev, dim, k, s, cfg.dropout, cfg.norm)]
                blocks += [Block(dim, dim, k, 1, cfg.dropout, cfg.norm) for _ in range(nb - 1)]
                stages.append(nn.Sequential(*blocks))
                prev = dim
            self.stages = nn.Sequential(*stages)
            self.global_pool = nn.AdaptiveMaxPool1d(1) if cfg.global_pool == "max" else nn.AdaptiveAvgPool1d(1)
            self.features = prev

        def forward(self, x):
            return self.global_pool(self.stages(self.pool(self.stem(x)))).flatten(1)

    class ParkCNN(nn.Module):
        def __init__(self, cfg: ModelConfig, in_channels: int, input_length: int):
            super().__init__()
            layers = []
            prev = in_channels
            length = input_length
            for k, s in zip(cfg.park_kernels, cfg.park_strides):
                layers += [nn.Conv1d(prev, cfg.park_channels, k, s), nn.ReLU(), nn.Dropout(cfg.dropout),
                           nn.AvgPool1d(3, 2)]
                prev = cfg.park_channels
                length = (length - k) // s + 1
                length = (length - 3) // 2 + 1
                if length < 1:
                    from ..errors import InputError

                    raise InputError(f"input length {input_length} is too short for the Park CNN's "
                                     "kernels and strides", field="model.park_kernels")
            self.conv = nn.Sequential(*layers)
            dense = []
            width = prev * length
            for d in cfg.park_dense:
                dense += [nn.Linear(width, d), nn.ReLU(), nn.Dropout(cfg.dropout)]
                width = d
            self.dense = nn.Sequential(*dense)
            self.features = width

        def forward(self, x):
            return self.dense(self.conv(x).flatten(1))

    class MultiHeadNet(nn.Module):
        """A trunk and one linear head per task; ``forward(x) -> {head: logits}``."""

        def __init__(self, trunk, heads: dict[str, int]):
            super().__init__()
            self.trunk = trunk
            self.heads = nn.ModuleDict({h: nn.Linear(trunk.features, n) for h, n in heads.items()})

        def forward(self, x):
            f = self.trunk(x)
            return {h: head(f) for h, head in self.heads.items()}

    return ResNet1d, ParkCNN, MultiHeadNet


def build_model(cfg: ModelConfig, input_length: int, in_channels: int = 1, heads=None):
    """The network of ``cfg`` for inputs ``(batch, in_channels, input_length)``.

    ``heads``: names (vocabulary sizes from :data:`~xtalhpc.train.config.HEADS`) or a dict
    name -> number of classes; default all four heads.
    """
    ResNet1d, ParkCNN, MultiHeadNet = _layers()
    if heads is None:
        heads = dict(HEADS)
    elif not isinstance(heads, dict):
        heads = {h: HEADS[h] for h in heads}
    trunk = ResNet1d(cfg, in_channels) if cfg.arch == "resnet1d" else ParkCNN(cfg, in_channels, input_length)
    return MultiHeadNet(trunk, heads)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_sample(model, input_length: int, in_channels: int = 1) -> dict[str, float]:
    """Floating-point operations per pattern, counted from the convolutions and linear layers.

    A multiply-add counts 2 FLOPs; normalisation, activations, pooling and the optimizer are
    left out (a few % here). Backward costs twice the forward (gradients with respect to the
    inputs and to the weights), so forward + backward = 3 x forward.

    Returns ``{"forward": F, "forward_backward": 3 F}`` in FLOPs.
    """
    torch, nn = _torch()
    total = [0]

    def conv_hook(mod, inp, out):
        total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0]

    def lin_hook(mod, inp, out):
        total[0] += 2 * out.numel() * mod.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, input_length))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {"forward": float(total[0]), "forward_backward": 3.0 * total[0]}
