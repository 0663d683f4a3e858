"""requirements/lock.txt pins every package with hashes, past the known advisories, with torch
as the CPU wheel; ``scripts/lock.sh --check`` (run by scripts/test.sh) notices a stale lock."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.paths import ROOT

LOCK = ROOT / "requirements" / "lock.txt"
# Known advisories: DRF before 3.15.2 (CVE-2024-21520), gunicorn before 23 (CVE-2024-6827).
FLOORS = {"djangorestframework": Version("3.15.2"), "gunicorn": Version("23")}


def locked_versions() -> dict[str, Version]:
    return {
        name.lower(): Version(version)
        for name, version in re.findall(
            r"^([A-Za-z0-9_.-]+)==(\S+) \\$", LOCK.read_text(), flags=re.MULTILINE
        )
    }


def lock_check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scripts/lock.sh", "--check"], cwd=folder, capture_output=True, text=True, timeout=60
    )


def copy_of_the_project_files(folder: Path) -> Path:
    (folder / "scripts").mkdir()
    (folder / "requirements").mkdir()
    for path in ("pyproject.toml", "scripts/lock.sh", "requirements/lock.txt"):
        shutil.copy2(ROOT / path, folder / path)
    return folder


def test_every_locked_package_is_pinned_with_a_hash() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 3)[3])

    assert len(entries) > 50
    for entry in entries:
        assert re.match(r"^[A-Za-z0-9_.-]+==\S+ \\\n +--hash=sha256:[0-9a-f]{64}", entry), entry[:80]


def test_torch_is_the_cpu_wheel_and_nothing_for_cuda_is_locked() -> None:
    versions = locked_versions()

    assert versions["torch"] == Version("2.13.0+cpu")
    assert not [name for name in versions if name.startswith(("nvidia-", "triton"))]


def test_the_lock_and_the_project_floors_are_past_the_known_advisories() -> None:
    versions = locked_versions()
    dependencies = [
        Requirement(spec)
        for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ]
    floors = {
        requirement.name: min(
            (Version(s.version) for s in requirement.specifier if s.operator == ">="), default=Version("0")
        )
        for requirement in dependencies
    }

    for name, floor in FLOORS.items():
        assert versions[name] >= floor, name
        assert floors[name] >= floor, name


def test_the_lock_is_current() -> None:
    result = lock_check(ROOT)

    assert result.returncode == 0, result.stderr


def test_a_new_dependency_makes_the_lock_stale(tmp_path: Path) -> None:
    folder = copy_of_the_project_files(tmp_path)
    pyproject = folder / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("dependencies = [\n", 'dependencies = [\n    "openai>=1",\n', 1)
    )

    result = lock_check(folder)

    assert result.returncode == 1
    assert "run scripts/lock.sh" in result.stderr


def test_a_change_outside_the_dependencies_keeps_the_lock_current(tmp_path: Path) -> None:
    folder = copy_of_the_project_files(tmp_path)
    pyproject = folder / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("line-length = 110", "line-length = 100"))

    assert lock_check(folder).returncode == 0
