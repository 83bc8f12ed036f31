"""A real Docker engine for the e2e tests: `dockerd` from Debian's docker.io package, run by the
tests themselves (never the machine's engine or /var/lib/docker), and the package's `docker` CLI
with a config folder of the test's own, so that `docker login` never touches /root/.docker.

The engine keeps everything in two folders of its own: the data root (vfs storage, no overlay
mounts) and a short exec root under /tmp, which holds the socket of the containerd that dockerd
starts and manages (unix socket paths must stay under 108 characters). It has no bridge and no
iptables rules: push, pull, import, tag, save, rmi, login and search need no container network.
Its daemon.json is written from `daemon_settings`, e.g. `{"registry-mirrors": [url]}`; 127.0.0.0/8
is an insecure registry for dockerd already (HTTPS is tried first, then plain HTTP).

Images cannot come from Docker Hub here: `Docker.import_image` builds one from a tiny root file
system made with tarfile (a random /hello.txt, so each test's image and layer are new).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from .clients import COMMAND_TIMEOUT, Completed

# The package's binaries, not whatever `docker` comes first on PATH (/usr/local/bin may hold a
# newer CLI that CI machines do not have).
DOCKERD = Path("/usr/sbin/dockerd")
DOCKER_CLI = Path("/usr/bin/docker")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
LOG_TAIL = 40
MNT_DETACH = 2

# What the CLI must not inherit from the environment: it talks to our engine, nothing else.
CLI_ENV_DROPPED = ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS")


class EngineUnavailable(Exception):
    """dockerd is not installed, or exited before answering (the reason is in the message)."""


class DockerEngine:
    """One dockerd: its log and daemon.json under `base` (kept after stop, for failures); data
    root, exec root, pid file and socket in a short folder under /tmp (removed at stop)."""

    def __init__(self, base: Path, daemon_settings: dict[str, Any] | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.base = base
        self.log_path = base / "dockerd.log"
        self.config_path = base / "daemon.json"
        # Keys of daemon.json; none may repeat a command-line flag of start() (dockerd refuses
        # a setting given both ways).
        self.daemon_settings = dict(daemon_settings or {})
        self.run_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def socket(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "sock"

    @property
    def host(self) -> str:
        """DOCKER_HOST for this engine."""
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "data"

    @property
    def exec_root(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "exec"

    # Lifecycle ----------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start dockerd and wait (bounded) until `docker version` answers. Raises
        EngineUnavailable when dockerd is missing or exits first, RuntimeError on a timeout."""
        assert self.process is None, "already running"
        if not DOCKERD.exists() or not DOCKER_CLI.exists():
            raise EngineUnavailable("docker.io is not installed (apt-get install docker.io)")
        self.run_dir = Path(tempfile.mkdtemp(prefix="e2e-docker-", dir="/tmp"))
        settings = {
            # dockerd 20.10 writes its trust key to /etc/docker/key.json unless told otherwise.
            "deprecated-key-path": str(self.run_dir / "key.json"),
            **self.daemon_settings,
        }
        self.config_path.write_text(json.dumps(settings, indent=2))
        command = [
            str(DOCKERD),
            "--config-file",
            str(self.config_path),
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--bridge=none",
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.run_dir / "dockerd.pid"),
            "-H",
            self.host,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        # dockerd finds containerd, runc and docker-init on PATH.
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"--- e2e: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = began + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise EngineUnavailable(
                    f"dockerd exited with {code} before answering: {self.failure_reason()}"
                )
            if self.socket.exists():
                answer = self._cli("version", "--format", "{{.Server.Version}}")
                if answer.returncode == 0:
                    self.startup_seconds = time.monotonic() - began
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"dockerd did not answer `docker version` within {timeout}s:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to dockerd (it stops its containerd), then SIGKILL after timeout; then the
        containerd it may have left, every mount left under the folders, and the folders."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        if self.run_dir is None:
            return
        # containerd runs in a session of its own, so the group kill above does not reach it.
        self._kill_pid_file(self.exec_root / "containerd" / "containerd.pid")
        for mount in reversed(_mounts_under(self.run_dir)):
            _detach(mount)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir = None

    @staticmethod
    def _kill_pid_file(pid_file: Path, timeout: float = 10.0) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # Inspection ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def failure_reason(self) -> str:
        """What dockerd said last in this run: its last error or fatal line, else its last lines
        (a refused daemon.json is a plain line: `unable to configure the Docker daemon ...`)."""
        lines = self.log_text().split("--- e2e: ")[-1].splitlines()[1:]
        for line in reversed(lines):
            if "level=fatal" in line or "level=error" in line:
                return line
        return "\n".join(lines[-5:]) or "(nothing in its log)"

    def _cli(self, *args: str) -> Completed:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.base / "cli-probe")
        return subprocess.run(
            [str(DOCKER_CLI), *args], env=env, capture_output=True, text=True, timeout=30
        )

    def client(self, config_dir: Path) -> Docker:
        return Docker(self, config_dir)


