"""Finding, validating and downloading MNIST; the download runs against a server on 127.0.0.1."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistcli.cli import app
from mnistcli.data import mnist
from mnistcli.data.idx import write_idx
from mnistcli.errors import DataError, IdxError
from tests.helpers import write_mnist


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a fresh folder; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()


def synthetic_resources(folder: Path) -> dict[str, str]:
    """md5s of the decompressed synthetic files, to stand in for the published ones."""
    return {
        stem: hashlib.md5(gzip.decompress((folder / f"{stem}.gz").read_bytes())).hexdigest() for stem in mnist.RESOURCES
    }


@pytest.mark.parametrize("gz", [True, False])
def test_load_both_naming_styles(tmp_path: Path, gz: bool) -> None:
    folder = write_mnist(tmp_path, n_train=20, n_test=10, gz=gz)
    for path in list(folder.iterdir()):  # rename to the dotted style some mirrors use
        path.rename(folder / path.name.replace("-idx", ".idx"))
    split = mnist.load_split("test", mnist.resolve_dir(folder))
    assert split.images.shape == (10, 28, 28) and split.labels.shape == (10,)
    assert ".idx" in split.images_path.name


def test_search_order_and_explicit_folder_must_hold_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_mnist(tmp_path / "good", n_train=10, n_test=10)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("MNIST_DATA_DIR", str(good))
    assert mnist.resolve_dir(None) == good
    with pytest.raises(DataError, match=r"empty \(--data-dir\): no MNIST file for train-images-idx3-ubyte"):
        mnist.resolve_dir(empty)
    monkeypatch.setenv("MNIST_DATA_DIR", str(empty))
    with pytest.raises(DataError, match="MNIST_DATA_DIR"):
        mnist.resolve_dir(None)


def test_counts_that_disagree_are_refused(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path, n_train=10, n_test=10)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(9, dtype=np.uint8))
    with pytest.raises(DataError, match=r"10 images but .* 9 labels"):
        mnist.load_split("test", folder)


def test_labels_out_of_range_and_wrong_shape_are_refused(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path, n_train=10, n_test=10)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, dtype=np.uint8))
    with pytest.raises(DataError, match="label 12 is outside 0-9"):
        mnist.load_split("test", folder)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((10, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="expected N x 28 x 28 uint8 images, got 10x32x32"):
        mnist.load_split("train", folder)


def test_download_tries_mirrors_checks_md5_and_writes_atomically(
    tmp_path: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    source = write_mnist(tmp_path / "src", n_train=20, n_test=10)
    monkeypatch.setattr(mnist, "RESOURCES", synthetic_resources(source))
    (root / "bad").mkdir()
    (root / "good").mkdir()
    for f in source.iterdir():
        shutil.copy(f, root / "good" / f.name)
        (root / "bad" / f.name).write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))  # valid gzip, wrong md5
    monkeypatch.setenv("MNISTCLI_MIRRORS", f"{url}missing/,{url}bad/,{url}good/")
    seen: list[tuple[str, int]] = []
    folder = mnist.resolve_dir(None, on_progress=lambda label, done, total: seen.append((label, done)))
    assert mnist.missing_files(folder) == []
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert {label for label, _ in seen} == {f"{s}.gz" for s in mnist.RESOURCES}
    np.testing.assert_array_equal(mnist.load_split("train", folder).labels, mnist.load_split("train", source).labels)


def test_download_failure_says_how_to_use_local_files(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = server
    monkeypatch.setenv("MNISTCLI_MIRRORS", f"{url}nothing-here/")
    with pytest.raises(
        DataError,
        match=r"could not download train-images-idx3-ubyte.gz .*404.*pass --data-dir DIR, set MNIST_DATA_DIR=DIR, "
        r"or remember the folder with `mnist settings data_dir=DIR`",
    ):
        mnist.resolve_dir(None)


def test_only_the_files_of_the_splits_needed_are_downloaded(
    tmp_path: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    source = write_mnist(tmp_path / "src", n_train=20, n_test=10)
    monkeypatch.setattr(mnist, "RESOURCES", synthetic_resources(source))
    for stem in mnist.SPLITS["test"]:  # a mirror with the test files only
        shutil.copy(source / f"{stem}.gz", root / f"{stem}.gz")
    monkeypatch.setenv("MNISTCLI_MIRRORS", url)
    folder = mnist.resolve_dir(None, splits=("test",))
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(DataError, match=r"could not download train-images-idx3-ubyte\.gz"):
        mnist.resolve_dir(None)


def test_real_download_path_with_real_files(
    real_mnist: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The published md5s verify the real files when served by a mirror."""
    url, root = server
    for f in real_mnist.glob("*.gz"):
        shutil.copy(f, root / f.name)
    monkeypatch.delenv("MNIST_DATA_DIR")
    monkeypatch.setenv("MNISTCLI_MIRRORS", url)
    folder = mnist.resolve_dir(None)
    assert mnist.load_split("train", folder).labels.shape == (60000,)


