"""mnistcli beside the usual recipe, in one run on one machine: data, time to 99%, inference, start-up.

    python benchmarks/run.py --data-dir ../shared/data/mnist [--device cpu] [--threads 2]
                             [--seeds 5] [--repeats 5] [--reference-epochs 3] [--out results.json]

Every timing of a command is the wall time of a whole process, as a user runs it, measured from
here; everything runs with OMP_NUM_THREADS=--threads. Prints markdown tables (medians of
--repeats runs, ratios reference / mnistcli) and writes the raw numbers to --out.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS: dict[str, Any] = {}


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[float, list[dict[str, Any]], int]:
    """Run a whole process; return its wall time, the JSON lines it printed, and its exit code."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**env, "BENCH_T0": repr(time.time())}, input=stdin, capture_output=True, text=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode not in (0,):
        sys.stderr.write(f"warning: {' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr.strip()[-300:]}\n")
    return wall, rows, proc.returncode


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def setup(data_dir: Path, work: Path) -> tuple[Path, Path, Path]:
    """Raw copies of the four files, a torchvision root, and 1,000 test digits as PNG files."""
    import numpy as np
    from PIL import Image

    from mnistcli.data import mnist

    raw = work / "raw"
    tv_raw = work / "tv" / "MNIST" / "raw"
    raw.mkdir()
    tv_raw.mkdir(parents=True)
    for stem in mnist.RESOURCES:
        src = mnist.find_file(data_dir, stem)
        assert src is not None, f"{data_dir} lacks {stem}"
        data = src.read_bytes()
        (raw / stem).write_bytes(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
        os.symlink(raw / stem, tv_raw / stem)
    pngs = work / "pngs"
    pngs.mkdir()
    test = mnist.load_split("test", raw)
    for i in range(1000):
        Image.fromarray(np.asarray(test.images[i])).save(pngs / f"{i:04d}.png")
    (work / "labels.json").write_text(json.dumps(test.labels[:1000].tolist()))
    return raw, work / "tv", pngs


def bench_data(data_dir: Path, raw: Path, tv_root: Path, repeats: int) -> None:
    import numpy as np
    import torch
    from torchvision import datasets, transforms

    from mnistcli.data import mnist
    from mnistcli.data.idx import read_idx
    from mnistcli.data.tensors import TensorData

    def ours(folder: Path) -> None:
        for stem in mnist.RESOURCES:
            np.array(read_idx(mnist.find_file(folder, stem)))  # type: ignore[arg-type]  # materialised in memory

    def theirs() -> None:
        datasets.MNIST(str(tv_root), train=True, download=False)
        datasets.MNIST(str(tv_root), train=False, download=False)

    gz = median_time(lambda: ours(data_dir), repeats)
    plain = median_time(lambda: ours(raw), repeats)
    tv = median_time(theirs, repeats)

    split = mnist.load_split("train", raw)
    tensors = TensorData.from_numpy(split.images, split.labels, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)

    def our_epoch() -> None:
        for _x, _y in tensors.batches(64, generator):
            pass

    loader = torch.utils.data.DataLoader(
        datasets.MNIST(
            str(tv_root),
            train=True,
            download=False,
            transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]),
        ),
        batch_size=64,
        shuffle=True,
    )

    def their_epoch() -> None:
        for _x, _y in loader:
            pass

    ours_epoch = median_time(our_epoch, repeats)
    tv_epoch = median_time(their_epoch, max(1, repeats // 2))
    RESULTS["data"] = {
        "read_gz": gz,
        "read_raw": plain,
        "torchvision_read": tv,
        "epoch_tensors": ours_epoch,
        "epoch_dataloader": tv_epoch,
    }
    table(
        "Data",
        ["what", "mnistcli", "reference", "ratio"],
        [
            ["read the four IDX files, .gz (into memory)", f"{gz:.3f} s", "-", "-"],
            [
                "read the four IDX files, raw (into memory)",
                f"{plain:.3f} s",
                f"{tv:.3f} s (torchvision MNIST, raw)",
                f"{tv / plain:.1f}x",
            ],
            [
                "one epoch of batches of 64",
                f"{ours_epoch:.3f} s (tensor indexing)",
                f"{tv_epoch:.2f} s (DataLoader)",
                f"{tv_epoch / ours_epoch:.0f}x",
            ],
        ],
    )


def bench_time_to_99(data_dir: Path, tv_root: Path, args: argparse.Namespace, env: dict[str, str]) -> None:
    ours = []
    for seed in range(args.seeds):
        wall, rows, _ = run(
            [
                sys.executable,
                "-m",
                "mnistcli",
                "train",
                "cnn-fast",
                "--target-accuracy",
                "0.99",
                "--seed",
                str(seed),
                "--device",
                args.device,
                "--data-dir",
                str(data_dir),
                "--json",
            ],
            env,
        )
        summary = rows[-1] if rows else {}
        target = summary.get("target") or {}
        ours.append(
            {
                "seed": seed,
                "wall": wall,
                "reached": bool(target.get("reached")),
                "epochs": target.get("epochs"),
                "test_accuracy": summary.get("test_accuracy"),
            }
        )
    ref: dict[str, Any] = {"skipped": True}
    if not args.skip_reference:
        wall, rows, _ = run(
            [
                sys.executable,
                str(HERE / "reference.py"),
                "train",
                str(tv_root),
                "--epochs",
                str(args.reference_epochs),
                "--device",
                args.device,
            ],
            env,
        )
        hit = next((r for r in rows if r["test_accuracy"] >= 0.99), None)
        ref = {"epochs": rows, "wall": wall, "reached": hit is not None, "seconds": hit["seconds"] if hit else wall}
    RESULTS["time_to_99"] = {"mnistcli": ours, "reference": ref}

    hits = [o for o in ours if o["reached"]]
    walls = [o["wall"] for o in hits]
    med = statistics.median(walls) if walls else float("nan")
    rows_out = [
        [
            f"mnistcli `train cnn-fast --target-accuracy 0.99`, seed {o['seed']}",
            f"{o['wall']:.1f} s",
            f"{o['epochs']:.2f}" if o["epochs"] else "-",
            f"{100 * o['test_accuracy']:.2f}%" if o["test_accuracy"] else "-",
            "yes" if o["reached"] else "no",
        ]
        for o in ours
    ]
    rows_out.append(
        [
            f"**mnistcli median ({len(hits)}/{len(ours)} reached 99%)**",
            f"**{med:.1f} s** (min {min(walls, default=float('nan')):.1f}, max {max(walls, default=float('nan')):.1f})",
            "",
            "",
            "",
        ]
    )
    if not ref.get("skipped"):
        last = ref["epochs"][-1] if ref["epochs"] else {}
        rows_out.append(
            [
                "reference recipe (PyTorch examples), seed 1",
                f"{ref['seconds']:.1f} s" + ("" if ref["reached"] else " (not reached)"),
                str(len(ref["epochs"])),
                f"{100 * last.get('test_accuracy', 0):.2f}%",
                "yes" if ref["reached"] else "no",
            ]
        )
        rows_out.append(["**ratio reference / mnistcli median**", f"**{ref['seconds'] / med:.1f}x**", "", "", ""])
    table(
        "Time to 99.0% test accuracy, whole process",
        ["run", "wall time", "epochs", "test accuracy", "reached"],
        rows_out,
    )


def bench_inference(
    data_dir: Path, tv_root: Path, pngs: Path, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> None:
    labels = json.loads((work / "labels.json").read_text())
    dev = ["--device", args.device]
    evals = [
        run(
            [sys.executable, "-m", "mnistcli", "eval", "cnn-pretrained", "--data-dir", str(data_dir), "--json", *dev],
            env,
        )
        for _ in range(args.repeats)
    ]
    ours_ips = statistics.median(r[1][0]["images_per_second"] for r in evals)
    ours_eval_wall = statistics.median(r[0] for r in evals)
    refs = [
        run([sys.executable, str(HERE / "reference.py"), "eval", str(tv_root), "cnn-pretrained", *dev], env)
        for _ in range(args.repeats)
    ]
    ref_ips = statistics.median(r[1][0]["images_per_second"] for r in refs)

    files = sorted(str(p) for p in pngs.iterdir())
    preds = [
        run(
            [sys.executable, "-m", "mnistcli", "predict", "-", "--json", "-c", "cnn-pretrained", *dev],
            env,
            stdin="\n".join(files),
        )
        for _ in range(args.repeats)
    ]
    ours_pred = statistics.median(r[0] for r in preds)
    ours_acc = sum(r["digit"] == y for r, y in zip(preds[0][1], labels, strict=True)) / len(labels)
    ref_preds = [
        run([sys.executable, str(HERE / "reference.py"), "predict", "cnn-pretrained", *files, *dev], env)
        for _ in range(max(1, args.repeats // 2))
    ]
    ref_pred = statistics.median(r[0] for r in ref_preds)
    RESULTS["inference"] = {
        "eval_images_per_second": ours_ips,
        "eval_wall": ours_eval_wall,
        "reference_eval_images_per_second": ref_ips,
        "predict_1000_wall": ours_pred,
        "predict_accuracy": ours_acc,
        "reference_predict_1000_wall": ref_pred,
    }
    table(
        "Inference (the bundled cnn)",
        ["what", "mnistcli", "reference", "ratio"],
        [
            [
                "test set, 10,000 images",
                f"{ours_ips:,.0f} images/s (`mnist eval`; {ours_eval_wall:.1f} s whole process)",
                f"{ref_ips:,.0f} images/s (DataLoader test loop)",
                f"{ours_ips / ref_ips:.1f}x",
            ],
            [
                "1,000 PNG files, whole process",
                f"{1000 / ours_pred:,.0f} files/s ({ours_pred:.2f} s, accuracy {100 * ours_acc:.1f}%)",
                f"{1000 / ref_pred:,.0f} files/s ({ref_pred:.2f} s, one file at a time)",
                f"{ref_pred / ours_pred:.1f}x",
            ],
        ],
    )


def bench_startup(pngs: Path, args: argparse.Namespace, env: dict[str, str]) -> None:
    one = str(next(iter(sorted(pngs.iterdir()))))

    def med(cmd: list[str]) -> float:
        return statistics.median(run(cmd, env)[0] for _ in range(args.repeats))

    torch_import = med([sys.executable, "-c", "import torch"])
    help_ = med([sys.executable, "-m", "mnistcli", "--help"])
    predict = med([sys.executable, "-m", "mnistcli", "predict", one, "-c", "cnn-pretrained", "--device", args.device])
    # One optimizer step on one parameter: torch.optim imports torch._dynamo on its first step.
    step = "import torch; p = torch.zeros(1, requires_grad=True); p.sum().backward(); opt = {}; opt.step()"
    torch_step = med([sys.executable, "-c", step.format("torch.optim.SGD([p], lr=0.1)")])
    ours_step = med(
        [sys.executable, "-c", "from mnistcli.engine import optim; " + step.format("optim.SGD([p], lr=0.1)")]
    )
    RESULTS["startup"] = {
        "import_torch": torch_import,
        "help": help_,
        "predict_one": predict,
        "first_step_torch_optim": torch_step,
        "first_step_mnistcli_optim": ours_step,
    }
    table(
        "Start-up, whole process",
        ["command", "wall time", "vs `python -c 'import torch'`"],
        [
            ["`python -c 'import torch'`", f"{torch_import:.2f} s", "1.00x"],
            ["`mnist --help`", f"{help_:.2f} s", f"{help_ / torch_import:.2f}x"],
            ["`mnist predict one.png`", f"{predict:.2f} s", f"{predict / torch_import:.2f}x"],
            ["import torch, one step of `torch.optim.SGD`", f"{torch_step:.2f} s", f"{torch_step / torch_import:.2f}x"],
            [
                "import torch, one step of `mnistcli.engine.optim.SGD`",
                f"{ours_step:.2f} s",
                f"{ours_step / torch_import:.2f}x",
            ],
        ],
    )


def machine(args: argparse.Namespace) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    return (
        f"{cpu}, {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, device {args.device}{gpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=os.environ.get("MNIST_DATA_DIR"), help="folder of the four MNIST .gz files"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5, help="time-to-99%% runs of mnistcli, one per seed")
    parser.add_argument("--repeats", type=int, default=5, help="runs per median")
    parser.add_argument(
        "--reference-epochs", type=int, default=3, help="the reference stops at 99%% or after this many epochs"
    )
    parser.add_argument(
        "--skip-reference", action="store_true", help="skip the reference's time-to-99%% run (minutes on a CPU)"
    )
    parser.add_argument(
        "--only", choices=["data", "time", "inference", "startup"], action="append", help="run only these sections"
    )
    parser.add_argument("--out", help="also write the raw numbers here as JSON")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("pass --data-dir or set MNIST_DATA_DIR")
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir).resolve()
    sections = set(args.only or ["data", "time", "inference", "startup"])
    work = Path(tempfile.mkdtemp(prefix="mnistcli-bench-"))
    env = {**os.environ, "MNISTCLI_HOME": str(work / "home"), "PYTHONUNBUFFERED": "1"}
    try:
        raw, tv_root, pngs = setup(data_dir, work)
        print(f"## mnistcli benchmark, {time.strftime('%Y-%m-%d')}\n\nMachine: {machine(args)}.")
        RESULTS["machine"] = machine(args)
        if "data" in sections:
            bench_data(data_dir, raw, tv_root, args.repeats)
        if "startup" in sections:
            bench_startup(pngs, args, env)
        if "inference" in sections:
            bench_inference(data_dir, tv_root, pngs, work, args, env)
        if "time" in sections:
            bench_time_to_99(data_dir, tv_root, args, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out:
        Path(args.out).write_text(json.dumps(RESULTS, indent=2))


if __name__ == "__main__":
    main()
