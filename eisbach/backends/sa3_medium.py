"""Stable Audio 3 Medium's shape, as a model_config.json for the ``stable_audio_3`` package.

The hub's model_config.json of stabilityai/stable-audio-3-medium(-base) is gated and not
readable from the machines this project is tested on, so the numbers below come from public
code that was written against the released checkpoint (read for reference, nothing copied):

- huggingface/diffusers, tests/models/transformers/test_models_transformer_stable_audio3.py
  (commit 8f1a330a): the DiT's config "from stabilityai/stable-audio-3-medium
  model_config.json" (io_channels 256, embed_dim 1536, depth 24, num_heads 24,
  cond_token_dim 768, global_cond_dim 768, local_add_cond_dim 257, timestep_features_dim
  256, ff_mult 4, 64 memory tokens, differential attention) and the name and shape of every
  DiT tensor "derived from the real checkpoint tensor index (997 tensors total; 522 in the
  DiT)", among them the learned text-padding embedding
  ``conditioner.conditioners.prompt.padding_embedding`` [768] and no ``timestep_features``
  weight (so ``expo`` Fourier features), ``pre_norm.gamma`` only (RMS norm), q/k norms of
  the head width (``qk_norm: rms``), ``to_cond_embed`` [1536, 768] without bias (cond tokens
  projected), ``global_cond_embedder`` [9216, 1536] (adaLN), ``to_local_embed`` [1536, 257]
  (the inpainting mask and masked input as local add-cond), ``proj_in`` [1536, 256] (no
  input concat).
- An MLX port's weight converter (a pack config for "stable-audio-3-medium"): depth 24,
  head_dim 64, 64 memory tokens, prompt_max_len 256, seconds_min 1 and seconds_max 384,
  44.1 kHz with 4096 samples per latent (SAME-L).
- The Stable Audio 3 package itself (commit 636f906f): the T5Gemma conditioner's width (768,
  google/t5gemma-b-b-ul2), so ``proj_out`` is an Identity when cond_dim is 768.

Assumed, not sourced: the conditioning ids (``prompt`` and ``seconds_total``, with
seconds_total both a cross-attention token and the global condition, as the package's
generate() passes them), ``rectified_flow`` for the base model, and no distribution-shift
options (the package's default sampling shift). ``test_config`` keeps every one of these and
shrinks only what changes no code path: the DiT's width (head width 64 kept), depth and
memory-token count, the T5Gemma encoder behind its 768-wide output, and the SAME autoencoder
(whose real shape is not public here; it is stereo and 4096x down, with Medium's 256 latent
channels).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

SAMPLE_RATE = 44100
LATENT_CHANNELS = 256  # SAME-L
DOWNSAMPLING = 4096  # SAME-L
TEXT_WIDTH = 768  # T5Gemma b-b-ul2, = cond_dim
TEXT_MAX_LENGTH = 256

MEDIUM_DIT = {
    "io_channels": LATENT_CHANNELS,
    "patch_size": 1,
    "embed_dim": 1536,
    "depth": 24,
    "num_heads": 24,
    "cond_token_dim": TEXT_WIDTH,
    "project_cond_tokens": True,
    "global_cond_dim": TEXT_WIDTH,
    "project_global_cond": True,
    "global_cond_type": "adaLN",
    "timestep_features_type": "expo",
    "timestep_features_dim": 256,
    "transformer_type": "continuous_transformer",
    "local_add_cond_dim": LATENT_CHANNELS + 1,
    "num_memory_tokens": 64,
    "norm_type": "rms_norm",
    "attn_kwargs": {"qk_norm": "rms", "differential": True},
    "ff_kwargs": {"mult": 4.0},
}
# The test model: Medium's code path at a CPU-sized width (head width kept at 64).
TEST_DIT = MEDIUM_DIT | {"embed_dim": 128, "depth": 2, "num_heads": 2, "num_memory_tokens": 4}

# Counts read from the diffusers port's test of the released checkpoint (see the docstring).
MEDIUM_DIT_TENSORS = 522
# Medium at full size, counted on the package's own classes (meta device) and rechecked by
# tests/test_sa3_medium.py. The cost and memory models (eisbach.cloud, eisbach.gpu_memory) read
# these, since only the paper route installs stable_audio_3.
MEDIUM_DIT_PARAMETERS = 1_453_170_176
# DoRA over Medium's 229 targets has rank * FAN_SUM + OUTPUTS trainable parameters: A [r, fan_in]
# and B [fan_out, r] per target, and one magnitude per output row.
MEDIUM_DORA_FAN_SUM = 1_294_616
MEDIUM_DORA_OUTPUTS = 870_912


def medium_dora_parameters(rank: int) -> int:
    """Trainable parameters of a DoRA adapter of ``rank`` on Medium's targets."""
    return rank * MEDIUM_DORA_FAN_SUM + MEDIUM_DORA_OUTPUTS


def same_config(latent_dim: int = LATENT_CHANNELS) -> dict:
    """A small SAME autoencoder of the package: patched stereo, transformer resampling blocks,
    4096x down (patch 64 x strides 4 x 16)."""
    patch = 64
    block = {"channels": 16, "c_mults": [1, 2], "strides": [4, 16], "transformer_depths": [1, 1]}
    return {
        "encoder": {
            "type": "same",
            "config": {**block, "in_channels": 2 * patch, "latent_dim": latent_dim},
        },
        "decoder": {
            "type": "same",
            "config": {**block, "out_channels": 2 * patch, "latent_dim": latent_dim},
        },
        "latent_dim": latent_dim,
        "downsampling_ratio": DOWNSAMPLING,
        "io_channels": 2,
        "pretransform": {"config": {"channels": 2, "patch_size": patch}},
        "bottleneck": {"config": {"dim": latent_dim}},
    }


