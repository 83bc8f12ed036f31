"""Moving from distribution: a storage tree written by the real CNCF distribution (Debian's
`docker-registry`), filled with skopeo and podman (a multi-arch index, images sharing a base
layer, a deleted image), imported by `portside import distribution` while it is SIGKILLed once
and rerun; then every tag pulls from `portside serve` with skopeo and podman, same digests."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from upstream.registries import running_distribution

from .clients import podman_for, skopeo_for
from .conftest import ServerFactory
from .images import Layout, multi_arch_index
from .server import PORTSIDE, PortsideServer

MiB = 1024 * 1024


def pulls_as_distribution_wrote(
    server: PortsideServer, digests: dict[str, str], tmp_path: Path
) -> None:
    """Every reference fill() pushed, but the deleted one, pulls from server with skopeo, with
    the digest distribution gave it; team/app has its two tags."""
    skopeo = skopeo_for(tmp_path / "skopeo-pull", server.host)
    for reference, digest in digests.items():
        if reference == "deleted":
            continue
        raw = skopeo.inspect_raw(f"docker://{server.host}/{reference}")
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == digest, reference
        skopeo.copy(
            f"docker://{server.host}/{reference}",
            f"oci:{tmp_path / 'pulled'}:{reference.replace('/', '-').replace(':', '-')}",
            "--all",
        )
    assert skopeo.list_tags(f"docker://{server.host}/team/app") == ["v1", "v2"]


def import_command(config: Path, tree: Path, *options: str) -> list[str]:
    return [str(PORTSIDE), "import", "distribution", "--config", str(config), *options, str(tree)]


def fill(tmp_path: Path, host: str) -> dict[str, str]:
    """Push the images into distribution at host; tag reference → manifest digest."""
    skopeo = skopeo_for(tmp_path / "skopeo-fill", host)
    index = multi_arch_index(tmp_path / "multi")
    base = Layout(tmp_path / "base")
    seed = 7_000
    base.add_image([8 * MiB, 64 * 1024], tag="v1", seed=seed)  # the shared base layer first
    base.add_image([8 * MiB, 32 * 1024], tag="v2", seed=seed)
    base.add_image([24 * MiB], tag="old")
    skopeo.copy(index.ref("multi"), f"docker://{host}/library/multi:multi", "--all")
    for tag in ("v1", "v2", "old"):
        skopeo.copy(base.ref(tag), f"docker://{host}/team/app:{tag}")
    with podman_for(tmp_path / "podman-fill", host) as podman:
        podman.load(base.ref("v2"), f"{host}/other/app:v2")
        podman("push", "--tls-verify=false", "--format", "v2s2", f"{host}/other/app:v2")
    digests = {}
    for reference in ("library/multi:multi", "team/app:v1", "team/app:v2", "other/app:v2"):
        name, tag = reference.split(":")
        response = httpx.head(
            f"http://{host}/v2/{name}/manifests/{tag}",
            headers={"Accept": ", ".join(ACCEPT)},
        )
        assert response.status_code == 200, reference
        digests[reference] = response.headers["docker-content-digest"]
    # The deleted image: distribution drops its revision link and its tag.
    old = httpx.head(
        f"http://{host}/v2/team/app/manifests/old", headers={"Accept": ", ".join(ACCEPT)}
    ).headers["docker-content-digest"]
    assert httpx.delete(f"http://{host}/v2/team/app/manifests/{old}").status_code == 202
    digests["deleted"] = old
    return digests


ACCEPT = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def test_a_real_distribution_tree_imports_and_every_tag_pulls(
    tmp_path: Path, portside_factory: ServerFactory
) -> None:
    with running_distribution(tmp_path / "distribution") as distribution:
        digests = fill(tmp_path, distribution.host)
    tree = tmp_path / "distribution" / "storage"
    storage = tmp_path / "portside-storage"
    config = tmp_path / "import.yml"
    config.write_text(yaml.safe_dump({"dev": {"storage_path": str(storage)}}))
    before = sorted(str(p) for p in tree.rglob("*"))

    planned = subprocess.run(
        import_command(config, tree, "--dry-run"), capture_output=True, text=True, timeout=120
    )
    assert planned.returncode == 0, planned.stderr
    assert "would import 3 repositories, 4 tags" in planned.stdout
    assert not (storage / "registry.db").exists()

    # Killed once it has put a first blob in place, then run again to the end.
    killed = subprocess.Popen(import_command(config, tree), stdout=subprocess.DEVNULL)
    deadline, blobs = time.monotonic() + 60, storage / "blobs"
    while killed.poll() is None and time.monotonic() < deadline:
        if blobs.is_dir() and any(blobs.rglob("*")):
            break
        time.sleep(0.01)
    assert killed.poll() is None, "the import ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    done = subprocess.run(import_command(config, tree), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported 3 repositories, 4 tags, 6 manifests" in done.stdout
    again = subprocess.run(import_command(config, tree), capture_output=True, text=True)
    assert "0 blobs (0 bytes) taken over" in again.stdout
    assert sorted(str(p) for p in tree.rglob("*")) == before  # the source is left as it was

    server = portside_factory(storage_path=str(storage))
    pulls_as_distribution_wrote(server, digests, tmp_path)
    with podman_for(tmp_path / "podman-pull", server.host) as podman:
        for reference in ("team/app:v1", "other/app:v2", "library/multi:multi"):
            podman(
                "pull",
                "--tls-verify=false",
                "--signature-policy",
                str(podman.policy),
                f"{server.host}/{reference}",
            )
        pulled = {tuple(i.get("Names") or ()) for i in podman.images()}
        assert any(f"{server.host}/team/app:v1" in names for names in pulled)
    missing = httpx.get(f"{server.url}/v2/team/app/manifests/{digests['deleted']}")
    assert missing.status_code == 404
