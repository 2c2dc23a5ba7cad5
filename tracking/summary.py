"""The parent run's overview: a table of trials and the objective against each searched dimension.

Built from the children as MLflow stores them (not from the driver's memory), so a resumed
search summarises trials from before the restart too.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

FIXED_COLUMNS = ("trial_id", "run_id", "status", "stop_reason", "best_objective", "best_epoch",
                 "last_epoch", "nonfinite")


def searched_keys(rows: Sequence[Mapping[str, object]], param_keys: Sequence[str]) -> list[str]:
    """Params that take more than one value across the trials: the searched dimensions."""
    return [key for key in sorted(param_keys)
            if len({str(row.get(key, "")) for row in rows}) > 1]


def write_table(rows: Sequence[Mapping[str, object]], param_keys: Sequence[str], folder: Path,
                run_link: Callable[[str], str] | None = None) -> tuple[Path, Path]:
    """``trials.csv`` and ``trials.html`` in ``folder``: best first, trials that went non-finite
    last (they can never be the champion, whatever they reported before).

    The CSV keeps every value as MLflow holds it; the HTML page is for reading: numbers to 4
    significant digits, searched params only, and each run id linked to its run when
    ``run_link`` (run id -> the run's address in an http(s) server's UI) is given.
    """
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
    # One trial has no varying param: show them all then, else only the searched ones.
    shown = [*FIXED_COLUMNS, *(searched_keys(rows, param_keys) if len(rows) > 1
                               else sorted(param_keys))]
    # Headers may break after a "/" (model/<wbr>latent_dim), never inside a word.
    head = "".join(f"<th>{html.escape(column).replace('/', '/<wbr>')}</th>" for column in shown)
    body = "".join("<tr>" + "".join(_cell(column, row.get(column, ""), run_link)
                                    for column in shown) + "</tr>\n" for row in ordered)
    html_path = folder / "trials.html"
    html_path.write_text(f"<!doctype html>\n<html><head><meta charset='utf-8'>"
                         f"<title>trials</title><style>{TABLE_STYLE}</style></head><body>\n"
                         f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>"
                         "</table>\n</body></html>\n")
    return csv_path, html_path


TABLE_STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:14px;margin:12px}"
    "table{border-collapse:collapse}"
    "th,td{padding:4px 8px;border-bottom:1px solid #ddd;max-width:18em;overflow-wrap:break-word;"
    "vertical-align:top}"
    "td.id{white-space:nowrap;font-family:ui-monospace,monospace}"
    "td.long{min-width:16em}"
    "th{position:sticky;top:0;background:#f3f5f7;text-align:left;font-weight:600}"
    "tbody tr:nth-child(even){background:#fafbfc}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "a{color:#0b63c5;text-decoration:none}")


def _cell(column: str, value: object, run_link: Callable[[str], str] | None) -> str:
    text = str(value)
    if column == "run_id" and run_link and text:
        return (f"<td class='id'><a href='{html.escape(run_link(text), quote=True)}' "
                f"target='_blank'>{html.escape(text[:12])}</a></td>")
    if column in ("trial_id", "run_id", "status"):
        return f"<td class='id'>{html.escape(text)}</td>"
    rounded = _rounded(text)
    if rounded is not None:
        return f"<td class='num'>{html.escape(rounded)}</td>"
    return f"<td{' class=long' if len(text) > 24 else ''}>{html.escape(text)}</td>"


def _rounded(text: str) -> str | None:
    """A number to 4 significant digits (integers as they are); None for other text."""
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or (number.is_integer() and "." not in text and "e" not in text):
        return text
    return f"{number:.4g}"


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


# How a trial ended, as the plot draws it: (label, marker, face colour, edge colour, size).
KINDS = {"champion": ("champion", "*", "gold", "black", 220),
         "complete": ("ran every epoch", "o", "tab:blue", "tab:blue", 36),
         "early": ("stopped early by the scheduler", "o", "none", "tab:blue", 36),
         "interrupted": ("left unfinished (interrupted)", "s", "none", "tab:gray", 36),
         "no value": ("failed or non-finite (no value: at the bottom)", "x", "tab:red", "tab:red",
                      40)}
PANEL_IN, MARGIN_TOP_IN, MARGIN_BOTTOM_IN = (4.4, 3.3), 0.9, 0.25
DPI = 100


def trial_kind(row: Mapping[str, object], champion: str | None) -> str:
    """champion | complete | early (stopped by the scheduler) | interrupted (KILLED: the search
    was) | no value (failed, non-finite)."""
    if _number(row.get("best_objective")) == -math.inf or row.get("nonfinite") \
            or row.get("status") == "FAILED":
        return "no value"
    if champion is not None and row.get("trial_id") == champion:
        return "champion"
    if row.get("status") == "KILLED":
        return "interrupted"
    return "early" if row.get("stop_reason") else "complete"


def plot_summary(rows: Sequence[Mapping[str, object]], keys: Sequence[str], objective: str,
                 path: Path, champion: str | None = None,
                 log_keys: Collection[str] | None = None) -> Path | None:
    """One scatter panel per searched dimension: ``objective`` (best epoch) against its value.

    The champion is a gold star; trials the scheduler stopped early are hollow, complete ones
    filled, ones an interrupted search left unfinished grey squares; trials without a finite objective (non-finite, failed) are red crosses on the
    lower edge, so they are visible rather than silently missing. The legend lists only the
    kinds present. A dimension in ``log_keys`` (the space's log-uniform ones) gets a log axis;
    without ``log_keys`` (a resumed search without its space), a positive one spanning two
    decades does. Returns None without keys.
    """
    if not keys:
        return None
    figure = summary_figure(rows, keys, objective, champion, log_keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def summary_figure(rows: Sequence[Mapping[str, object]], keys: Sequence[str], objective: str,
                    champion: str | None, log_keys: Collection[str] | None) -> Figure:
    finite = [_number(row.get("best_objective")) for row in rows]
    floor = min((v for v in finite if v > -math.inf), default=0.0)
    kinds = [trial_kind(row, champion) for row in rows]
    columns = min(3, len(keys))
    lines = math.ceil(len(keys) / columns)
    width, height = PANEL_IN[0] * columns, PANEL_IN[1] * lines + MARGIN_TOP_IN + MARGIN_BOTTOM_IN
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    for position, key in enumerate(keys, start=1):
        axes = figure.add_subplot(lines, columns, position)
        values = [str(row.get(key, "")) or "-" for row in rows]  # "-": not set for this trial
        numbers = _numeric(values)
        if numbers is None:  # categorical: one position per category
            categories = sorted(set(values))
            xs = [float(categories.index(value)) for value in values]
            axes.set_xticks(range(len(categories)), categories, rotation=20, ha="right")
            axes.set_xlim(-0.5, len(categories) - 0.5)
        else:
            xs = numbers
            if _log_axis(key, numbers, log_keys):
                _log_scale(axes, min(numbers), max(numbers))
        for kind in KINDS:  # the champion last, on top
            if kind == "champion":
                continue
            _scatter(axes, kind, xs, finite, kinds, floor)
        _scatter(axes, "champion", xs, finite, kinds, floor)
        axes.set_xlabel(key, fontsize=10)
        axes.set_ylabel(objective, fontsize=10)
        axes.tick_params(labelsize=9)
        axes.grid(alpha=0.25)
    present = [kind for kind in KINDS if kind in kinds]
    handles = [Line2D([], [], linestyle="none", marker=KINDS[k][1], markerfacecolor=KINDS[k][2],
                      markeredgecolor=KINDS[k][3], color=KINDS[k][3],
                      markersize=math.sqrt(KINDS[k][4])) for k in present]
    labels = [KINDS[k][0] + (f" (trial {champion})" if k == "champion" else "") for k in present]
    figure.legend(handles, labels, loc="upper center", ncol=len(present), fontsize=10,
                  frameon=False, bbox_to_anchor=(0.5, 1 - 0.42 / height))
    figure.suptitle(f"{objective} at each trial's best epoch, per searched dimension",
                    fontsize=12, y=1 - 0.08 / height)
    # Fixed margins in inches (tight_layout measures every label: ~0.5 s of the search's tail),
    # so no band is left blank whatever the number of panels.
    figure.subplots_adjust(left=0.8 / width, right=1 - 0.15 / width,
                           bottom=(MARGIN_BOTTOM_IN + 0.55) / height,
                           top=1 - MARGIN_TOP_IN / height, wspace=0.32,
                           hspace=0.95 / PANEL_IN[1])
    return figure


def _log_scale(axes, low: float, high: float) -> None:
    """A log x axis with plain labels (0.0005, 0.001): matplotlib's default labels minor ticks
    within a decade as overlapping "2×10⁻³" strings."""
    axes.set_xscale("log")
    subs = (1.0,) if math.log10(high / low) > 1.5 else (1.0, 2.0, 5.0)
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _log_axis(key: str, numbers: Sequence[float], log_keys: Collection[str] | None) -> bool:
    if log_keys is not None:
        return key in log_keys and min(numbers) > 0
    return min(numbers) > 0 and max(numbers) / min(numbers) >= 100


def _scatter(axes, kind: str, xs: Sequence[float], ys: Sequence[float], kinds: Sequence[str],
             floor: float) -> None:
    points = [(x, y if y > -math.inf else floor)
              for x, y, k in zip(xs, ys, kinds, strict=True) if k == kind]
    if points:
        _, marker, face, edge, size = KINDS[kind]
        colours = {"c": edge} if marker == "x" else {"facecolors": face, "edgecolors": edge}
        axes.scatter(*zip(*points, strict=True), marker=marker, s=size, linewidths=1.2,
                     zorder=3 if kind == "champion" else 2, **colours)
