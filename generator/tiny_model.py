"""A tiny Stable Diffusion of the real diffusers classes with random weights, saved and loaded
like a real model, so the whole serving stack runs on a CPU with no model hub."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

# Text encoder window: the same 77 tokens as every Stable Diffusion 1.x/2.x model.
TOKEN_WINDOW = 77
# Raised when the architecture changes, so that ``--if-missing`` rebuilds an older tiny model.
TINY_MODEL_VERSION = 2
VERSION_FILE = "tiny_model_version"


def byte_level_vocabulary() -> dict[str, int]:
    """256 byte characters, the same with ``</w>``, then the two special tokens (514 in all)."""
    # GPT-2/CLIP's reversible byte -> printable-character table.
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    vocabulary = {character: index for index, character in enumerate(characters)}
    vocabulary.update({f"{character}</w>": 256 + index for index, character in enumerate(characters)})
    vocabulary["<|startoftext|>"] = 512
    vocabulary["<|endoftext|>"] = 513
    return vocabulary


def build_tokenizer(workdir: Path):  # type: ignore[no-untyped-def]
    """Writes vocab.json and merges.txt, then loads the folder: transformers 5.x silently ignores
    files given to the ``CLIPTokenizer`` constructor (every prompt becomes ``<|endoftext|>``)."""
    from transformers import CLIPTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "vocab.json").write_text(json.dumps(byte_level_vocabulary()), encoding="utf-8")
    (workdir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (workdir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": TOKEN_WINDOW,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "tokenizer_class": "CLIPTokenizer",
            }
        ),
        encoding="utf-8",
    )
    return CLIPTokenizer.from_pretrained(str(workdir))


def build_tiny_pipeline(*, seed: int = 0):  # type: ignore[no-untyped-def]
    """Returns an in-memory tiny ``StableDiffusionPipeline`` with seeded random weights."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer = build_tokenizer(Path(tokenizer_dir))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKEN_WINDOW,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    # Attention only in the lowest-resolution block (a 16x16 latent at 512 px): attention at
    # higher latent resolutions dominates CPU time without making noise any prettier.
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
    )
    # Four blocks downsample 8x like every real Stable Diffusion VAE: a 512 px image is a 64 px
    # latent, so the UNet's work per step is real SD's shape, not the 16x larger half-size latent.
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        # Self-attention over a 64x64 latent (4096 tokens) would cost more than the whole UNet.
        mid_block_add_attention=False,
        sample_size=512,
    )
    return assemble_pipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def assemble_pipeline(*, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any) -> Any:
    """A ``StableDiffusionPipeline`` of these parts with Stable Diffusion 1.x's own scheduler."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_model(destination: Path, *, seed: int = 0) -> Path:
    """Saves the tiny pipeline to ``destination`` as safetensors and returns the folder."""
    pipeline = build_tiny_pipeline(seed=seed)
    destination.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(str(destination), safe_serialization=True)
    (destination / VERSION_FILE).write_text(f"{TINY_MODEL_VERSION}\n", encoding="utf-8")
    return destination


def is_current_tiny_model(destination: Path) -> bool:
    """Whether ``destination`` holds a model that ``--if-missing`` keeps: any model but an older
    tiny one. The first tiny model wrote no version; its UNet's channels tell it apart."""
    if not (destination / "model_index.json").exists():
        return False
    version_file = destination / VERSION_FILE
    if version_file.exists():
        return version_file.read_text(encoding="utf-8").strip() == str(TINY_MODEL_VERSION)
    unet_config = destination / "unet" / "config.json"
    return not (unet_config.exists() and json.loads(unet_config.read_text())["block_out_channels"] == [8, 16])


def build_tiny_taesd(destination: Path, *, seed: int = 0) -> Path:
    """Saves a tiny ``AutoencoderTiny`` (TAESD's class) with seeded random weights, for the
    preview decoder's tests: it decodes the tiny model's 4-channel latents at twice their size."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    destination.mkdir(parents=True, exist_ok=True)
    taesd.save_pretrained(str(destination), safe_serialization=True)  # type: ignore[attr-defined]
    return destination
