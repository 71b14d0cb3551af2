"""What one training step and one evaluation of the test set cost, model by model, fp32 against bf16 autocast.

    python benchmarks/step_costs.py [--data-dir ../shared/data/mnist] [--rounds 8] [--threads 2]

One process, the configurations interleaved round by round (a shared machine's speed moves by a third from minute
to minute; interleaving makes each round's noise fall on all of them alike), the first round thrown away (oneDNN
builds its kernels then). A step is what the training loop does for one batch of 256: forward, cross-entropy,
backward, an SGD update (the optimizer's own cost is the same for every row). The evaluation is the 10,000 test
images through `protocols.inference.evaluate_classifier` (batches of 1,000), as the target checks and `mnist eval`
run it; without `--data-dir` it uses random images. Prints the median of each, and each one's ratio to the first
row. bf16 is only fast where the CPU has it natively (AVX-512 BF16 or AMX): elsewhere it is emulated.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mnistcli.data.tensors import TensorData
from mnistcli.engine.device import native_bf16
from mnistcli.protocols.inference import evaluate_classifier
from mnistcli.registry import create_model

PADDED = {"stem_kernel": 5, "stem_pad": True}  # cnn-fast's stem before 2026-12-05
NORMED = {**PADDED, "stem_norm": True}  # and before 2026-12-04
CASES = [  # (label, model, model arguments, channels-last, bf16)
    ("cnn-fast, fp32", "cnn-fast", {}, True, False),
    ("cnn-fast, bf16", "cnn-fast", {}, True, True),
    ("cnn-fast 5x5 stem padded (before 2026-12-05), fp32", "cnn-fast", PADDED, True, False),
    ("cnn-fast 5x5 stem padded (before 2026-12-05), bf16", "cnn-fast", PADDED, True, True),
    ("cnn-fast 5x5 stem padded, normalised (before 2026-12-04), fp32", "cnn-fast", NORMED, True, False),
    ("cnn-fast 5x5 stem padded, normalised (before 2026-12-04), bf16", "cnn-fast", NORMED, True, True),
    ("cnn-fast NCHW, fp32", "cnn-fast", {}, False, False),
    ("cnn-fast NCHW, bf16", "cnn-fast", {}, False, True),
    ("cnn-fast width 8, bf16", "cnn-fast", {"width": 8}, True, True),
    ("cnn-fast width 16, bf16", "cnn-fast", {"width": 16}, True, True),
    ("cnn, fp32", "cnn", {}, True, False),
    ("cnn, bf16", "cnn", {}, True, True),
]


def autocast(bf16: bool) -> Callable[[], Any]:
    return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="steps timed per case and round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = torch.rand(256, 1, 28, 28), torch.randint(0, 10, (256,))
    if args.data_dir:
        from mnistcli.data.mnist import load_split

        split = load_split("test", args.data_dir)
        test = TensorData.from_numpy(split.images, split.labels, torch.device("cpu"))
    else:
        test = TensorData((torch.rand(10_000, 28, 28) * 255).to(torch.uint8), torch.randint(0, 10, (10_000,)))
    models = {}
    for label, name, model_args, channels_last, _ in CASES:
        model = create_model(name, **model_args)
        if not channels_last:
            model = model.to(memory_format=torch.contiguous_format)
            model.channels_last = False  # the classifiers' own flag: inputs stay NCHW
        models[label] = (model, torch.optim.SGD(model.parameters(), lr=0.01))
    steps: dict[str, list[float]] = {label: [] for label, *_ in CASES}
    evals: dict[str, list[float]] = {label: [] for label, *_ in CASES}
    for round_ in range(args.rounds + 1):
        for label, *_, bf16 in CASES:
            model, opt = models[label]
            model.train()
            for _ in range(args.steps):
                start = time.perf_counter()
                with autocast(bf16)():
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
                if round_:
                    steps[label].append(time.perf_counter() - start)
            start = time.perf_counter()
            with autocast(bf16)():
                evaluate_classifier(model, test)
            if round_:
                evals[label].append(time.perf_counter() - start)
    print(
        f"{args.threads} threads, {args.rounds} rounds; this CPU computes bf16 natively: {native_bf16(torch.device('cpu'))}"
    )
    print(
        "\n| case | one step (batch 256) | / first | 10,000 test images | / first |\n| --- | ---: | ---: | ---: | ---: |"
    )
    first_step, first_eval = statistics.median(steps[CASES[0][0]]), statistics.median(evals[CASES[0][0]])
    for label, *_ in CASES:
        step, evaluation = statistics.median(steps[label]), statistics.median(evals[label])
        print(
            f"| {label} | {1000 * step:.1f} ms | {step / first_step:.2f} | {evaluation:.3f} s | "
            f"{evaluation / first_eval:.2f} |"
        )


if __name__ == "__main__":
    main()
