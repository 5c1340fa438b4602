"""Narrower speedrun nets, for asking whether `quick-cpu` could reach 83% in 3 minutes in fp32.

On a CPU without native bf16 (AVX2), `quick-cpu` (32/128/128, 4 epochs) needs ~9 minutes
for its 85.5%. These nets trade width for epochs; each is run as a model file:

    cifarlab train --preset quick-cpu --model benchmarks/narrow_nets.py:w16 \
        --batch-size 256 --epochs 3 --data ../shared/data/cifar10-jpeg.tar.gz

The figures (BENCHMARKS.md, "A CPU without bf16") found none that reaches 83% in 3 minutes
at 4 epochs or fewer; `w16` is now the built-in `speedrun-tiny`, which at 6 epochs beat 83%
in about half `quick-cpu`'s time (nineteenth session).
"""

from cifarlab.models.reference import speedrun_net


def w16(num_classes=10, in_channels=3, image_size=32):
    return speedrun_net(num_classes, in_channels, image_size, widths=(16, 64, 64))


def w16_128(num_classes=10, in_channels=3, image_size=32):
    return speedrun_net(num_classes, in_channels, image_size, widths=(16, 64, 128))
