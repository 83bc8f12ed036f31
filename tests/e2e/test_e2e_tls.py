"""TLS built into `portside serve`, no proxy: skopeo, podman and curl verify the server's
certificate against a test CA made here; HTTP/2 by ALPN; client certificates with tls_client_ca."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .clients import Podman, Skopeo, have, podman_for, skopeo_for
from .conftest import ServerFactory
from .images import multi_layer_image, tagged_digest, verify_layout_blobs
from .server import PortsideServer
from .tls import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e

UNKNOWN_AUTHORITY = "certificate signed by unknown authority"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def portside(portside_factory: ServerFactory, tls: TlsFiles) -> PortsideServer:
    """Overrides conftest's: the server speaks HTTPS with the test CA's certificate."""
    return portside_factory(
        ssl_context=tls.ssl_context(),
        tls_certificate=str(tls.certificate),
        tls_key=str(tls.key),
    )


@pytest.fixture
def skopeo(tmp_path: Path, portside: PortsideServer, tls: TlsFiles) -> Skopeo:
    return skopeo_for(tmp_path / "skopeo", portside.host, tls.cert_dir)


@pytest.fixture
def podman(tmp_path: Path, portside: PortsideServer, tls: TlsFiles) -> Iterator[Podman]:
    with podman_for(tmp_path / "podman", portside.host, tls.cert_dir) as client:
        yield client


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_skopeo_pushes_and_pulls_with_the_certificate_verified(
    tmp_path: Path, portside: PortsideServer, skopeo: Skopeo
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    (image,) = source.images.values()
    remote = f"docker://{portside.host}/e2e/tls:v1"

    skopeo.copy(source.ref("v1"), remote)
    skopeo.copy(remote, f"oci:{tmp_path / 'pulled'}:v1")

    assert tagged_digest(tmp_path / "pulled", "v1") == image.manifest.digest
    pulled = verify_layout_blobs(tmp_path / "pulled")
    assert all(pulled.get(blob.digest) == blob.size for blob in image.blobs)
    # Verification is on: without the test CA, skopeo refuses the server.
    refused = skopeo("inspect", "--raw", "--tls-verify=true", remote, check=False)
    assert refused.returncode != 0
    assert UNKNOWN_AUTHORITY in refused.stderr
    assert "serving on https://" in portside.log_text()


def test_podman_pushes_and_pulls_with_the_certificate_verified(
    tmp_path: Path, portside: PortsideServer, podman: Podman
) -> None:
    source = multi_layer_image(tmp_path / "source", tag="v1")
    name = f"{portside.host}/e2e/tls-podman:v1"
    image_id = podman.load(source.ref("v1"), name)
    digest_file = tmp_path / "pushed-digest"

    podman("push", *podman.tls_options(), "--digestfile", str(digest_file), name)
    podman("rmi", "--all", "--force")
    podman("pull", *podman.tls_options(), name)

    (listed,) = podman.images()
    assert listed["Id"] == image_id
    assert listed["Digest"] == digest_file.read_text().strip()
    refused = podman("pull", "--tls-verify=true", name, check=False)
    assert UNKNOWN_AUTHORITY in refused.stderr


def test_curl_gets_http2_by_alpn_and_http1_on_request(
    portside: PortsideServer, tls: TlsFiles
) -> None:
    write_out = "%{http_code} %{http_version}"
    url = f"{portside.url}/v2/"

    http2 = curl("--http2", "--cacert", str(tls.ca_file), "-o", "/dev/null", "-w", write_out, url)
    http1 = curl("--http1.1", "--cacert", str(tls.ca_file), "-o", "/dev/null", "-w", write_out, url)
    plain = curl("-o", "/dev/null", f"http://{portside.host}/v2/")

    assert (http2.stdout, http2.returncode) == ("200 2", 0), http2.stderr
    assert (http1.stdout, http1.returncode) == ("200 1.1", 0), http1.stderr
    assert plain.returncode != 0  # plain HTTP to the TLS port gets no answer


def test_tls_client_ca_requires_a_client_certificate(
    tmp_path: Path, portside_factory: ServerFactory, tls: TlsFiles
) -> None:
    client_pem, client_dir = tls.issue_client(tmp_path)
    server = portside_factory(
        ssl_context=tls.ssl_context(client_pem),
        tls_certificate=str(tls.certificate),
        tls_key=str(tls.key),
        tls_client_ca=str(tls.ca_file),
    )
    ping = f"{server.url}/v1/_ping"

    without = curl("--cacert", str(tls.ca_file), "-o", "/dev/null", ping)
    with_cert = curl(
        "--cacert",
        str(tls.ca_file),
        "--cert",
        str(client_pem),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        ping,
    )

    assert without.returncode != 0
    assert (with_cert.stdout, with_cert.returncode) == ("200", 0), with_cert.stderr
    if not have("skopeo"):
        return
    repository = f"docker://{server.host}/e2e/mtls"
    source = multi_layer_image(tmp_path / "source", tag="v1", sizes=[4096, 8192])
    skopeo = Skopeo(tmp_path / "skopeo", server.host, client_dir)
    skopeo.copy(source.ref("v1"), f"{repository}:v1")
    assert skopeo.list_tags(repository) == ["v1"]
    no_cert = Skopeo(tmp_path / "skopeo-without-cert", server.host, tls.cert_dir)
    assert no_cert("list-tags", *no_cert.tls_options(), repository, check=False).returncode != 0
