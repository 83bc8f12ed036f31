"""Thin wrappers over the C load generators (curl, wrk) and skopeo, which do the timed work.

Python only starts them and reads their verdicts, so the harness itself is never the bottleneck
of a throughput number.
"""

from __future__ import annotations

import collections
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin

# Generous enough for 256 MiB at a few MB/s; a registry that hangs fails the scenario, not the run.
TRANSFER_TIMEOUT_S = 300


class BenchError(RuntimeError):
    """A registry answered a benchmark request wrongly; the table shows "error" for it."""


@dataclass(frozen=True)
class CurlResponse:
    status: int
    location: str


def curl(
    method: str,
    url: str,
    *,
    body: Path | None = None,
    chunked: bool = False,
    headers: Sequence[str] = (),
) -> CurlResponse:
    """One request; the body, if any, is streamed from a file so curl never buffers it whole."""
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        str(TRANSFER_TIMEOUT_S),
        "--output",
        "/dev/null",
        "--write-out",
        r"%{http_code}\n%header{location}",
        "--request",
        method,
        # Without this curl sends `Expect: 100-continue` for big bodies and may wait a second.
        "--header",
        "Expect:",
    ]
    for header in headers:
        command += ["--header", header]
    if body is None:
        command += ["--header", "Content-Length: 0"]
    else:
        command += [
            "--upload-file",
            str(body),
            "--header",
            "Content-Type: application/octet-stream",
        ]
        if chunked:
            command += ["--header", "Transfer-Encoding: chunked"]
    command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"curl {method} failed: {done.stderr.strip()}")
    status, _, location = done.stdout.partition("\n")
    return CurlResponse(int(status), urljoin(url, location.strip()) if location.strip() else "")


def expect_status(response: CurlResponse, expected: int, what: str) -> None:
    if response.status != expected:
        raise BenchError(f"{what} answered {response.status}, expected {expected}")


def with_digest(location: str, digest: str) -> str:
    # Upload locations may already carry a query (distribution's `_state`): append, never replace.
    separator = "&" if "?" in location else "?"
    return f"{location}{separator}digest={quote(digest)}"


def download_concurrently(url: str, streams: int, expected_size: int) -> None:
    """GET `url` on `streams` parallel curl processes and check that each got every byte."""
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--location",
        "--max-time",
        str(TRANSFER_TIMEOUT_S),
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code} %{size_download}",
        url,
    ]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(streams)
    ]
    try:
        outcomes = [process.communicate() for process in processes]
    finally:
        for process in processes:
            process.kill()
    for (out, err), process in zip(outcomes, processes, strict=True):
        if process.returncode != 0:
            raise BenchError(f"curl GET failed: {err.strip()}")
        status, size = out.split()
        if status != "200" or int(size) != expected_size:
            raise BenchError(f"GET blob answered {status} with {size} of {expected_size} bytes")


@dataclass(frozen=True)
class LoadResult:
    succeeded: int
    failed: int
    seconds: float

    @property
    def succeeded_per_second(self) -> float:
        # Failed requests do not count: a registry answering errors fast must not win.
        return self.succeeded / self.seconds

    def failure_note(self) -> str | None:
        if not self.failed:
            return None
        return (
            f"{self.failed} of {self.succeeded + self.failed} requests failed (non-2xx or socket)"
        )


WRK_SCRIPT = """\
wrk.method = "{method}"
wrk.headers["Accept"] = "{accept}"
{authorization}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH-SUMMARY %d %d %d %d\\n", summary.requests, summary.duration,
                         e.status, e.connect + e.read + e.write + e.timeout))
end
"""
WRK_SUMMARY = re.compile(r"^BENCH-SUMMARY (\d+) (\d+) (\d+) (\d+)$", re.MULTILINE)


def wrk_get(
    url: str,
    accept: str,
    seconds: int,
    threads: int,
    connections: int,
    scratch: Path,
    authorization: str | None = None,
) -> LoadResult:
    """GET load with wrk; its Lua `done` hook prints exact counts instead of rounded prose."""
    script = scratch / "wrk-get.lua"
    login = f'wrk.headers["Authorization"] = "{authorization}"' if authorization else ""
    script.write_text(WRK_SCRIPT.format(method="GET", accept=accept, authorization=login))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    match = WRK_SUMMARY.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise BenchError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    # wrk counts a response with status >= 400 both in `requests` and in `errors.status`.
    requests, duration_us, bad_status, socket_errors = map(int, match.groups())
    return LoadResult(requests - bad_status, bad_status + socket_errors, duration_us / 1e6)


def curl_head_load(
    url: str, accept: str, seconds: int, connections: int, authorization: str | None = None
) -> LoadResult:
    """HEAD load for `seconds` with curl's parallel mode.

    wrk 4.1 cannot do HEAD: it waits for the body that Content-Length announces and never gets,
    so it would count zero requests. curl's parallel mode is C too, keeps `connections`
    keep-alive connections busy, and knows that a HEAD response has no body.
    """
    command = [
        # Line-buffered stdout, so the per-request status lines are not lost when curl is stopped.
        "stdbuf",
        "-oL",
        "curl",
        "--silent",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        str(connections),
        "--head",
        "--header",
        f"Accept: {accept}",
        *(["--header", f"Authorization: {authorization}"] if authorization else []),
        "--output",
        "/dev/null",
        "--write-out",
        r"%{http_code}\n",
        # A glob in the fragment makes curl repeat the request without changing what it sends
        # (the fragment never leaves the client); curl expands it lazily, so the range is free.
        f"{url}#[1-100000000]",
    ]
    statuses: collections.Counter[str] = collections.Counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    stdout = process.stdout

    def count_statuses() -> None:
        for line in stdout:
            statuses[line.strip()] += 1

    reader = threading.Thread(target=count_statuses, daemon=True)
    reader.start()
    started = time.perf_counter()
    try:
        process.wait(timeout=seconds)
        raise BenchError(f"curl stopped early with exit code {process.returncode}")
    except subprocess.TimeoutExpired:
        pass
    finally:
        process.terminate()
        process.wait()
    elapsed = time.perf_counter() - started
    reader.join()
    succeeded = sum(count for status, count in statuses.items() if status.startswith("2"))
    return LoadResult(succeeded, statuses.total() - succeeded, elapsed)


def skopeo_copy(source: str, destination: str) -> None:
    command = [
        "skopeo",
        # The harness owns both ends; no signature policy applies to throwaway random images.
        "--insecure-policy",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        source,
        destination,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TRANSFER_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"skopeo copy failed: {done.stderr.strip()}")