class Docker:
    """The docker CLI of the package, on one engine, with DOCKER_CONFIG of its own (config.json:
    what `docker login` writes)."""

    def __init__(self, engine: DockerEngine, config_dir: Path) -> None:
        config_dir.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        self.config_dir = config_dir
        self.env = {
            k: v for k, v in os.environ.items() if k not in CLI_ENV_DROPPED and k != "DOCKER_HOST"
        }
        self.env["DOCKER_HOST"] = engine.host
        self.env["DOCKER_CONFIG"] = str(config_dir)

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        input: str | None = None,
    ) -> Completed:
        """Run `docker ARGS`; on failure (with check) raise AssertionError showing its output and
        the tail of the engine's log."""
        cmd = [str(DOCKER_CLI), *args]
        result = subprocess.run(
            cmd,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)}\nexited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}\n"
                f"--- dockerd log (last {LOG_TAIL} lines)\n{self.engine.log_tail()}"
            )
        return result

    def login(self, host: str, user: str, secret: str) -> Completed:
        """`docker login` with the password on stdin, as an operator would script it."""
        return self(
            "login", "--username", user, "--password-stdin", host, input=secret + "\n", check=False
        )

    def logout(self, host: str) -> Completed:
        return self("logout", host)

    def auths(self) -> dict[str, Any]:
        """The `auths` of config.json (what login stored), empty when there is none."""
        path = self.config_dir / "config.json"
        if not path.exists():
            return {}
        auths: dict[str, Any] = json.loads(path.read_text()).get("auths", {})
        return auths

    def import_image(self, reference: str, files: dict[str, bytes]) -> str:
        """`docker import` of a root file system holding files (path → content) as reference;
        returns the image id (the digest of its config)."""
        archive = self.config_dir.parent / f"rootfs-{os.urandom(4).hex()}.tar"
        archive.write_bytes(rootfs_tar(files))
        try:
            result = self("import", str(archive), reference)
        finally:
            archive.unlink()
        return result.stdout.strip()

    def inspect(self, reference: str) -> dict[str, Any]:
        result = self("image", "inspect", reference)
        images: list[dict[str, Any]] = json.loads(result.stdout)
        return images[0]

    def has_image(self, reference: str) -> bool:
        return self("image", "inspect", reference, check=False).returncode == 0

    def push(self, reference: str) -> str:
        """Push; returns the manifest digest docker reports (`TAG: digest: sha256:... size: N`)."""
        return _reported_digest(self("push", reference).stdout, "digest: ")

    def pull(self, reference: str) -> str:
        """Pull; returns the manifest digest docker reports (`Digest: sha256:...`)."""
        return _reported_digest(self("pull", reference).stdout, "Digest: ")

    def saved_files(self, reference: str) -> dict[str, bytes]:
        """The regular files of an image's layers, as `docker save` writes them (later layers
        win), without running a container."""
        saved = self.config_dir.parent / f"saved-{os.urandom(4).hex()}.tar"
        self("save", "--output", str(saved), reference)
        try:
            return _files_of_saved_image(saved)
        finally:
            saved.unlink()

    def saved_layer_digests(self, reference: str) -> list[str]:
        """sha256 of each layer tar in `docker save` output (the image's diff_ids, in order)."""
        saved = self.config_dir.parent / f"saved-{os.urandom(4).hex()}.tar"
        self("save", "--output", str(saved), reference)
        try:
            with tarfile.open(saved) as outer:
                manifest = json.loads(_member_bytes(outer, "manifest.json"))
                return [_sha256(_member_bytes(outer, name)) for name in manifest[0]["Layers"]]
        finally:
            saved.unlink()


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of a tiny root file system: each file (mode 0644) with its folders."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders: set[str] = set()
        for path, content in sorted(files.items()):
            name = path.lstrip("/")
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in folders:
                    folders.add(folder)
                    info = tarfile.TarInfo(folder)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _reported_digest(output: str, marker: str) -> str:
    for line in output.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].split()[0]
    raise AssertionError(f"no {marker!r} in docker's output:\n{output}")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    extracted = tar.extractfile(name)
    assert extracted is not None, f"{name} is not a file"
    return extracted.read()


def _files_of_saved_image(saved: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(saved) as outer:
        manifest = json.loads(_member_bytes(outer, "manifest.json"))
        for layer_name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(_member_bytes(outer, layer_name))) as layer:
                for member in layer.getmembers():
                    if member.isfile():
                        files["/" + member.name.removeprefix("./")] = _member_bytes(
                            layer, member.name
                        )
    return files


def _mounts_under(folder: Path) -> list[str]:
    """Mount points at or under folder, in mount order (from /proc/self/mountinfo)."""
    prefix = str(folder)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def _detach(mount_point: str) -> None:
    """umount2(MNT_DETACH): dockerd bind-mounts its data root onto itself and may leave it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(mount_point.encode(), MNT_DETACH)


def started_engine(base: Path, daemon_settings: dict[str, Any] | None = None) -> DockerEngine:
    """A running engine (daemon.json: daemon_settings); skips the test, with dockerd's reason,
    when it cannot run here. The caller stops it."""
    engine = DockerEngine(base, daemon_settings)
    try:
        engine.start()
    except EngineUnavailable as error:
        pytest.skip(str(error))
    return engine
