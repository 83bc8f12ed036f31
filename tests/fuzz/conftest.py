"""Hypothesis profiles, the run's seed, and the registries of the fuzz suite.

Profiles (PORTSIDE_FUZZ_PROFILE): `ci`, the default, keeps the whole of tests/fuzz to a few
minutes on two cores; `deep` runs some thirty times the examples and longer state machines.
The seed is random per run (derandomize stays off) and printed in the header and the summary;
rerun one with PORTSIDE_FUZZ_SEED=<seed>, or pytest's --hypothesis-seed=<seed>. Failing examples
are also kept in a hypothesis database outside the repository (PORTSIDE_FUZZ_DATABASE, default a
folder in the temporary directory), and replayed first on the next run.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter
from fuzz_registry import AUTH_MODES, BACKENDS, Fuzzed, open_registry
from hypothesis import Phase, Verbosity, settings
from hypothesis import core as hypothesis_core
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE_VARIABLE = "PORTSIDE_FUZZ_PROFILE"
SEED_VARIABLE = "PORTSIDE_FUZZ_SEED"
DATABASE_VARIABLE = "PORTSIDE_FUZZ_DATABASE"

_database = Path(
    os.environ.get(DATABASE_VARIABLE) or Path(tempfile.gettempdir()) / "portside-fuzz-examples"
)
settings.register_profile(
    "ci",
    max_examples=15,
    stateful_step_count=15,
    deadline=None,  # a request may take a while on a loaded CI machine: time is not a property
    derandomize=False,
    print_blob=True,
    database=DirectoryBasedExampleDatabase(_database),
    # No shrinking budget cut: a failure must come out minimal, that is the point of the report.
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
)
settings.register_profile(
    "deep", parent=settings.get_profile("ci"), max_examples=400, stateful_step_count=50
)
settings.register_profile("verbose", parent=settings.get_profile("ci"), verbosity=Verbosity.verbose)
PROFILE = os.environ.get(PROFILE_VARIABLE, "ci")
settings.load_profile(PROFILE)


def pytest_configure(config: pytest.Config) -> None:
    """Pick the run's seed unless --hypothesis-seed gave one: random, and said."""
    if config.getoption("hypothesis_seed", None) is None:
        seed = os.environ.get(SEED_VARIABLE) or str(random.randrange(2**32))
        hypothesis_core.global_force_seed = int(seed)


def _says() -> str:
    seed = hypothesis_core.global_force_seed
    return (
        f"portside fuzz: hypothesis profile {PROFILE!r}, seed {seed} "
        f"(rerun with {SEED_VARIABLE}={seed})"
    )


def pytest_report_header(config: pytest.Config) -> str:
    return _says()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    terminalreporter.write_line(_says())


@pytest.fixture(
    scope="module",
    params=[(backend, auth) for backend in BACKENDS for auth in AUTH_MODES],
    ids=lambda param: "-".join(param),
)
def fuzzed(request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    """A registry seeded with images, indexes, artifacts and uploads in progress, on each backend
    with auth off and on; shared by all the examples of all the tests of a module, so that what
    earlier examples pushed, tagged, started or deleted is part of the input of later ones."""
    backend, auth = request.param
    with open_registry(backend, auth) as registry:
        registry.seed()
        yield registry


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed_with_auth(request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    """A registry with Basic auth (alice, bob, admin), seeded, on each backend."""
    with open_registry(request.param, "auth-basic") as registry:
        registry.seed()
        yield registry


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed_without_auth(request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    """A registry with auth off, seeded, on each backend."""
    with open_registry(request.param, "auth-off") as registry:
        registry.seed()
        yield registry


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed_token(request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    """A registry with the built-in token service (bearer tokens), seeded, on each backend."""
    with open_registry(request.param, "auth-token") as registry:
        registry.seed()
        yield registry
