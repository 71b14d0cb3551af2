"""`cnn`: the project's own default CNN, sized for a laptop CPU and tuned for accuracy.

Three conv blocks of width w, 2w, 4w (w=16), each conv -> max-pool -> batch norm -> ReLU. Pooling
straight after the convolution puts the normalisation and activation on a quarter of the pixels
(max-pooling commutes with the monotone ReLU). One training step at batch 512 on 2 CPU threads
here: conv-BN-ReLU-pool in NCHW 153 ms, the same channels-last 81 ms, pool-first channels-last
65 ms. Wider nets cost more: 24-48-96 2.2x and 32-64-128 3.4x the time of 16-32-64.
"""

from __future__ import annotations

from torch import nn

from mnistcli.models.base import Classifier
from mnistcli.registry import register_model


def conv_pool_bn(c_in: int, c_out: int, kernel: int = 3) -> list[nn.Module]:
    """Conv (no bias: batch norm follows), 2x2 max-pool, batch norm, ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class ConvBody(nn.Sequential):
    """Conv layers ending in a flatten, which say how many features they give: `out_features`."""

    def __init__(self, *layers: nn.Module, out_features: int) -> None:
        super().__init__(*layers)
        self.out_features = out_features


MAX_STEM_KERNEL = (
    7  # a stem's kernel at most: a padded one of any size keeps 14 x 14, at a cost that grows as its square
)


def cnn_body(
    width: int, strided_stem: bool = False, stem_norm: bool = True, stem_kernel: int = 5, stem_pad: bool = True
) -> ConvBody:
    """The three conv blocks (w, 2w, 4w) and the flatten: `cnn`'s feature extractor, and SimCLR's encoder.

    With `strided_stem`, the first block is a `stem_kernel` x `stem_kernel` convolution of stride 2 (then batch norm,
    unless not `stem_norm`, and ReLU) instead of convolution and pooling (`cnn-fast`), padded to keep half the
    image's size (14 x 14) if `stem_pad`, else unpadded (a 6x6 kernel: 12 x 12, every pixel seen). The two blocks
    after it halve the map twice (to 3 x 3 from 12 to 15): the body gives 3 x 3 x 4w = 36w features.
    Raises ValueError for a stem kernel above `MAX_STEM_KERNEL`, or one whose map would not come down to 3 x 3.
    """
    if not strided_stem:
        stem = conv_pool_bn(1, width, kernel=5)
    else:
        padding = (stem_kernel - 1) // 2 if stem_pad else 0
        side = (28 + 2 * padding - stem_kernel) // 2 + 1
        if not (1 <= stem_kernel <= MAX_STEM_KERNEL and 12 <= side <= 15):
            # two poolings must bring the map to 3 x 3: 12 to 15 across
            given = f"{stem_kernel} {'with' if stem_pad else 'without'} padding"
            raise ValueError(
                f"stem_kernel must be 1 to {MAX_STEM_KERNEL} with stem_pad=true, 1 to 6 without; not {given}"
            )
        conv = nn.Conv2d(1, width, stem_kernel, stride=2, padding=padding, bias=not stem_norm)
        # Without batch norm the convolution's own bias stands in for the normalisation's shift.
        stem = [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)] if stem_norm else [conv, nn.ReLU(inplace=True)]
    return ConvBody(
        *stem,
        *conv_pool_bn(width, 2 * width),
        *conv_pool_bn(2 * width, 4 * width),
        nn.Flatten(),
        out_features=4 * width * 3 * 3,
    )


# `cnn`'s training recipe; the adder, which shares its conv blocks, trains the same way.
RECIPE = {
    "epochs": 6,
    "batch_size": 256,
    "optimizer": "adamw",
    "lr": 0.01,
    "weight_decay": 1e-2,
    "scheduler": "onecycle",
    "label_smoothing": 0.1,
    "augment": True,
}


WIDE_RECIPE = {**RECIPE, "epochs": 12}  # `cnn-wide`: twice as long


@register_model(
    "cnn",
    family="classify",
    description="the default: 3 conv blocks (16-32-64), batch norm, augmentation; fast on a CPU",
    **RECIPE,
)
def cnn(width: int = 16) -> Classifier:
    """28x28 -> 14x14xw -> 7x7x2w -> 3x3x4w, flattened to 36w features."""
    body = cnn_body(width)
    return Classifier(body, feature_dim=body.out_features, channels_last=True)


@register_model(
    "cnn-wide",
    family="classify",
    description="cnn at width 24 (24-48-96), 12 epochs (the default ensemble's member until 2026-12-03)",
    **WIDE_RECIPE,
)
def cnn_wide(width: int = 24) -> Classifier:
    """`cnn` half as wide again, trained twice as long. On validation images held out of the training set (55,000
    trained on, 5,000 held out), `cnn` (6 epochs) members averaged 99.44% and three of them voting 99.52%; these
    averaged 99.59% and three of them voting 99.64%, for about 2.2 x 2 the time of a `cnn`."""
    body = cnn_body(width)
    return Classifier(body, feature_dim=body.out_features, channels_last=True)


@register_model(
    "cnn-w32",
    family="classify",
    description="cnn at width 32 (32-64-128), 12 epochs: the default ensemble's member",
    **WIDE_RECIPE,
)
def cnn_w32(width: int = 32) -> Classifier:
    """`cnn` twice as wide, trained twice as long. On the same validation images, four of them (seeds 0-3, each on
    52,250 images) scored 99.66, 99.62, 99.70 and 99.64% (mean 99.66%; `cnn-wide`'s three: 99.59%) and voted 99.68%
    (the first three 99.68%, against 99.64% for three `cnn-wide`), about 475 s each on one thread, two at a time."""
    body = cnn_body(width)
    return Classifier(body, feature_dim=body.out_features, channels_last=True)


@register_model(
    "cnn-fast",
    family="classify",
    description="tuned for time to 99%: unpadded stride-2 stem, 12-24-48, fc 128; one epoch of AdamW",
    epochs=1,
    batch_size=256,
    optimizer="adamw",  # muon reaches 99% a tenth of an epoch sooner, and no sooner in seconds (docs/benchmarks.md)
    lr=0.02,
    weight_decay=1e-2,
    scheduler="onecycle",
    label_smoothing=0.1,
    check_every=0.08,  # against 0.1: whole runs 3.67 s against 3.88 s (benchmarks/variants.py; docs/benchmarks.md)
    precision="auto",
    # What checkpoints written before a change hold: before 2026-12-04 a normalised stem; before 2026-12-05 a 5x5
    # stem padded to 14 x 14.
    legacy={"stem_norm": True, "stem_kernel": 5, "stem_pad": True},
)
def cnn_fast(
    width: int = 12, hidden: int = 128, stem_norm: bool = False, stem_kernel: int = 6, stem_pad: bool = False
) -> Classifier:
    """Like `cnn` at three quarters of the width, but the first convolution strides by 2 instead of
    pooling (a quarter of the stem's cost and no full-resolution pooling), and a 128-unit hidden
    layer before the head, which reached 99% sooner: 0.62 of an epoch against 0.74 without it
    (1-epoch one-cycle AdamW runs at lr 0.01 and 0.02, seed 0, test set checked every 1/8 epoch).
    About 0.86 M multiply-adds per image against `cnn`'s 2.1 M.

    The stem has no batch norm (`stem_norm=False`): its output (then 14 x 14 x w) was the largest the net
    normalised, and under bf16 autocast that normalisation took a sixth of a training step. Without
    it a bf16 step cost 0.76x (fp32 0.80x) and the test accuracy climbed as fast (seeds 0-4, fp32 test accuracy every
    1/32 epoch: 99% first reached after a median 0.69 epochs either way; docs/benchmarks.md,
    benchmarks/step_costs.py, 5x5 padded stems).

    The stem is a 6x6 kernel, unpadded (`stem_kernel=6, stem_pad=False`): its map is 12 x 12, not 14 x 14, and
    every block after it works on 0.73x the pixels, yet it still sees every pixel (the 5x5 padded stem's 14 x 14
    came down to 7 x 7 and then 3 x 3, the last row and column of the 7 x 7 dropped by the pooling). Whole runs to
    99%: 3.84 s against 4.33 s, stopping as soon or sooner (seeds 0-4, benchmarks/variants.py; docs/benchmarks.md).
    """
    convs = cnn_body(width, strided_stem=True, stem_norm=stem_norm, stem_kernel=stem_kernel, stem_pad=stem_pad)
    body = nn.Sequential(
        *convs, nn.Linear(convs.out_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)
    )
    return Classifier(body, feature_dim=hidden, channels_last=True)
