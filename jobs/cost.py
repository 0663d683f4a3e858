"""What a job costs in compute units: the work it asks of the GPU, relative to one
512x512 image of 25 steps (1 unit). The formula is documented in docs/api.md."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from core.errors import FieldError, invalid_parameters

REFERENCE_PIXELS = 512 * 512
REFERENCE_STEPS = 25
# Usage counts whole thousandths (exact sums in every database); a job never rounds down to free.
COST_UNITS_QUANTUM = Decimal("0.001")
# What the stored columns can hold; validation keeps jobs far below it.
COST_UNITS_MAX = Decimal(10**9)


def job_cost_units(
    *, width: int, height: int, steps: int, num_images: int, guidance_scale: float, cost_weight: float
) -> Decimal:
    """``cost_weight`` is the model's denoiser work per step relative to Stable Diffusion 1.5's."""
    # Classifier-free guidance runs the UNet on a conditional and an unconditional batch.
    guidance_factor = 2 if guidance_scale > 1 else 1
    units = (
        Decimal(width * height)
        / REFERENCE_PIXELS
        * Decimal(steps)
        / REFERENCE_STEPS
        * num_images
        * guidance_factor
        * Decimal(str(cost_weight))
    )
    if not 0 <= units <= COST_UNITS_MAX:
        raise invalid_parameters(
            {"cost": [FieldError(code="cost_out_of_range", message="This job asks for too much work.")]}
        )
    return units.quantize(COST_UNITS_QUANTUM, rounding=ROUND_CEILING)
