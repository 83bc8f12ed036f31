"""How long a login with `offline_token=true` takes on a fresh registry and on one after N
earlier such logins: each hands out a refresh token, which the token service must store. The two
figures must be alike, whatever N.

    .venv/bin/python bench/refresh_logins.py                  # SQLite files in a temp folder
    .venv/bin/python bench/refresh_logins.py --database-url postgresql+psycopg://.../a ...b

In process (httpx over ASGI, no network, one client): what is measured is the token endpoint,
the password check (cached after the first bcrypt) and storing the refresh token. The two
registries are timed in alternating rounds, so that other load on the machine weighs on both.
Databases given must be empty (fresh PostgreSQL schemas, say).

Measured on 2 cores shared with other work (medians of 200 logins each):

    store                         after 1 login   after 3,001 logins   3,000 logins
    JSON file (before, 353ce25)   25.6 ms         216.6 ms             282 s   (load 4-6)
    metadata database, SQLite     13.2 ms          11.8 ms              35 s   (load 4-6)
    metadata database, SQLite      2.0 ms           1.8 ms              13 s   (load 3)
    metadata database, PostgreSQL  8.4 ms           8.2 ms              19 s   (load 3)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from portside.auth.htpasswd import add_user
from portside.config.settings import Settings
from portside.metadata.migrate import upgrade
from portside.server.app import create_app

USER, PASSWORD = "alice", "alice-Secret-1"


async def login(client: httpx.AsyncClient, headers: dict[str, str]) -> float:
    """One login with offline_token; its duration in seconds."""
    started = time.perf_counter()
    response = await client.get(
        "/auth/token",
        params={"service": "registry.bench", "offline_token": "true", "client_id": "bench"},
        headers=headers,
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"]
    return elapsed


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[int(len(ms) * 0.9)]
    return f"median {statistics.median(ms):6.2f} ms  p90 {p90:6.2f} ms  ({len(ms)} logins)"


async def registry(root: Path, database_url: str | None) -> httpx.AsyncClient:
    """A client on a fresh registry with the token service, under root."""
    root.mkdir()
    htpasswd = root / "htpasswd"
    add_user(htpasswd, USER, PASSWORD, rounds=4)
    settings = Settings(
        storage_path=root / "registry",
        database_url=database_url,
        workers=1,
        auth={
            "htpasswd": {"path": str(htpasswd)},
            "token": {"service": "registry.bench"},
            "access": {"user_namespaces": True},
        },
    )
    Path(settings.storage_path).mkdir(parents=True, exist_ok=True)
    upgrade(settings.metadata_url)
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://registry.bench")


async def run(root: Path, logins: int, samples: int, rounds: int, urls: list[str | None]) -> None:
    """Two registries: one fresh, one after `logins` logins; timed in alternating rounds, so
    that the load of the machine weighs on both alike."""
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Authorization": f"Basic {credentials}"}
    fresh = await registry(root / "fresh", urls[0])
    filled = await registry(root / "filled", urls[1])
    async with fresh, filled:
        await login(fresh, headers)  # bcrypt once, imports, caches
        started = time.perf_counter()
        for _ in range(logins):
            await login(filled, headers)
        print(f"{logins} logins in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {"fresh": [], "filled": []}
        per_round = max(1, samples // rounds)
        for _ in range(rounds):
            times["fresh"] += [await login(fresh, headers) for _ in range(per_round)]
            times["filled"] += [await login(filled, headers) for _ in range(per_round)]
        print(f"after {1:>6} prior login:  {summary(times['fresh'])}")
        print(f"after {logins + 1:>6} prior logins: {summary(times['filled'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=3000, help="earlier logins (default 3000)")
    parser.add_argument("--samples", type=int, default=200, help="logins timed at each point")
    parser.add_argument("--rounds", type=int, default=10, help="alternations of the two")
    parser.add_argument(
        "--database-url",
        nargs=2,
        metavar=("FRESH", "FILLED"),
        default=[None, None],
        help="two empty databases; default SQLite files in a temp dir",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portside-refresh-") as root:
        asyncio.run(run(Path(root), args.logins, args.samples, args.rounds, args.database_url))


if __name__ == "__main__":
    main()
