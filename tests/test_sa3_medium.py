"""Stable Audio 3 Medium's shape, built from the package's own classes (the wheel of the pinned
commit, ../shared/wheels), with random weights.

- At full size on the meta device: the DiT's 522 tensors and their shapes as the released
  checkpoint has them (eisbach.backends.sa3_medium names the sources), the parameter count,
  the DoRA target set and the trainable count, as recorded in docs/cloud.md.
- At the test size (eisbach.backends.sa3_medium.test_config: Medium's code path, narrow):
  the target set equals Stable Audio 3's own LoRA selection on the same model, and DoRA on
  the zero-initialised layers trains without NaN.

Skips only when ../shared is absent (no wheel to install).
"""

import copy
import re
from functools import partial

import numpy as np
import pytest
import torch
from test_backend_base import tone

from eisbach import adapters
from eisbach.backends import get_backend
from eisbach.backends import sa3_medium as medium

SR = medium.SAMPLE_RATE
CAPTIONS = ["a low organ drone", "a bright piano melody then strings", "static marimba"]

# Recorded at full size (meta device) by test_medium_at_full_size; docs/cloud.md quotes them.
MEDIUM_CONDITIONER_PARAMETERS = 768 + 256 * 768 + 768  # learned padding + seconds_total Linear
MEDIUM_TARGETS = 229  # 9 per block x 24, 12 around the blocks, the seconds_total embedder
MEDIUM_DORA_R16_TRAINABLE = 21_584_768


@pytest.fixture(scope="module")
def folders(sa3, tmp_path_factory):
    """Test-size models as local folders: trained-like weights, and as the package initialises
    them (zero-initialised convs and branches)."""
    root = tmp_path_factory.mktemp("sa3-medium")
    return {
        "trained": medium.save_test_model(root / "trained", CAPTIONS),
        "init": medium.save_test_model(root / "init", CAPTIONS, trained_like=False),
    }


def backend_for(folder):
    config = {
        "name": "stable-audio-3",
        "sample_rate": SR,
        "pretrained": str(folder),
        "device": "cpu",
    }
    return get_backend("stable-audio-3", config, None)


def sa3_lora_selection(wrapper) -> set[str]:
    """The modules Stable Audio 3's LoRA trainer adapts on wrapper (training/diffusion.py:
    add_lora on the DiT and on the conditioner, keyed by type), named as in the backend's
    ConditionedDiT."""
    from stable_audio_3.models.lora import LoRAParametrization, add_lora, get_lora_layers

    by_type = {
        torch.nn.Linear: {
            "weight": partial(LoRAParametrization.from_linear, rank=2, adapter_type="dora-rows")
        },
        torch.nn.Conv1d: {
            "weight": partial(LoRAParametrization.from_conv1d, rank=2, adapter_type="dora-rows")
        },
    }
    add_lora(wrapper.model, by_type)
    add_lora(wrapper.conditioner, by_type)
    names = {name for name, _ in get_lora_layers(wrapper)}
    return {n.removeprefix("conditioner.") for n in names}


