"""Builds a tiny random-weight model of a family: SD 1.5 (the embedded default model), SDXL,
SD 3.5 or FLUX.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Build a tiny model of a family (random weights, safetensors) into a folder."

    def add_arguments(self, parser: Any) -> None:
        from generator.tiny_model import FAMILIES

        parser.add_argument("--family", choices=FAMILIES, default="sd15", help="The model family (sd15).")
        parser.add_argument(
            "--output",
            help="Destination folder (sd15: GENERATOR_MODEL; another family: tiny-<family> beside it).",
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
        parser.add_argument(
            "--if-missing",
            action="store_true",
            help="Do nothing if the folder holds a model (an older tiny model is rebuilt).",
        )

    def handle(
        self, *args: Any, family: str, output: str | None, seed: int, if_missing: bool, **options: Any
    ) -> None:
        from generator.tiny_model import build_tiny_model, is_current_tiny_model

        default_model = Path(settings.GENERATOR_MODEL)
        destination = Path(
            output or (default_model if family == "sd15" else default_model.parent / f"tiny-{family}")
        )

        if if_missing and is_current_tiny_model(destination):
            self.stdout.write(f"Tiny model already present in {destination}")
            return

        build_tiny_model(destination, family=family, seed=seed)
        self.stdout.write(self.style.SUCCESS(f"Tiny {family} model written to {destination}"))
