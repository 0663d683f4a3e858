"""The tiny model of each family on the README's first example (512x512, 25 steps, guidance 7.5):
wall and CPU seconds of the warm engine, as the worker runs it.

    .venv/bin/python bench/tiny_model_speed.py                # median of 5
    .venv/bin/python bench/tiny_model_speed.py --runs 3 --size 768
    .venv/bin/python bench/tiny_model_speed.py --family sd15,sdxl,sd3,flux --size 64

Builds the tiny model into a scratch folder, loads it with ``Engine.load`` (the worker's path),
warms it up as the worker does, then times each generation; it also prints the load average,
since on a shared machine other work decides the wall time more than the model does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from generator.engine import Engine
from generator.parameters import GenerationParameters
from generator.tiny_model import FAMILIES, build_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--family", default="sd15", help=f"comma-separated, of {', '.join(FAMILIES)}")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    for family in args.family.split(","):
        engine = Engine.load(str(build_tiny_model(folder / family, family=family)))
        engine.warm_up()
        request = GenerationParameters(
            prompt="a lighthouse at dusk",
            width=args.size,
            height=args.size,
            steps=args.steps,
            guidance_scale=7.5,
            seed=0,
            model=f"tiny-{family}",
        )
        walls, cpus = [], []
        for _ in range(args.runs):
            wall, cpu = time.perf_counter(), time.process_time()
            engine.generate([request])
            walls.append(round(time.perf_counter() - wall, 2))
            cpus.append(round(time.process_time() - cpu, 2))
        print(f"tiny {family}, {args.size}x{args.size}, {args.steps} steps, guidance 7.5, {args.runs} runs")
        print(f"  wall seconds: median {statistics.median(walls):.2f}, max {max(walls):.2f} {walls}")
        print(f"  CPU seconds:  median {statistics.median(cpus):.2f} {cpus}")
    print(f"load average at the end: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")


if __name__ == "__main__":
    main()
