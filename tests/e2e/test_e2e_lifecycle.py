"""The server process's life: SIGTERM lets requests in flight finish, a killed worker is respawned,
and the config's limits reach real clients."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .clients import Skopeo, digest_of, have
from .conftest import ServerFactory
from .images import multi_layer_image
from .server import PortsideServer

pytestmark = pytest.mark.e2e

KiB = 1024
MiB = 1024 * KiB


def slowly(data: bytes, pause: float) -> Iterator[bytes]:
    for start in range(0, len(data), 64 * KiB):
        yield data[start : start + 64 * KiB]
        time.sleep(pause)


def test_sigterm_lets_an_upload_in_flight_finish_then_the_server_exits_cleanly(
    portside: PortsideServer,
) -> None:
    data = os.urandom(4 * MiB)
    digest = digest_of(data)
    answer: list[httpx.Response | BaseException] = []

    def upload() -> None:
        try:
            answer.append(
                httpx.post(
                    f"{portside.url}/v2/e2e/sigterm/blobs/uploads/",
                    params={"digest": digest},
                    content=slowly(data, 0.02),  # about 1.3 s in all
                    timeout=60,
                )
            )
        except BaseException as error:
            answer.append(error)

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()

    assert portside.stop() == 0

    thread.join(30)
    (response,) = answer
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 201
    assert time.monotonic() - started < 15
    portside.start()
    blob = httpx.get(f"{portside.url}/v2/e2e/sigterm/blobs/{digest}")
    assert blob.status_code == 200
    assert blob.content == data


def test_a_worker_killed_mid_upload_is_respawned_and_the_upload_goes_on(
    portside_factory: ServerFactory,
) -> None:
    server = portside_factory(workers=2)
    data = os.urandom(2 * MiB)
    half = len(data) // 2
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        started = client.post(f"{server.url}/v2/e2e/respawn/blobs/uploads/")
        location = f"{server.url}{started.headers['location']}"
        patched = client.patch(
            location, content=data[:half], headers={"Content-Range": f"0-{half - 1}"}
        )
        assert patched.status_code == 202

        victim, survivor = server.worker_pids()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(workers := server.worker_pids()) < 2 or victim in workers:
            assert time.monotonic() < deadline, f"no worker respawned: {workers}"
            time.sleep(0.05)
        assert survivor in workers

        rest = client.patch(
            location,
            content=data[half:],
            headers={"Content-Range": f"{half}-{len(data) - 1}"},
        )
        assert rest.status_code == 202
        finished = client.put(location, params={"digest": digest_of(data)})
        assert finished.status_code == 201
        blob = client.get(f"{server.url}/v2/e2e/respawn/blobs/{digest_of(data)}")
        assert blob.content == data
    assert "Respawning worker" in server.log_text()


@pytest.fixture
def limited(portside_factory: ServerFactory, tmp_path: Path) -> tuple[PortsideServer, Skopeo]:
    if not have("skopeo"):
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    server = portside_factory(workers=2, delete_enabled=False, max_blob_size="1MiB")
    return server, Skopeo(tmp_path / "skopeo", server.host)


def test_with_deletes_disabled_skopeo_delete_is_refused_and_the_image_stays(
    tmp_path: Path, limited: tuple[PortsideServer, Skopeo]
) -> None:
    server, skopeo = limited
    source = multi_layer_image(tmp_path / "source", tag="v1", sizes=[64 * KiB, 32 * KiB, 8 * KiB])
    (image,) = source.images.values()
    repo = f"docker://{server.host}/e2e/keep"
    skopeo.copy(source.ref("v1"), f"{repo}:v1")

    refused = skopeo("delete", "--tls-verify=false", f"{repo}@{image.manifest.digest}", check=False)

    assert refused.returncode != 0
    assert "405" in refused.stderr, refused.stderr
    assert "UNSUPPORTED" in refused.stderr, refused.stderr
    assert skopeo.list_tags(repo) == ["v1"]
    assert skopeo.inspect_raw(f"{repo}:v1") == source.read_blob(image.manifest.digest)


def test_a_layer_over_max_blob_size_is_refused_and_leaves_nothing_behind(
    tmp_path: Path, limited: tuple[PortsideServer, Skopeo]
) -> None:
    server, skopeo = limited
    source = multi_layer_image(tmp_path / "source", tag="v1", sizes=[64 * KiB, 3 * MiB, 8 * KiB])
    (image,) = source.images.values()
    repo = f"docker://{server.host}/e2e/too-big"

    refused = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--retry-times=0",
        source.ref("v1"),
        f"{repo}:v1",
        check=False,
    )

    assert refused.returncode != 0
    # The registry answers 413 SIZE_INVALID mid-body. skopeo shows it, or, about one time in
    # five, "broken pipe": the server closes the connection with the request body unread, and
    # the reset can reach skopeo before the answer does.
    assert "size limit" in refused.stderr or "broken pipe" in refused.stderr, refused.stderr
    big = image.layers[1]
    assert httpx.head(f"{server.url}/v2/e2e/too-big/blobs/{big.digest}").status_code == 404
    assert httpx.get(f"{server.url}/v2/e2e/too-big/manifests/v1").status_code == 404
    statuses = {line.status for line in server.access_lines() if line.method == "PATCH"}
    assert 413 in statuses
    # The registry still takes what fits.
    small = multi_layer_image(tmp_path / "small", tag="v1", sizes=[64 * KiB, 512 * KiB])
    skopeo.copy(small.ref("v1"), f"{repo}:v1")
    assert skopeo.list_tags(repo) == ["v1"]
