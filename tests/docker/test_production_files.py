"""The deployment files stay consistent with the code: no Docker engine runs here, so what can
be checked by reading is checked here (compose structure, Dockerfile sources, the Procfile,
and one example env file that documents exactly the variables the code reads)."""

from __future__ import annotations

import re
import shlex
import tomllib
from typing import Any

import yaml

from config.celery import served_generation_queues
from tests.support.paths import ROOT

DOCKER = ROOT / "docker"
# Read by programs other than ours: boto3 (credentials), the postgres, redis and minio images.
READ_ELSEWHERE = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "REDIS_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def variables_read_by_code() -> set[str]:
    settings = (ROOT / "config" / "settings.py").read_text()
    gunicorn = (ROOT / "config" / "gunicorn.py").read_text()
    return set(re.findall(r'\benv\.\w+\(\s*"([A-Z0-9_]+)"', settings)) | set(
        re.findall(r'environ\.get\("([A-Z0-9_]+)"', gunicorn)
    )


def variables_documented() -> set[str]:
    text = (DOCKER / ".env.example").read_text()
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))


def test_example_env_file_documents_every_variable_the_code_reads() -> None:
    assert variables_read_by_code() - variables_documented() == set()


def test_example_env_file_names_no_variable_that_nothing_reads() -> None:
    assert variables_documented() - variables_read_by_code() - READ_ELSEWHERE == set()


def test_compose_runs_every_part_with_a_gpu_reserved_for_the_worker() -> None:
    services = compose()["services"]

    assert {
        "postgres",
        "redis",
        "minio",
        "release",
        "web",
        "worker",
        "beat",
        "webhooks",
        "maintenance",
    } <= set(services)
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert services["web"]["depends_on"]["release"]["condition"] == "service_completed_successfully"


def test_compose_builds_from_dockerfiles_that_exist() -> None:
    for name, service in compose()["services"].items():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name


def test_dockerfiles_copy_every_package_and_only_paths_that_exist() -> None:
    packages = {
        pattern.rstrip("*")
        for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
            "find"
        ]["include"]
    }
    for dockerfile in ("Dockerfile.web", "Dockerfile.worker"):
        copies = [
            shlex.split(line)[1:-1]
            for line in (DOCKER / dockerfile).read_text().splitlines()
            if line.startswith("COPY ")
        ]
        sources = {source for line in copies for source in line}
        assert all((ROOT / source).exists() for source in sources), dockerfile
        assert packages <= sources, dockerfile


def test_procfile_declares_release_web_gpu_worker_webhooks_and_maintenance_workers_and_beat() -> None:
    processes = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
    )

    assert set(processes) == {"release", "web", "worker", "webhooks", "maintenance", "beat"}
    assert "check --deploy" in processes["release"]
    assert processes["web"].startswith("gunicorn --config config/gunicorn.py")
    assert processes["worker"] == "scripts/worker.sh gpu"


def test_the_run_command_starts_every_process_of_the_development_procfile() -> None:
    declared = {line.split(":", 1)[0] for line in (ROOT / "Procfile.dev").read_text().splitlines() if line}
    started = re.search(r"^processes=\((.*)\)$", (ROOT / "scripts/run.sh").read_text(), re.MULTILINE)

    assert started is not None
    # Redis is started only when none answers on its port.
    assert set(started.group(1).split()) == declared - {"redis"}


def test_the_gpu_worker_takes_one_job_at_a_time_on_its_served_models_queues(settings: Any) -> None:
    script = (ROOT / "scripts" / "worker.sh").read_text()
    start = script.index("    gpu)")
    gpu_branch = script[start : script.index(";;", script.index("set --", start))]
    worker = gpu_branch.split()
    settings.GENERATOR_SERVED_MODELS = ["tiny-sd", "tiny-sdxl"]

    assert "served_generation_queues()" in gpu_branch
    assert served_generation_queues() == "gpu.tiny-sd,gpu.tiny-sdxl"
    assert worker[worker.index("--queues") + 1] == '"$queues"'
    assert worker[worker.index("--concurrency") + 1] == "1"
    assert worker[worker.index("--prefetch-multiplier") + 1] == "1"
