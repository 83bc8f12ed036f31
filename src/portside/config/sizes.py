"""Sizes in config: a number of bytes, or one with a unit (`4MiB`, `1.5GB`)."""

from __future__ import annotations

import re
from decimal import Decimal

# Decimal (kB) and binary (KiB, or Kubernetes' Ki) units; a bare `K`, `M` or `G` is refused
# because tools disagree on whether it means 1000 or 1024.
_SIZE_UNITS = {"": 1, "b": 1} | {
    unit: base**power
    for power, prefix in enumerate("kmgt", start=1)
    for unit, base in ((f"{prefix}b", 1000), (f"{prefix}ib", 1024), (f"{prefix}i", 1024))
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(value: object) -> object:
    """Turn `4MiB`, `1.5GB` or `"4194304"` into a number of bytes; other values pass through."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 4194304, 4MiB or 10GiB, got {value!r}")
    if not isinstance(value, str):
        return value
    match = _SIZE.fullmatch(value)
    factor = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(
            f"expected a size such as 4194304, 4MiB or 10GiB (units B, kB, MB, GB, TB, "
            f"KiB, MiB, GiB, TiB), got {value!r}"
        )
    size = Decimal(match.group(1)) * factor
    if size != size.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(size)
