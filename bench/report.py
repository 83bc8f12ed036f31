"""Collect samples per scenario and registry, reduce them to medians, print and save them."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from registries import DISTRIBUTION, PORTSIDE

COLUMN_TITLES = {PORTSIDE: "Portside", DISTRIBUTION: "distribution"}


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
    cells: dict[str, Cell] = field(default_factory=lambda: {name: Cell() for name in COLUMN_TITLES})

    @property
    def ratio(self) -> float | None:
        """Portside / distribution; every unit is higher-is-better, so above 1 Portside wins."""
        portside, distribution = self.cells[PORTSIDE].median, self.cells[DISTRIBUTION].median
        if portside is None or not distribution:
            return None
        return portside / distribution


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


def format_ratio(row: Row) -> str:
    ratio = row.ratio
    return "-" if ratio is None else f"{ratio:.2f}"


def footnotes(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        for name, cell in row.cells.items():
            for message in cell.errors + cell.notes:
                first_line = message.strip().splitlines()[0] if message.strip() else "?"
                lines.append(f"* {COLUMN_TITLES[name]}, {row.name}: {first_line}")
    return lines


def text_table(rows: list[Row]) -> str:
    header = ["scenario", "unit", *COLUMN_TITLES.values(), "ratio"]
    body = [
        [
            row.title,
            row.unit,
            *(format_cell(row.cells[name]) for name in COLUMN_TITLES),
            format_ratio(row),
        ]
        for row in rows
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
    lines = [
        "| scenario | " + " | ".join(COLUMN_TITLES.values()) + " | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = " | ".join(format_cell(row.cells[name]) for name in COLUMN_TITLES)
        lines.append(f"| {row.title} ({row.unit}) | {cells} | {format_ratio(row)} |")
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
