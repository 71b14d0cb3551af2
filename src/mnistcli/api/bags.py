"""`mnist predict --bag`: the user's images grouped into bags, each answered by a multiple-instance checkpoint.

Each folder given is one bag: its image files (the extensions `mnist predict` reads), sorted by name, hidden
files skipped, sub-folders not read. The loose image files given together form one more bag, placed where the
first of them was given. Images go through the same preprocessing as `mnist predict`'s (data/images.py), so
photos and drawings work. A bag's answer is about all of its images, so a bag with an image that cannot be
read is not answered: it becomes one `Failure` per unreadable image (an empty folder: one naming the folder),
and the other bags still go through.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnistcli import store
from mnistcli.api.common import read_images, unreadable
from mnistcli.data.images import IMAGE_EXTENSIONS
from mnistcli.families.base import Family
from mnistcli.reports import BagPrediction, Failure


@dataclass
class BagFiles:
    """One bag as given: its folder (None for the loose files), its image files, or why it cannot be read."""

    bag: str | None
    paths: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files in the folder that are not images
    error: str | None = None  # the folder cannot be a bag (unreadable, no images): a one-line reason


def group_bags(items: Sequence[str]) -> list[BagFiles]:
    """Folders and files, as given -> bags, in the order given: a bag per folder, one for all loose files."""
    bags: list[BagFiles] = []
    loose: BagFiles | None = None
    for item in items:
        if os.path.isdir(item):
            bags.append(folder_bag(item))
            continue
        if loose is None:
            loose = BagFiles(None)
            bags.append(loose)
        loose.paths.append(item)  # a missing or unreadable file is reported when it is read
    return bags


def folder_bag(folder: str) -> BagFiles:
    """The bag of one folder: its image files sorted by name (hidden ones and sub-folders left out)."""
    name = str(Path(folder))
    try:
        entries = sorted((p for p in Path(folder).iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    except OSError as e:
        return BagFiles(name, error=f"{name}: cannot read the folder ({e.strerror or e})")
    files = [p for p in entries if p.is_file()]
    images = [str(p) for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    ignored = [str(p) for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if images:
        return BagFiles(name, images, ignored)
    if any(p.is_dir() for p in entries):
        why = f"sub-folders are not read; give each one as a bag, e.g. {os.path.join(name, '*', '')}"
    elif ignored:
        why = f"{len(ignored)} file{'s' if len(ignored) > 1 else ''}, none of them an image ({Path(ignored[0]).name}"
        why += ", ...)" if len(ignored) > 1 else ")"
    else:
        why = "the folder is empty"
    return BagFiles(name, [], ignored, f"{name}: no images to make a bag of ({why})")


def predict_bags(
    items: Sequence[str], run: store.Run, model: torch.nn.Module, family: Family
) -> list[BagPrediction | Failure]:
    """Each bag's answer (`family.predict_bag`), in the order given; a `Failure` for each image or folder that
    kept its bag from being answered."""
    results: list[BagPrediction | Failure] = []
    for bag in group_bags(items):
        if bag.error is not None:
            results.append(Failure(bag.bag or "", bag.error))
            continue
        loaded, images = read_images(bag.paths)
        failed = unreadable(loaded)
        if failed:
            which = f"bag {bag.bag}" if bag.bag is not None else "the bag of loose files"
            results += [Failure(f.path, f"{f.error}; {which} is not predicted") for f in failed]
            continue
        answer: BagPrediction = family.predict_bag(run, model, bag.bag, bag.paths, images)
        answer.ignored = bag.ignored
        results.append(answer)
    return results
