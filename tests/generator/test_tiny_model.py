from __future__ import annotations

import io
import json
from pathlib import Path

from django.core.management import call_command
from transformers import CLIPTokenizer

from generator.tiny_model import TOKEN_WINDOW, byte_level_vocabulary, is_current_tiny_model


def test_saved_tokenizer_has_the_whole_byte_level_vocabulary(tiny_model_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_model_dir / "tokenizer"))

    # transformers 5 silently builds a 3-token vocabulary from vocab/merges file arguments.
    assert len(tokenizer) == len(byte_level_vocabulary()) == 514
    assert tokenizer.model_max_length == TOKEN_WINDOW


def test_saved_tokenizer_encodes_different_prompts_differently(tiny_model_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_model_dir / "tokenizer"))

    fox = tokenizer("a red fox").input_ids
    owl = tokenizer("a grey owl").input_ids

    assert fox != owl
    assert fox[0] == tokenizer.bos_token_id and fox[-1] == tokenizer.eos_token_id
    assert len(set(fox[1:-1])) > 3


def test_tiny_model_weights_are_saved_as_safetensors_only(tiny_model_dir: Path) -> None:
    weights = {
        path.name for path in tiny_model_dir.rglob("*") if path.suffix in {".safetensors", ".bin", ".pt"}
    }

    assert weights == {"model.safetensors", "diffusion_pytorch_model.safetensors"}
    assert len(list(tiny_model_dir.rglob("*.safetensors"))) == 3


def test_tiny_model_latent_is_an_eighth_of_the_image_like_real_stable_diffusion(tiny_model_dir: Path) -> None:
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(str(tiny_model_dir), local_files_only=True)

    assert pipeline.vae_scale_factor == 8
    assert pipeline.unet.config.sample_size * pipeline.vae_scale_factor == 512


def test_if_missing_rebuilds_an_older_tiny_model_but_keeps_any_other_model(tmp_path: Path) -> None:
    older_tiny, other = tmp_path / "older-tiny", tmp_path / "other"
    for folder, channels in ((older_tiny, [8, 16]), (other, [320, 640, 1280, 1280])):
        (folder / "unet").mkdir(parents=True)
        (folder / "model_index.json").write_text("{}")
        (folder / "unet" / "config.json").write_text(json.dumps({"block_out_channels": channels}))

    call_command("build_tiny_model", "--if-missing", "--output", str(older_tiny), stdout=io.StringIO())
    call_command("build_tiny_model", "--if-missing", "--output", str(other), stdout=io.StringIO())

    assert is_current_tiny_model(older_tiny)
    assert (older_tiny / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((other / "model_index.json").read_text()) == {}
