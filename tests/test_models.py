"""Every registered model, tested by being registered: shapes, a training step, a save/load round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from mnistcli import registry, store
from mnistcli.config import split
from mnistcli.data.tensors import TensorData
from mnistcli.errors import ModelError
from mnistcli.families import get_family
from mnistcli.store.checkpoint import ModelSpec
from tests.helpers import make_digits, train_in_memory

MODELS = [e.name for e in registry.list_models()]


def test_the_required_families_are_registered() -> None:
    assert {"linear", "mlp", "mlp-deep", "lenet", "cnn"} <= set(MODELS)
    assert [e.name for e in registry.list_models("mlp*")] == ["mlp", "mlp-deep"]


def test_duplicate_names_are_a_hard_error() -> None:
    with pytest.raises(ModelError, match="already registered"):
        registry.register_model("cnn", family="classify", description="again")(lambda: None)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="did you mean mlp"):
        registry.get_entry("mpl")


def test_recipes_are_valid_configs_of_registered_families() -> None:
    for entry in registry.list_models():
        family = get_family(entry.family)
        split(family.Params, entry.recipe, {}, family.name)


def outputs(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output on `x` (an adder also takes a number per image; its two outputs side by side; a MIL model
    takes each image as a bag of one: its bag logit and attention weight side by side)."""
    family = registry.get_entry(name).family
    if family == "adder":
        return torch.cat(model(x, torch.arange(len(x)) % 10), dim=1)
    if family == "bags":
        logits, weights = model(x.unsqueeze(1), torch.ones(len(x), 1, dtype=torch.bool))
        return torch.stack([logits, weights[:, 0]], dim=1)
    return model(x)


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes(name: str) -> None:
    model = registry.create_model(name).eval()
    x = torch.rand(3, 1, 28, 28)
    out = outputs(name, model, x)
    family = registry.get_entry(name).family
    assert out.shape == {"classify": (3, 10), "adder": (3, 10 + 19)}.get(family, (3, out.shape[1]))
    assert model.features(x).shape == (3, model.feature_dim)


@pytest.mark.parametrize("name", MODELS)
def test_one_epoch_of_training_lowers_the_loss(name: str) -> None:
    images, labels = make_digits(120, seed=5)
    data = TensorData.from_numpy(images, labels, torch.device("cpu"))
    model = registry.create_model(name)
    torch.manual_seed(0)
    before = copy.deepcopy(model)
    options = {"epochs": 3, "batch_size": 40, "augment": False}
    if registry.get_entry(name).family == "triplet":
        options["ssl_weight"] = 0.0  # the triplet loss alone: that is the loss measured here
    family, position = train_in_memory(model, name, data, options)
    assert len(position.history) == 3
    assert family.validate(model, data)["loss"] < family.validate(before, data)["loss"]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_is_exact(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = registry.create_model(name).eval()
    checkpoint = store.Checkpoint(ModelSpec(name, registry.recorded_args(name, {}), registry.get_entry(name).family))
    run = store.save(model, checkpoint, store.begin(name, root=tmp_path))
    loaded = store.load(run)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(outputs(name, loaded, x), outputs(name, model, x), rtol=0, atol=0)
