"""Which wheels travel to the GPU machine: the project's runtime requirements its image lacks.

    python bench/gpu/wheels.py roots PRESENT_LIST            # prints them, one a line
    python bench/gpu/wheels.py prune WHEEL_DIR PRESENT_LIST  # deletes the downloads not needed

``prune`` drops what the image holds and what only those required (pip resolved against this
checkout's versions, not the image's).
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

# The GPU machine's interpreter, for requirements' environment markers.
TARGET_ENVIRONMENT = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}


def wheel_requirements(wheel: Path) -> Iterator[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        for line in archive.read(metadata).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                yield Requirement(line.split(":", 1)[1].strip())


def needed_wheels(
    wheels: dict[NormalizedName, Path], present: set[NormalizedName], roots: list[str]
) -> set[NormalizedName]:
    needed: set[NormalizedName] = set()
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    pending = [Requirement(root) for root in roots]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = frozenset(requirement.extras)
        if name in present or (name, extras) in seen:
            continue
        seen.add((name, extras))
        needed.add(name)
        for dependency in wheel_requirements(wheels[name]):
            marker = dependency.marker
            if marker is None or any(
                marker.evaluate({**TARGET_ENVIRONMENT, "extra": extra}) for extra in extras | {""}
            ):
                pending.append(dependency)
    return needed


def read_present(present_list: str) -> set[NormalizedName]:
    return {
        canonicalize_name(name)
        for line in Path(present_list).read_text().splitlines()
        if not line.startswith("#")
        for name in line.split()
    }


def project_roots(present: set[NormalizedName]) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [
        requirement
        for requirement in project["dependencies"]
        if canonicalize_name(Requirement(requirement).name) not in present
    ]


def main() -> None:
    command, *arguments = sys.argv[1:]
    if command == "roots":
        (present_list,) = arguments
        print("\n".join(project_roots(read_present(present_list))))
        return
    wheel_dir, present_list = arguments
    present = read_present(present_list)
    wheels = {canonicalize_name(path.name.split("-")[0]): path for path in Path(wheel_dir).glob("*.whl")}
    needed = needed_wheels(wheels, present, project_roots(present))
    for name, path in sorted(wheels.items()):
        if name not in needed:
            path.unlink()
    print(" ".join(sorted(needed)))


if __name__ == "__main__":
    main()
