"""Tiny models of every family the engine runs (SD 1.5, SDXL, SD 3.5, FLUX.1): the real diffusers
and transformers classes with random weights and tokenizers built in code, saved and loaded like
a real model, so the whole serving stack runs on a CPU with no model hub. The shapes follow
diffusers' own pipeline tests, with an 8x VAE so a latent is a real model's size."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

# CLIP's window: the same 77 tokens as every Stable Diffusion and FLUX.1 model.
TOKEN_WINDOW = 77
# T5's window as SD 3.5 reads it by default (FLUX.1-dev reads 512).
T5_TOKEN_WINDOW = 256
FAMILIES = ("sd15", "sdxl", "sd3", "flux")
# Every tiny text encoder is this wide; SDXL and SD3 concatenate two of them.
TEXT_WIDTH = 32
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


def build_t5_tokenizer(workdir: Path):  # type: ignore[no-untyped-def]
    """A T5 tokenizer over characters: a ``tokenizers`` Unigram model of T5's special tokens, its
    word-start mark "▁" and the 256 byte-to-unicode characters (260 in all; any other character
    is ``<unk>``), saved and reloaded through ``from_pretrained``. (transformers 5's ``T5Tokenizer``
    is the ``tokenizers``-backed one that ``T5TokenizerFast`` names too.)"""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<pad>", "</s>", "<unk>", "▁"]
    pieces = [(token, 0.0) for token in specials] + [
        (character, -1.0) for character in bytes_to_unicode().values()
    ]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    wrapped = T5Tokenizer(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        additional_special_tokens=[],
        model_max_length=T5_TOKEN_WINDOW,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(workdir))
    return T5Tokenizer.from_pretrained(str(workdir))


def clip_text_encoder(tokenizer: Any, *, with_projection: bool = False) -> Any:
    """A two-layer CLIP text encoder over ``tokenizer``; SDXL's second and SD3's two have a projection."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TOKEN_WINDOW,
        projection_dim=TEXT_WIDTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def t5_text_encoder(tokenizer: Any) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_WIDTH,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def tiny_vae(*, latent_channels: int) -> Any:
    """Four blocks downsample 8x like every real VAE: a 512 px image is a 64 px latent, so the
    denoiser's work per step is a real model's shape. SD3 and FLUX have 16 latent channels."""
    from diffusers import AutoencoderKL

    flow_family = latent_channels == 16
    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        # Self-attention over a 64x64 latent (4096 tokens) would cost more than the whole denoiser.
        mid_block_add_attention=False,
        sample_size=512,
        # SD3's and FLUX's VAEs have no quant convolutions and shift their latents.
        use_quant_conv=not flow_family,
        use_post_quant_conv=not flow_family,
        **({"shift_factor": 0.0609, "scaling_factor": 1.5035} if flow_family else {}),
    )


def build_tiny_pipeline(*, family: str = "sd15", seed: int = 0):  # type: ignore[no-untyped-def]
    """Returns an in-memory tiny pipeline of ``family`` with seeded random weights."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        tokenizer = build_tokenizer(Path(tokenizer_dir) / "clip")
        t5_tokenizer = build_t5_tokenizer(Path(tokenizer_dir) / "t5") if family in ("sd3", "flux") else None
    builders = {"sd15": _sd15, "sdxl": _sdxl, "sd3": _sd3, "flux": _flux}
    return builders[family](tokenizer, t5_tokenizer)


def tiny_unet(**family_specific: Any) -> Any:
    """The tiny UNet of SD 1.5 and SDXL; ``family_specific`` adds the cross-attention width and
    SDXL's conditioning."""
    from diffusers import UNet2DConditionModel

    # Attention only in the lowest-resolution block (a 16x16 latent at 512 px): attention at
    # higher latent resolutions dominates CPU time without making noise any prettier.
    return UNet2DConditionModel(
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
        **family_specific,
    )


def _sd15(tokenizer: Any, _t5_tokenizer: Any) -> Any:
    # In this order, so the seeded weights are the ones every earlier build of it had.
    text_encoder = clip_text_encoder(tokenizer)
    unet = tiny_unet(cross_attention_dim=TEXT_WIDTH)
    vae = tiny_vae(latent_channels=4)
    return assemble_pipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


def _sdxl(tokenizer: Any, _t5_tokenizer: Any) -> Any:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    time_embed_dim = 8
    # SDXL conditions on both encoders' hidden states side by side, and on the second's pooled
    # projection plus six size numbers (original size, crop, target size) of time_embed_dim each.
    unet = tiny_unet(
        cross_attention_dim=2 * TEXT_WIDTH,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_WIDTH,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return StableDiffusionXLPipeline(
        unet=unet,
        vae=tiny_vae(latent_channels=4),
        text_encoder=clip_text_encoder(tokenizer),
        text_encoder_2=clip_text_encoder(tokenizer, with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def _sd3(tokenizer: Any, t5_tokenizer: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    # Patches of 2x2 latents as in SD 3.5: a 512 px image is 32x32 = 1024 tokens.
    transformer = SD3Transformer2DModel(
        sample_size=64,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=TEXT_WIDTH,  # T5's width; the CLIP states are padded or cut to it
        pooled_projection_dim=2 * TEXT_WIDTH,  # both CLIPs' pooled projections side by side
        pos_embed_max_size=64,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        vae=tiny_vae(latent_channels=16),
        text_encoder=clip_text_encoder(tokenizer, with_projection=True),
        text_encoder_2=clip_text_encoder(tokenizer, with_projection=True),
        text_encoder_3=t5_text_encoder(t5_tokenizer),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        tokenizer_3=t5_tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )


def _flux(tokenizer: Any, t5_tokenizer: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    # FLUX packs 2x2 latents of 16 channels into one 64-channel token; guidance is an input of
    # the transformer (guidance-distilled, as FLUX.1-dev), not a second pass.
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TEXT_WIDTH,
        pooled_projection_dim=TEXT_WIDTH,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    return FluxPipeline(
        transformer=transformer,
        vae=tiny_vae(latent_channels=16),
        text_encoder=clip_text_encoder(tokenizer),
        text_encoder_2=t5_text_encoder(t5_tokenizer),
        tokenizer=tokenizer,
        tokenizer_2=t5_tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
    )


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


def build_tiny_model(destination: Path, *, family: str = "sd15", seed: int = 0) -> Path:
    """Saves the tiny pipeline of ``family`` to ``destination`` as safetensors and returns the folder."""
    pipeline = build_tiny_pipeline(family=family, seed=seed)
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
