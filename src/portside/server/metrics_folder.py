"""Where the workers of `portside serve` keep their metrics: a folder made for this server alone
(mode 0700, under the temporary folder), named to prometheus_client by PROMETHEUS_MULTIPROC_DIR
before the workers start, and removed when the server stops. A fresh folder each start, as
prometheus_client asks: values a stopped server left must not add to the new one's."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from portside.metrics.export import MULTIPROCESS_VARIABLE


@contextlib.contextmanager
def worker_metrics_folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="portside-metrics-"))
    previous = os.environ.get(MULTIPROCESS_VARIABLE)
    os.environ[MULTIPROCESS_VARIABLE] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            del os.environ[MULTIPROCESS_VARIABLE]
        else:
            os.environ[MULTIPROCESS_VARIABLE] = previous
        shutil.rmtree(path, ignore_errors=True)
