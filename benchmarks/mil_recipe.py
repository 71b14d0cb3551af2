"""How the MIL recipe was chosen: validation AUC on bags drawn from held-out training images, never the test set.

    python benchmarks/mil_recipe.py --bags 50 --epochs 15 --aug 1 --remix 3 --lr 2.5e-4 --cosine --seed 0
    python benchmarks/mil_recipe.py --bags 50 --epochs 15 --aug 1 --remix 3 --lr 2.5e-4 --cosine --encoder RUN_FOLDER

Training bags come from training images 0-49,999; 500 validation bags (seed 1) from images
50,000-59,999. Prints one JSON line: the options, the validation AUC at five points of the run,
each epoch's mean training loss (and, with --test, the test AUC on 1,000 test bags, for a record
only). `--bag-seed` draws the training bags apart from the rest of the run's randomness (the start
and the order), which `benchmarks/mil_attempts.py` uses to train several starts on one draw. `--encoder`
takes a simclr run folder (or a stopped one: its resume snapshot). `--ssl-epochs E` first trains the
instance network as `mnist train mil --pretrain-epochs E` does (SimCLR on the training bags' own images). This is the development loop,
kept so the figures in docs/models.md can be re-measured; `mnist train mil` is the product.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mnistcli.data.augment import random_affine
from mnistcli.data.bags import make_bags, pad
from mnistcli.data.mnist import load_split
from mnistcli.families.contrastive import pretrain
from mnistcli.models.mil import AttentionMIL
from mnistcli.protocols.ranking import roc_auc


def encoder_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The `encoder.*` weights of a simclr run folder (its model, or its resume snapshot if it is unfinished)."""
    from safetensors.torch import load_file

    from mnistcli.store import snapshot

    if (folder / "model.safetensors").exists():
        state = load_file(str(folder / "model.safetensors"))
    else:
        state = snapshot.read(folder)[0]["model"]
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--bags", type=int, default=100)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--aug", type=float, default=0.0, help="augmentation strength (1: the recipe's random affine)")
    p.add_argument("--remix", type=int, default=0)
    p.add_argument("--cosine", action="store_true")
    p.add_argument("--pool", default="attention")
    p.add_argument("--maxloss", type=float, default=0.0, help="weight of the loss on each bag's top image")
    p.add_argument("--bag-seed", type=int, help="draw the training bags with this seed (default: --seed)")
    p.add_argument("--negloss", type=float, default=0.0, help="weight of a loss on every image of a negative bag")
    p.add_argument("--encoder", type=Path)
    p.add_argument("--frozen", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on each image's features while training")
    p.add_argument("--save-scores", type=Path, help="write the validation bags' final logits here (.npy)")
    p.add_argument("--ssl-epochs", type=int, default=0, help="SimCLR on the training bags' own images first (epochs)")
    a = p.parse_args()
    torch.set_num_threads(1)
    folder = Path(a.data_dir)
    train, test = load_split("train", folder), load_split("test", folder)
    images, labels = torch.from_numpy(train.images.copy()), torch.from_numpy(train.labels.copy()).long()
    g = torch.Generator().manual_seed(a.seed)
    torch.manual_seed(a.seed)
    pool, held = torch.arange(50000), torch.arange(50000, 60000)
    bag_generator = g if a.bag_seed is None else torch.Generator().manual_seed(a.bag_seed)
    bags, y = make_bags(labels[pool], a.bags, 9, 10.0, 2.0, bag_generator)
    bags = [pool[b] for b in bags]
    val_bags, val_y = make_bags(labels[held], 500, 9, 10.0, 2.0, torch.Generator().manual_seed(1))
    val_bags = [held[b] for b in val_bags]
    if a.encoder:
        model = AttentionMIL(a.pool, instance="simclr", frozen=a.frozen)
        model.body.load_state_dict(encoder_weights(a.encoder))
    else:
        model = AttentionMIL(a.pool)
    if a.dropout:
        features, drop = model.features, torch.nn.Dropout(a.dropout)

        def dropped(x: torch.Tensor) -> torch.Tensor:
            h = features(x)
            return drop(h) if model.training else h

        model.features = dropped  # type: ignore[method-assign]
    if a.ssl_epochs:  # as `mnist train mil --pretrain-epochs` does (families/bags.py `BagsFamily.pretrain`)
        own = torch.unique(torch.cat(bags))
        pretrain(model.features, model.body.parameters(), model.feature_dim, images[own], g, a.ssl_epochs)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, weight_decay=a.wd)
    negatives = torch.cat([b for b, label in zip(bags, y.tolist(), strict=True) if label == 0])

    def auc(imgs: torch.Tensor, bag_list: list[torch.Tensor], bag_labels: torch.Tensor) -> float:
        model.eval()
        with torch.inference_mode():
            out = [model(*pad(imgs, bag_list[s : s + 64]))[0] for s in range(0, len(bag_list), 64)]
        model.train()
        if a.save_scores is not None and bag_list is val_bags:
            np.save(a.save_scores, torch.cat(out).numpy())  # the last call wins: the final epoch's
        return round(roc_auc(torch.cat(out).numpy(), bag_labels.numpy()) or 0.0, 4)

    t0, history, sched, losses = time.time(), [], None, []
    for epoch in range(a.epochs):
        order = torch.randperm(len(bags), generator=g)
        epoch_bags, epoch_y = [bags[i] for i in order], y[order]
        extra, extra_y = [], []
        for _ in range(a.remix):  # the family's remix (families/bags.py), drawn the same way
            for i in range(len(bags)):
                n = max(2, round(float(torch.randn(1, generator=g)) * 2 + 10))
                if y[i] == 0:
                    extra.append(negatives[torch.randint(len(negatives), (n,), generator=g)])
                else:
                    add = negatives[torch.randint(len(negatives), (max(0, n - len(bags[i])) + 1,), generator=g)]
                    both = torch.cat([bags[i], add])
                    extra.append(both[torch.randperm(len(both), generator=g)])
                extra_y.append(int(y[i]))
        if extra:
            epoch_bags, epoch_y = epoch_bags + extra, torch.cat([epoch_y, torch.tensor(extra_y)])
            o = torch.randperm(len(epoch_bags), generator=g)
            epoch_bags, epoch_y = [epoch_bags[i] for i in o], epoch_y[o]
        if a.cosine and sched is None:
            steps = a.epochs * -(-len(epoch_bags) // a.batch)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        total = 0.0
        for s in range(0, len(epoch_bags), a.batch):
            x, m = pad(images, epoch_bags[s : s + a.batch])
            target = epoch_y[s : s + a.batch].float()
            if a.aug:
                x = x.clone()
                x[m] = random_affine(x[m], g, degrees=10 * a.aug, scale=0.1 * a.aug, shift=2 * a.aug)
            logit, _, instance = model.pool(x, m)
            loss = F.binary_cross_entropy_with_logits(logit, target)
            if a.maxloss:
                loss = loss + a.maxloss * F.binary_cross_entropy_with_logits(instance.amax(1), target)
            if a.negloss:  # every image of a negative bag is known not to be a target
                negative = m & (target == 0)[:, None]
                if negative.any():
                    zeros = torch.zeros(int(negative.sum()))
                    loss = loss + a.negloss * F.binary_cross_entropy_with_logits(instance[negative], zeros)
            total += loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
        losses.append(round(total / -(-len(epoch_bags) // a.batch), 3))  # the epoch's mean training loss
        if (epoch + 1) % max(1, a.epochs // 5) == 0 or epoch == a.epochs - 1:
            history.append((epoch + 1, auc(images, val_bags, val_y)))
    result = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "val_auc": history,
        "train_loss": losses,
    }
    result["seconds"] = round(time.time() - t0, 1)
    if a.test:
        test_labels = torch.from_numpy(test.labels.copy()).long()
        test_bags, test_y = make_bags(test_labels, 1000, 9, 10.0, 2.0, torch.Generator().manual_seed(a.seed))
        result["test_auc"] = auc(torch.from_numpy(test.images.copy()), test_bags, test_y)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
