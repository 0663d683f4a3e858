"""Results in S3, chosen by settings alone: a real worker and a real web process write to and
sign for a real S3-compatible server (moto's) on loopback."""

from __future__ import annotations

import io
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from tests.support.processes import WebProcess, WorkerProcess
from tests.support.waits import http_json, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

URL_EXPIRY_SECONDS = 600


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str) -> dict[str, str]:
    bucket = f"results-{uuid.uuid4().hex[:12]}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "S3_REGION": "us-east-1",
        "STORAGE_BACKEND": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": s3_endpoint,
        # The same server under another name, as a browser outside a private network sees it.
        "S3_PUBLIC_ENDPOINT_URL": s3_endpoint.replace("127.0.0.1", "localhost"),
        "S3_ADDRESSING_STYLE": "path",
        "S3_URL_EXPIRY_SECONDS": str(URL_EXPIRY_SECONDS),
        # A queue of its own: only this test's worker hears this test's wake-ups.
        "GENERATION_QUEUE": f"s3-{uuid.uuid4().hex[:8]}",
    }
    s3_client(env).create_bucket(Bucket=bucket)
    return env


def s3_client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        region_name=env["S3_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def s3_web(s3_env: dict[str, str]) -> Iterator[WebProcess]:
    web = WebProcess(extra_env=s3_env)
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


@pytest.fixture
def s3_worker(s3_env: dict[str, str], tiny_model_dir: Any) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(extra_env=s3_env, name="s3")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def test_result_lands_in_private_bucket_and_downloads_through_presigned_url(
    s3_web: WebProcess, s3_worker: WorkerProcess, s3_env: dict[str, str]
) -> None:
    web = s3_web
    status, _, submitted = http_json(
        "POST", f"{web.url}/api/v1/jobs", {"prompt": "a tin robot", "width": 64, "height": 64, "steps": 2}
    )
    assert status == 202

    def completed() -> Any:
        body = http_json("GET", submitted["status_url"])[2]
        assert body["status"] in ("queued", "running", "completed"), body
        return body if body["status"] == "completed" else None

    body = wait_for(completed, timeout=120)

    client = s3_client(s3_env)
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_env["S3_BUCKET"])["Contents"]]
    assert keys == [f"results/{submitted['id']}/0.png"]
    stored = client.head_object(Bucket=s3_env["S3_BUCKET"], Key=keys[0])
    assert stored["ContentType"] == "image/png"
    grants = client.get_object_acl(Bucket=s3_env["S3_BUCKET"], Key=keys[0])["Grants"]
    assert all("URI" not in grant["Grantee"] for grant in grants), grants  # no AllUsers/AuthenticatedUsers

    url = urllib.parse.urlsplit(body["image_url"])
    query = urllib.parse.parse_qs(url.query)
    assert f"{url.scheme}://{url.netloc}" == s3_env["S3_PUBLIC_ENDPOINT_URL"]
    assert query["X-Amz-Expires"] == [str(URL_EXPIRY_SECONDS)]
    assert "X-Amz-Signature" in query
    with urllib.request.urlopen(body["image_url"], timeout=10) as response:
        assert response.headers["Content-Type"] == "image/png"
        image = Image.open(io.BytesIO(response.read()))
    assert image.size == (64, 64)
    assert image.info["parameters"].startswith("a tin robot")


def test_readyz_names_storage_when_the_bucket_is_missing(
    client: Any, settings: Any, s3_endpoint: str
) -> None:
    options = {
        "bucket_name": f"never-created-{uuid.uuid4().hex[:12]}",
        "endpoint_url": s3_endpoint,
        "region_name": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
    }
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "jobs.storage.ResultStorage", "OPTIONS": options},
    }

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["storage"]
