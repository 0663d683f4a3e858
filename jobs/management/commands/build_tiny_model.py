"""Builds the tiny random-weight Stable Diffusion that is the embedded default model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Build a tiny Stable Diffusion (random weights, safetensors) into a folder."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--output", default=settings.GENERATOR_MODEL, help="Destination folder.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="Do nothing if the folder holds a model (an older tiny model is rebuilt).",
        )

    def handle(self, *args: Any, output: str, seed: int, if_missing: bool, **options: Any) -> None:
        destination = Path(output)
        from generator.tiny_model import build_tiny_model, is_current_tiny_model

        if if_missing and is_current_tiny_model(destination):
            self.stdout.write(f"Tiny model already present in {destination}")
            return

        build_tiny_model(destination, seed=seed)
        self.stdout.write(self.style.SUCCESS(f"Tiny model written to {destination}"))