def images_bomb(path: Path, count: int) -> Path:
    """A gzip file of `count` x 28 x 28 zero images, header consistent (an honest 1032:1), written a chunk at a time."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 8, 3]) + np.asarray([count, 28, 28], dtype=">u4").tobytes())
        for start in range(0, count * 784, 1 << 22):
            f.write(bytes(min(1 << 22, count * 784 - start)))
    return path


def peak_of(call: object) -> tuple[object, int]:
    """(what `call()` returned or raised, the peak bytes tracemalloc saw meanwhile: numpy's buffers included)."""
    assert callable(call)
    tracemalloc.start()
    try:
        result: object = call()
    except Exception as e:
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


def test_an_image_bomb_is_refused_from_its_header_before_inflating(tmp_path: Path) -> None:
    """200000 images claimed (157 MB of zeros in 150 KB) beside 10 labels: refused for a few MB, not 157."""
    folder = write_mnist(tmp_path / "d", n_train=10, n_test=10)
    images_bomb(folder / "t10k-images-idx3-ubyte.gz", 200_000)
    error, peak = peak_of(lambda: mnist.load_split("test", folder))
    assert isinstance(error, DataError) and "has 200000 images but" in str(error) and "has 10 labels" in str(error)
    assert peak < 8 * 2**20, f"{peak} bytes"


def test_more_than_mnist_holds_is_refused_from_the_header(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "d", n_train=10, n_test=10)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:  # 10 million labels of zeros: 10 KB
        f.write(bytes([0, 0, 8, 1]) + np.asarray([10_000_000], dtype=">u4").tobytes() + bytes(10_000_000))
    error, peak = peak_of(lambda: mnist.load_split("test", folder))
    assert isinstance(error, DataError) and str(error).endswith(
        ": 10000000 labels, more than the 300000 mnistcli reads (MNIST has 60000)"
    )
    assert peak < 8 * 2**20, f"{peak} bytes"


def test_the_cli_refuses_an_image_bomb_in_one_line(tmp_path: Path, runner: CliRunner) -> None:
    folder = write_mnist(tmp_path / "d", n_train=10, n_test=10)
    bomb = images_bomb(folder / "t10k-images-idx3-ubyte.gz", 100_000)
    result = runner.invoke(app, ["eval", "--data-dir", str(folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {bomb} has 100000 images but {folder / 't10k-labels-idx1-ubyte.gz'} has 10 labels"
    ]


def test_a_downloaded_bomb_is_never_inflated(
    tmp_path: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mirror serving a gzip bomb (500000 images claimed, 390 MB of zeros in 380 KB) costs a few MB to refuse."""
    url, root = server
    images_bomb(root / "t10k-images-idx3-ubyte.gz", 500_000)
    monkeypatch.setenv("MNISTCLI_MIRRORS", url)
    error, peak = peak_of(lambda: mnist.resolve_dir(None, splits=("test",)))
    assert isinstance(error, DataError) and "could not download t10k-images-idx3-ubyte.gz" in str(error)
    assert "t10k-images-idx3-ubyte.gz: 500000 images, more than the 300000 mnistcli reads (MNIST has 60000)" in str(
        error
    )
    assert peak < 16 * 2**20, f"{peak} bytes"


def test_a_download_larger_than_any_mnist_file_is_cut_off(
    tmp_path: Path, server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(5000))
    monkeypatch.setattr(mnist, "MAX_DOWNLOAD", 4096)
    monkeypatch.setenv("MNISTCLI_MIRRORS", url)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: larger than 4096 bytes, which no MNIST file is"):
        mnist.resolve_dir(None, splits=("test",))


def test_a_folder_name_too_long_for_the_system_is_one_line(runner: CliRunner) -> None:
    """Path.is_dir raises on ENAMETOOLONG in Python 3.11: the folder is named, with the problem."""
    name = "a" * 300
    result = runner.invoke(app, ["eval", "--data-dir", name])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{name} (--data-dir): cannot use it (File name too long)" in result.output.replace("\n", "")


def test_a_broken_link_or_a_folder_under_an_mnist_name_is_named(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "d", n_train=10, n_test=10)
    images = folder / "t10k-images-idx3-ubyte.gz"
    images.unlink()
    images.symlink_to(tmp_path / "gone.gz")
    assert mnist.resolve_dir(folder, splits=("test",)) == folder
    with pytest.raises(IdxError, match=r"t10k-images-idx3-ubyte\.gz: a broken symbolic link \(to .*gone\.gz"):
        mnist.load_split("test", folder)
    images.unlink()
    images.mkdir()
    with pytest.raises(IdxError, match=r"t10k-images-idx3-ubyte\.gz: a folder, not a file$"):
        mnist.load_split("test", folder)
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), dtype=np.uint8))  # a file beside it wins
    assert mnist.load_split("test", folder).images.shape == (10, 28, 28)


def test_tensors_with_no_images_make_no_batch_and_say_where_they_were_read(tmp_path: Path) -> None:
    import torch

    from mnistcli.api.common import load_tensors
    from mnistcli.data.tensors import TensorData

    empty = TensorData(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    assert list(empty.batches(4)) == [] and list(empty.batches(4, torch.Generator())) == []
    assert empty.num_batches(4, shuffle=True) == 0
    test = load_tensors("test", write_mnist(tmp_path), torch.device("cpu"))
    assert test.source == f"the test images in {tmp_path}" and len(test) == 100