def test_medium_at_full_size(folders):
    """Medium's DiT at full size on the meta device, built by the package's own factory."""
    import stable_audio_3.factory as factory

    text_dir = folders["trained"] / "t5gemma"
    build_dit = factory.DiTWrapper

    def on_meta(**kwargs):
        with torch.device("meta"):
            return build_dit(**kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(factory, "DiTWrapper", on_meta)
        wrapper = factory.create_diffusion_cond_from_config(medium.model_config(str(text_dir)))
    state = wrapper.model.state_dict()
    assert len(state) == medium.MEDIUM_DIT_TENSORS
    shapes = {k.removeprefix("model."): tuple(v.shape) for k, v in state.items()}
    assert shapes["to_cond_embed.0.weight"] == (1536, 768)
    assert shapes["transformer.global_cond_embedder.2.weight"] == (6 * 1536, 1536)  # adaLN
    assert shapes["transformer.layers.23.self_attn.to_qkv.weight"] == (5 * 1536, 1536)  # diff.
    assert shapes["transformer.layers.0.cross_attn.to_kv.weight"] == (3 * 1536, 1536)
    assert shapes["transformer.layers.0.to_local_embed.0.weight"] == (1536, 257)  # inpainting
    assert shapes["transformer.memory_tokens"] == (64, 1536)
    assert shapes["preprocess_conv.weight"] == (256, 256, 1)
    assert sum(p.numel() for p in wrapper.model.parameters()) == medium.MEDIUM_DIT_PARAMETERS

    # The backend (read from the test-size folder, whose conditioning is Medium's) wraps it.
    backend = backend_for(folders["trained"])
    dit = backend.conditioned_dit(wrapper)
    text = dit.conditioners["prompt"]
    assert isinstance(text.proj_out, torch.nn.Identity)  # 768 = cond_dim
    assert text.padding_embedding.shape == (768,)  # padding_mode learned
    conditioner_params = sum(p.numel() for p in dit.conditioners.parameters())
    assert conditioner_params == MEDIUM_CONDITIONER_PARAMETERS

    targets = backend.adapter_targets(dit)
    assert len(targets) == MEDIUM_TARGETS

    # The test model has Medium's module set and tensor names, block for block.
    def collapsed(names):
        return {re.sub(r"\.layers\.\d+\.", ".layers.N.", n) for n in names}

    small = backend.conditioned_dit(backend.model())
    assert collapsed(backend.adapter_targets(small)) == collapsed(targets)
    assert collapsed(small.state_dict()) == collapsed(dit.state_dict())
    assert isinstance(small.conditioners["prompt"].proj_out, torch.nn.Identity)
    assert not any("proj_out" in t and "conditioners" in t for t in targets)
    per_block = {t.split(".layers.0.")[1] for t in targets if ".layers.0." in t}
    assert per_block == {
        "self_attn.to_qkv",
        "self_attn.to_out",
        "cross_attn.to_q",
        "cross_attn.to_kv",
        "cross_attn.to_out",
        "ff.ff.0.proj",
        "ff.ff.2",
        "to_local_embed.0",
        "to_local_embed.2",
    }
    outside = sorted(t for t in targets if ".layers." not in t)
    assert outside == [
        "conditioners.seconds_total.embedder.embedding.1",
        *(
            f"model.model.{n}"
            for n in (
                "postprocess_conv",
                "preprocess_conv",
                "to_cond_embed.0",
                "to_cond_embed.2",
                "to_global_embed.0",
                "to_global_embed.2",
                "to_timestep_embed.0",
                "to_timestep_embed.2",
                "transformer.global_cond_embedder.0",
                "transformer.global_cond_embedder.2",
                "transformer.project_in",
                "transformer.project_out",
            )
        ),
    ]
    assert adapters.plan(dit, {"type": "dora"}, targets) == (targets, {})  # meta: no values

    model = adapters.attach(dit, {"type": "dora", "rank": 16, "alpha": 16}, targets, 0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    modules = dict(dit.named_modules())
    fan_sum = outputs = 0
    for name in targets:  # A [16, fan_in], B [fan_out, 16], one magnitude per output row
        weight = modules[name].base_layer.weight
        fan_out, fan_in = weight.shape[0], weight[0].numel()
        fan_sum, outputs = fan_sum + fan_in + fan_out, outputs + fan_out
    assert (fan_sum, outputs) == (medium.MEDIUM_DORA_FAN_SUM, medium.MEDIUM_DORA_OUTPUTS)
    assert trainable == medium.medium_dora_parameters(16) == MEDIUM_DORA_R16_TRAINABLE


def test_targets_are_stable_audio_3s_own_selection(folders):
    backend = backend_for(folders["trained"])
    dit = backend.conditioned_dit(backend.model())
    targets = backend.adapter_targets(dit)
    # upstream's selection, run on a second build of the same model config
    assert set(targets) == sa3_lora_selection(backend.build_model(backend.model_config))
    assert targets == sorted(targets)
    # a name list that reaches the Identity is refused by name, before peft sees it
    with pytest.raises(ValueError, match=r"conditioners.prompt.proj_out \(Identity\)"):
        adapters.target_modules(backend, {"target_modules": ["to_qkv", "proj_out"]}, dit)


def test_dora_on_zero_initialised_layers_trains_without_nan(folders, tmp_path):
    from peft import get_peft_model

    backend = backend_for(folders["init"])
    backend.prepare_base(tmp_path / "base")
    dit = backend.load_dit(tmp_path / "base")
    targets = adapters.target_modules(backend, {}, dit)
    zero = set(adapters.zero_row_weights(dit, targets))
    assert {"model.model.preprocess_conv", "model.model.postprocess_conv"} <= zero
    modules, left_out = adapters.plan(dit, {"type": "dora"}, targets)
    assert set(left_out) == zero and not zero & set(modules)
    assert adapters.plan(dit, {"type": "lora"}, targets) == (targets, {})  # LoRA adapts them

    latents = backend.encode_audio_batch([tone(1.0, SR, 220.0), tone(0.6, SR, 330.0)], SR)
    hidden, masks = backend.encode_text(CAPTIONS[:2])
    x0 = torch.zeros(2, medium.LATENT_CHANNELS, 11)
    mask = torch.zeros(2, 11, dtype=torch.bool)
    for b, z in enumerate(latents):
        x0[b, :, : z.shape[1]], mask[b, : z.shape[1]] = torch.from_numpy(z), True
    cond, cond_mask = torch.from_numpy(hidden), torch.from_numpy(masks)
    g = torch.Generator().manual_seed(0)
    t = backend.shift_timesteps(backend.sample_timesteps(2, g), mask.sum(-1))
    x_t, target = backend.noisy_input(x0, torch.randn(x0.shape, generator=g), t)

    def loss_of(model):
        pred = backend.dit_forward(model, x_t, t, cond, cond_mask, mask=mask)
        return (((pred - target) ** 2) * mask[:, None]).sum() / mask.sum()

    # peft's DoRA on them: NaN, which is why plan leaves them out
    naive = get_peft_model(
        copy.deepcopy(dit), adapters.lora_config({"type": "dora", "rank": 4, "alpha": 4}, targets)
    )
    assert not torch.isfinite(loss_of(naive))

    model = adapters.attach(dit, {"type": "dora", "rank": 4, "alpha": 4}, modules, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(3):
        loss = loss_of(model)
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in params)


def test_stable_audio_3s_own_dora_leaves_a_zero_layer_at_zero(sa3):
    """Why leaving zero layers out of DoRA matches upstream: its DoRA (norm + 1e-12) on a zero
    weight starts with magnitude 0, so the weight stays 0 and no gradient reaches it."""
    import torch.nn.utils.parametrize as parametrize
    from stable_audio_3.models.lora import LoRAParametrization

    conv = torch.nn.Conv1d(8, 8, 1, bias=False)
    torch.nn.init.zeros_(conv.weight)
    param = LoRAParametrization.from_conv1d(conv, rank=2, lora_alpha=2, adapter_type="dora-rows")
    parametrize.register_parametrization(conv, "weight", param, unsafe=True)
    trainable = [param.lora_A, param.lora_B, param.magnitude]
    optimizer = torch.optim.AdamW(trainable, lr=0.1, weight_decay=0.01)
    x, direction = torch.randn(2, 8, 5), torch.randn(2, 8, 5)
    for _ in range(3):
        optimizer.zero_grad()
        (conv(x) * direction).sum().backward()  # a loss whose gradient in the output is not 0
        assert all(not p.grad.any() for p in (param.lora_B, param.magnitude))
        optimizer.step()
    assert not conv.weight.any()
    assert np.isfinite(conv.weight.detach().numpy()).all()
