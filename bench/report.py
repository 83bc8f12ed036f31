"""Collect samples per scenario and registry, reduce them to medians, print and save them."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from registries import (
    DISTRIBUTION,
    DISTRIBUTION_REDIRECT,
    FLOOR,
    PORTSIDE,
    PORTSIDE_PLAIN,
    PORTSIDE_POLICIES,
    PORTSIDE_REDIRECT,
    REGISTRY_NAMES,
)

COLUMN_TITLES = {
    PORTSIDE: "Portside",
    DISTRIBUTION: "distribution",
    PORTSIDE_REDIRECT: "Portside redirect",
    DISTRIBUTION_REDIRECT: "distribution redirect",
    PORTSIDE_PLAIN: "Portside, all off",
    PORTSIDE_POLICIES: "Portside, policies",
    FLOOR: "floor (granian alone)",
}
# Each ratio compares the two registries on the same storage setup; its column follows theirs.
RATIOS = (
    (PORTSIDE, DISTRIBUTION, "ratio"),
    (PORTSIDE_REDIRECT, DISTRIBUTION_REDIRECT, "ratio redirect"),
    # --metrics-ab: what metrics cost, Portside with them over Portside without.
    (PORTSIDE, PORTSIDE_PLAIN, "on/off"),
    # --policies-ab: what quotas and immutable tags cost, Portside with them over without.
    (PORTSIDE_POLICIES, PORTSIDE, "policies/none"),
    # --floor: about the most a registry served by granian could reach.
    (FLOOR, DISTRIBUTION, "floor ratio"),
)


@dataclass
class Cell:
    """All samples of one scenario on one registry, and what went wrong along the way."""

    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None


@dataclass
class Row:
    name: str
    title: str
    unit: str
    columns: tuple[str, ...] = REGISTRY_NAMES
    cells: dict[str, Cell] = field(init=False)

    def __post_init__(self) -> None:
        self.cells = {name: Cell() for name in self.columns}

    @property
    def ratio(self) -> float | None:
        return self.ratio_of(PORTSIDE, DISTRIBUTION)

    def ratio_of(self, portside: str, distribution: str) -> float | None:
        """Portside / distribution; every unit is higher-is-better, so above 1 Portside wins."""
        if portside not in self.cells or distribution not in self.cells:
            return None
        numerator, denominator = self.cells[portside].median, self.cells[distribution].median
        if numerator is None or not denominator:
            return None
        return numerator / denominator


def layout(columns: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """The table's value columns: (title, registry, None) for a registry's medians, (title,
    portside, distribution) for a ratio, which follows the pair it compares."""
    found: list[tuple[str, str, str | None]] = []
    for name in columns:
        found.append((COLUMN_TITLES[name], name, None))
        for portside, distribution, title in RATIOS:
            if name == distribution and portside in columns:
                found.append((title, portside, distribution))
    return found


def render_value(row: Row, column: tuple[str, str, str | None]) -> str:
    _, name, distribution = column
    if distribution is None:
        return format_cell(row.cells[name])
    ratio = row.ratio_of(name, distribution)
    return "-" if ratio is None else f"{ratio:.2f}"


def format_value(value: float) -> str:
    # Three significant digits are all the precision a noisy 2-core machine can back.
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_cell(cell: Cell) -> str:
    median = cell.median
    if median is None:
        return "error" if cell.errors else "-"
    # A mark sends the reader to the footnotes: some rounds failed or answered errors.
    return format_value(median) + (" *" if cell.errors or cell.notes else "")


def footnotes(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        for name, cell in row.cells.items():
            for message in cell.errors + cell.notes:
                first_line = message.strip().splitlines()[0] if message.strip() else "?"
                lines.append(f"* {COLUMN_TITLES[name]}, {row.name}: {first_line}")
    return lines


def text_table(rows: list[Row]) -> str:
    columns = layout(rows[0].columns if rows else REGISTRY_NAMES)
    header = ["scenario", "unit", *(title for title, _, _ in columns)]
    body = [
        [row.title, row.unit, *(render_value(row, column) for column in columns)] for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def render(line: list[str]) -> str:
        # Text columns left-aligned, numbers right-aligned so their digits line up.
        cells = [
            text.ljust(width) if i < 2 else text.rjust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * width for width in widths)
    lines = [render(header), rule, *(render(line) for line in body), "", *footnotes(rows)]
    return "\n".join(lines).rstrip()


def markdown_table(rows: list[Row]) -> str:
    columns = layout(rows[0].columns if rows else REGISTRY_NAMES)
    lines = [
        "| scenario | " + " | ".join(title for title, _, _ in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for row in rows:
        cells = " | ".join(render_value(row, column) for column in columns)
        lines.append(f"| {row.title} ({row.unit}) | {cells} |")
    # The footnotes start with "* ", so markdown renders them as a list under the table.
    return "\n".join([*lines, "", *footnotes(rows)]).rstrip()


def write_json(path: Path, rows: list[Row], run_info: dict[str, object]) -> None:
    results = {
        **run_info,
        "scenarios": [
            {
                "name": row.name,
                "title": row.title,
                "unit": row.unit,
                "ratio_portside_over_distribution": row.ratio,
                "ratios": {
                    title: row.ratio_of(portside, distribution)
                    for portside, distribution, title in RATIOS
                    if portside in row.cells and distribution in row.cells
                },
                "registries": {
                    name: {
                        "median": cell.median,
                        "samples": cell.samples,
                        "errors": cell.errors,
                        "notes": cell.notes,
                    }
                    for name, cell in row.cells.items()
                },
            }
            for row in rows
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
