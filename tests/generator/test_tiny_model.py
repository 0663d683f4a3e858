from __future__ import annotations

from pathlib import Path

from transformers import CLIPTokenizer

from generator.tiny_model import TOKEN_WINDOW, byte_level_vocabulary


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
