"""Stable Diffusion 1.5 and SDXL base architectures (their public configs) with random weights.

No download: the benches build them in code and save them for ``from_pretrained``. On CUDA
they are built on the GPU (random init of billions of parameters takes minutes on a CPU) and
saved in fp16, the dtype the worker loads them in. ``reduced=True`` keeps the classes, block
layout and pipeline but narrows every width, so a CPU can run the same path in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TextEncoderShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int


@dataclass(frozen=True)
class Shape:
    unet_channels: tuple[int, ...]
    # diffusers' historical name: the number of attention heads per block.
    unet_heads: int | tuple[int, ...]
    vae_channels: tuple[int, ...]
    text_encoder: TextEncoderShape
    # SDXL only: transformer blocks per UNet level, the second (OpenCLIP bigG) text encoder,
    # and the channels each of its six size/crop conditioning numbers is embedded in.
    transformer_layers: tuple[int, ...] = ()
    text_encoder_2: TextEncoderShape | None = None
    time_embed: int = 0


SD15 = Shape(
    unet_channels=(320, 640, 1280, 1280),
    unet_heads=8,
    vae_channels=(128, 256, 512, 512),
    text_encoder=TextEncoderShape(hidden=768, intermediate=3072, layers=12, heads=12),
)
SD15_REDUCED = Shape(
    unet_channels=(32, 64, 128, 128),
    unet_heads=2,
    vae_channels=(32, 32, 64, 64),
    text_encoder=TextEncoderShape(hidden=32, intermediate=64, layers=2, heads=2),
)
SDXL = Shape(
    unet_channels=(320, 640, 1280),
    unet_heads=(5, 10, 20),
    vae_channels=(128, 256, 512, 512),
    text_encoder=TextEncoderShape(hidden=768, intermediate=3072, layers=12, heads=12),
    transformer_layers=(1, 2, 10),
    text_encoder_2=TextEncoderShape(hidden=1280, intermediate=5120, layers=32, heads=20),
    time_embed=256,
)
SDXL_REDUCED = Shape(
    unet_channels=(32, 64, 128),
    unet_heads=(1, 2, 4),
    vae_channels=(32, 32, 64, 64),
    text_encoder=TextEncoderShape(hidden=32, intermediate=64, layers=2, heads=2),
    transformer_layers=(1, 1, 2),
    text_encoder_2=TextEncoderShape(hidden=64, intermediate=128, layers=2, heads=2),
    time_embed=8,
)


def build_sd15_model(destination: Path, *, reduced: bool = False) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    from generator.tiny_model import assemble_pipeline, build_tokenizer

    shape = SD15_REDUCED if reduced else SD15
    tokenizer = build_tokenizer(destination / "_tokenizer")
    with torch.device(_build_device()):
        unet = UNet2DConditionModel(
            sample_size=64,
            cross_attention_dim=shape.text_encoder.hidden,
            block_out_channels=shape.unet_channels,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
            attention_head_dim=shape.unet_heads,
        )
        vae = _vae(shape, sample_size=512)
        text_encoder = CLIPTextModel(_text_config(shape.text_encoder, tokenizer, hidden_act="quick_gelu"))
    pipeline = assemble_pipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
    _save(pipeline, destination)


def build_sdxl_model(destination: Path, *, reduced: bool = False) -> None:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from generator.tiny_model import build_tokenizer

    shape = SDXL_REDUCED if reduced else SDXL
    assert shape.text_encoder_2 is not None
    tokenizer = build_tokenizer(destination / "_tokenizer")
    with torch.device(_build_device()):
        unet = UNet2DConditionModel(
            sample_size=128,
            cross_attention_dim=shape.text_encoder.hidden + shape.text_encoder_2.hidden,
            block_out_channels=shape.unet_channels,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=2,
            attention_head_dim=shape.unet_heads,
            transformer_layers_per_block=shape.transformer_layers,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=shape.time_embed,
            projection_class_embeddings_input_dim=6 * shape.time_embed + shape.text_encoder_2.hidden,
        )
        vae = _vae(shape, sample_size=1024, scaling_factor=0.13025)
        text_encoder = CLIPTextModel(_text_config(shape.text_encoder, tokenizer, hidden_act="quick_gelu"))
        text_encoder_2 = CLIPTextModelWithProjection(
            _text_config(
                shape.text_encoder_2,
                tokenizer,
                hidden_act="gelu",
                projection_dim=shape.text_encoder_2.hidden,
            )
        )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    _save(pipeline, destination)


def _build_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _vae(shape: Shape, *, sample_size: int, scaling_factor: float = 0.18215) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=shape.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def _text_config(
    shape: TextEncoderShape, tokenizer: Any, *, hidden_act: str, projection_dim: int = 512
) -> Any:
    from transformers import CLIPTextConfig

    from generator.tiny_model import TOKEN_WINDOW

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        max_position_embeddings=TOKEN_WINDOW,
        hidden_act=hidden_act,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _save(pipeline: Any, destination: Path) -> None:
    import torch

    if torch.cuda.is_available():
        # Half the bytes to write and read back; the worker loads fp16 on a GPU anyway.
        pipeline.to(torch.float16)
    pipeline.save_pretrained(str(destination), safe_serialization=True)
