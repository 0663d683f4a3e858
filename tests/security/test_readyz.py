"""/readyz under concurrent probes: every probe of a healthy process answers 200."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.processes import WebProcess

pytestmark = pytest.mark.django_db(transaction=True)

PROBES = 20


@pytest.fixture
def web(django_db_setup: None, tmp_path: Path) -> Iterator[WebProcess]:
    # Processes and threads enough that the probes really run at the same time.
    web = WebProcess(
        extra_env={"WEB_CONCURRENCY": "4", "WEB_THREADS": str(PROBES), "MEDIA_ROOT": str(tmp_path / "media")}
    )
    try:
        web.wait_ready()
        yield web
    finally:
        web.stop()


def probe(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_concurrent_readiness_probes_all_answer_200(web: WebProcess, tmp_path: Path) -> None:
    for _ in range(10):
        with ThreadPoolExecutor(max_workers=PROBES) as pool:
            statuses = list(pool.map(probe, [web.url] * PROBES))

        assert statuses == [200] * PROBES
    # Each probe cleaned up after itself.
    assert list((tmp_path / "media").iterdir()) == []
