"""The parent run's overview: a table of trials and the objective against each searched dimension.

Built from the children as MLflow stores them (not from the driver's memory), so a resumed
search summarises trials from before the restart too.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FIXED_COLUMNS = ("trial_id", "run_id", "status", "stop_reason", "best_objective", "best_epoch",
                 "last_epoch", "nonfinite")


def searched_keys(rows: Sequence[Mapping[str, object]], param_keys: Sequence[str]) -> list[str]:
    """Params that take more than one value across the trials: the searched dimensions."""
    return [key for key in sorted(param_keys)
            if len({str(row.get(key, "")) for row in rows}) > 1]


def write_table(rows: Sequence[Mapping[str, object]], param_keys: Sequence[str], folder: Path
                ) -> tuple[Path, Path]:
    """``trials.csv`` and ``trials.html`` in ``folder``: best first, trials that went non-finite
    last (they can never be the champion, whatever they reported before)."""
    columns = [*FIXED_COLUMNS, *sorted(param_keys)]
    ordered = sorted(rows, key=lambda row: (bool(row.get("nonfinite")),
                                            -_number(row.get("best_objective"))))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in columns} for row in ordered)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "trials.csv"
    csv_path.write_text(buffer.getvalue())
    head = "".join(f"<th>{html.escape(column)}</th>" for column in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(row.get(column, '')))}</td>"
                                    for column in columns) + "</tr>\n" for row in ordered)
    html_path = folder / "trials.html"
    html_path.write_text("<html><body><table border='1' cellspacing='0' cellpadding='3'>\n"
                         f"<tr>{head}</tr>\n{body}</table></body></html>\n")
    return csv_path, html_path


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


def _numeric(values: Sequence[str]) -> list[float] | None:
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        return None
    return numbers if all(math.isfinite(n) for n in numbers) else None


def plot_summary(rows: Sequence[Mapping[str, object]], keys: Sequence[str], objective: str,
                 path: Path) -> Path | None:
    """One scatter panel per searched dimension: ``objective`` (best epoch) against its value.

    Trials without a finite objective (killed at once for NaN, failed) are drawn as crosses on
    the lower edge so they are visible rather than silently missing. Returns None without keys.
    """
    if not keys:
        return None
    finite = [_number(row.get("best_objective")) for row in rows]
    floor = min((v for v in finite if v > -math.inf), default=0.0)
    columns = min(3, len(keys))
    lines = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.2 * columns, 3.2 * lines), dpi=90)
    FigureCanvasAgg(figure)
    for position, key in enumerate(keys, start=1):
        axes = figure.add_subplot(lines, columns, position)
        values = [str(row.get(key, "")) or "-" for row in rows]  # "-": not set for this trial
        numbers = _numeric(values)
        if numbers is None:  # categorical: one position per category
            categories = sorted(set(values))
            xs = [categories.index(value) for value in values]
            axes.set_xticks(range(len(categories)), categories, rotation=30, fontsize=7)
        else:
            xs = numbers
            positive = [n for n in numbers if n > 0]
            if len(positive) == len(numbers) and max(numbers) / min(numbers) >= 100:
                axes.set_xscale("log")
        good = [(x, y) for x, y in zip(xs, finite, strict=True) if y > -math.inf]
        bad = [x for x, y in zip(xs, finite, strict=True) if y == -math.inf]
        if good:
            axes.scatter(*zip(*good, strict=True), s=22, color="tab:blue")
        if bad:
            axes.scatter(bad, [floor] * len(bad), marker="x", color="tab:red", s=22)
        axes.set_xlabel(key, fontsize=8)
        axes.set_ylabel(objective, fontsize=8)
        axes.tick_params(labelsize=7)
    figure.suptitle(f"{objective} (best epoch) per trial; red x: no finite value", fontsize=9)
    # Fixed margins: tight_layout measures every label and took ~0.5 s of the search's tail.
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.18, top=0.88, wspace=0.35,
                           hspace=0.6)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