def model_config(
    text_encoder: str, dit: dict | None = None, max_length: int = TEXT_MAX_LENGTH
) -> dict:
    """A model_config.json of Medium's layout around the DiT config ``dit`` (MEDIUM_DIT)."""
    dit = copy.deepcopy(MEDIUM_DIT if dit is None else dit)
    return {
        "model_type": "diffusion_cond",
        "sample_rate": SAMPLE_RATE,
        "sample_size": 30 * SAMPLE_RATE,
        "model": {
            "io_channels": LATENT_CHANNELS,
            "pretransform": {"type": "autoencoder", "config": same_config()},
            "conditioning": {
                "configs": [
                    {
                        "id": "prompt",
                        "type": "t5gemma",
                        "config": {
                            "model_path": text_encoder,
                            "max_length": max_length,
                            "padding_mode": "learned",
                        },
                    },
                    {
                        "id": "seconds_total",
                        "type": "number",
                        "config": {"min_val": 1, "max_val": 384, "fourier_features_type": "expo"},
                    },
                ],
                "cond_dim": TEXT_WIDTH,
            },
            "diffusion": {
                "type": "dit",
                "diffusion_objective": "rectified_flow",
                "cross_attention_cond_ids": ["prompt", "seconds_total"],
                "global_cond_ids": ["seconds_total"],
                "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
                "mask_padding_attention": True,
                "use_effective_length_for_schedule": True,
                "config": dit,
            },
        },
    }


def test_config(text_encoder: str, max_length: int = 64) -> dict:
    return model_config(text_encoder, TEST_DIT, max_length)


def word_tokenizer(folder: Path, captions: list[str]):
    """A word-level tokenizer over the captions' words (lower-cased; punctuation split off),
    saved in folder for AutoTokenizer; words it never saw map to <unk>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Lowercase()
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()]
    )
    words = sorted(
        {
            w
            for c in captions
            for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(c))
        }
    )
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(
        models.WordLevel(vocab={t: i for i, t in enumerate(specials + words)}, unk_token="<unk>")
    )
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    fast.save_pretrained(folder)
    return fast


def save_text_encoder(folder: Path, captions: list[str], seed: int = 0) -> Path:
    """A tiny random T5Gemma encoder with T5Gemma's 768-wide output and a word-level
    tokenizer over the captions, saved where the conditioner's ``model_path`` can load them."""
    import torch
    from transformers import T5GemmaConfig, T5GemmaEncoderModel

    folder = Path(folder)
    fast = word_tokenizer(folder, captions)
    module = {
        "vocab_size": len(fast),
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "query_pre_attn_scalar": 16,
        "max_position_embeddings": 512,
        "sliding_window": 64,
    }
    config = T5GemmaConfig(encoder=module, decoder=module, vocab_size=len(fast))
    config.is_encoder_decoder = False
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        T5GemmaEncoderModel(config).save_pretrained(folder)
    return folder


def save_test_model(
    folder: Path, captions: list[str], seed: int = 1, trained_like: bool = True
) -> Path:
    """A local model folder (model_config.json + model.safetensors, and its T5Gemma under
    ``t5gemma/``) of ``test_config`` with random weights, initialised as the package
    initialises them. ``trained_like``: the weights the package zero-initialises (the
    pre/postprocess convs, attention and feed-forward outputs, the local-cond output) get
    small random values instead, as a trained checkpoint has them; otherwise they stay 0."""
    import torch
    from safetensors.torch import save_file

    from eisbach.atomic import write_json
    from eisbach.backends.base import relative_paths
    from eisbach.backends.stable_audio_3 import import_stable_audio_3, preserved_dynamo_config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text_dir = save_text_encoder(folder / "t5gemma", captions)
    import_stable_audio_3()
    from stable_audio_3.factory import create_diffusion_cond_from_config

    config = test_config(str(text_dir.resolve()))
    with torch.random.fork_rng(), preserved_dynamo_config():
        torch.manual_seed(seed)
        model = create_diffusion_cond_from_config(config)
        if trained_like:
            with torch.no_grad():
                for p in model.parameters():
                    if p.is_floating_point() and p.numel() > 1 and not p.any():
                        p.copy_(0.02 * torch.randn(p.shape))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    tmp = folder / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(folder / "model.safetensors")
    write_json(folder / "model_config.json", relative_paths(config, folder))
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a Stable Audio 3 Medium-shaped test model (random weights) as a "
        "local model folder for backend.pretrained"
    )
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--captions-from", type=Path, help="a CSV with a caption column (MusicCaps)"
    )
    args = parser.parse_args(argv)
    captions = [
        "Little Piglet Prince",
        "Raccoon Mathematician",
        "Professor Pallas Cat",
        "Seal Lawyer",
    ]
    if args.captions_from:
        import csv

        with open(args.captions_from, newline="") as f:
            captions += [row["caption"] for row in csv.DictReader(f)]
    save_test_model(args.out, captions)
    print(json.dumps({"model": str(args.out), "dit": TEST_DIT}), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
