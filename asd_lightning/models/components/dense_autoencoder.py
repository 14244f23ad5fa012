"""Dense autoencoder of the official DCASE 2020–2022 baseline."""

from __future__ import annotations

from torch import nn


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, outputs), nn.BatchNorm1d(outputs), nn.ReLU())


class DenseAutoencoder(nn.Module):
    """``input_dim`` → ``hidden`` × ``depth`` → ``bottleneck`` → ``hidden`` × ``depth`` → ``input_dim``.

    Every hidden and bottleneck layer has BatchNorm and ReLU; the output layer is linear
    (official setting: 640 → 128 ×4 → 8 → 128 ×4 → 640).
    """

    def __init__(self, input_dim: int = 640, hidden: int = 128, bottleneck: int = 8, depth: int = 4) -> None:
        super().__init__()
        sizes = [input_dim] + [hidden] * depth
        self.encoder = nn.Sequential(*[_block(a, b) for a, b in zip(sizes, sizes[1:])], _block(hidden, bottleneck))
        decoder_sizes = [bottleneck] + [hidden] * depth
        self.decoder = nn.Sequential(*[_block(a, b) for a, b in zip(decoder_sizes, decoder_sizes[1:])],
                                     nn.Linear(hidden, input_dim))

    def forward(self, x):
        return self.decoder(self.encoder(x))
