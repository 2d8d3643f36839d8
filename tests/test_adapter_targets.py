"""Adapter targets are resolved against the module tree, and the saved adapter is deterministic."""

import json

import pytest
import torch

from eisbach import adapters


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.to_qkv = torch.nn.Linear(4, 12)
        self.proj_out = torch.nn.Identity()
        self.conv = torch.nn.Conv1d(4, 4, 1, bias=False)
        self.norm = torch.nn.LayerNorm(4)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer.conv(layer.to_qkv(x.transpose(1, 2))[..., :4].transpose(1, 2))
        return self.head(x.transpose(1, 2))


def test_every_linear_and_conv1d_by_full_name():
    assert adapters.adaptable_modules(Net()) == [
        "head",
        "layers.0.conv",
        "layers.0.to_qkv",
        "layers.1.conv",
        "layers.1.to_qkv",
    ]


def test_names_resolve_to_full_names_and_bad_ones_are_refused():
    net = Net()
    assert adapters.resolve_targets(net, ["to_qkv", "head"], "x") == [
        "head",
        "layers.0.to_qkv",
        "layers.1.to_qkv",
    ]
    with pytest.raises(ValueError, match=r"'proj_out' reaches layers.0.proj_out \(Identity\)"):
        adapters.resolve_targets(net, ["to_qkv", "proj_out"], "train.target_modules")
    with pytest.raises(ValueError, match=r"train.target_modules: 'nope' matches no module"):
        adapters.resolve_targets(net, ["nope"], "train.target_modules")
    with pytest.raises(ValueError, match=r"'norm' reaches layers.0.norm \(LayerNorm\)"):
        adapters.resolve_targets(net, ["norm"], "train.target_modules")


def test_dora_leaves_out_zero_rows_and_lora_keeps_them():
    net = Net()
    with torch.no_grad():
        net.layers[0].conv.weight.zero_()
        net.layers[1].to_qkv.weight[3].zero_()  # one dead output row is enough for NaN
    targets = adapters.adaptable_modules(net)
    modules, left_out = adapters.plan(net, {"type": "dora"}, targets)
    assert sorted(left_out) == ["layers.0.conv", "layers.1.to_qkv"]
    assert modules == ["head", "layers.0.to_qkv", "layers.1.conv"]
    assert adapters.plan(net, {"type": "lora"}, targets) == (targets, {})


def test_saved_adapter_config_lists_targets_sorted(tmp_path):
    targets = adapters.adaptable_modules(Net())
    model = adapters.attach(Net(), {"type": "lora", "rank": 2, "alpha": 2}, targets, 0)
    adapters.save(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])
    assert set(config["target_modules"]) == set(targets)
    first = (tmp_path / "adapter_config.json").read_bytes()
    adapters.save(model, tmp_path)
    assert (tmp_path / "adapter_config.json").read_bytes() == first
