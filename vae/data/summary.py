"""``DataSummary``: what was read, what was skipped and why, and how it was split.

``to_dict()`` is the JSON printed by ``aitexvae data check --json``; its keys:

- ``format``, ``root``, ``patch_size``, ``stride``, ``resize``: what was read and how it was
  cut (``resize`` 0: native resolution);
- ``strips``: ``{"normal": n, "defective": n}`` strips used;
- ``fabrics``: ``{fabric: {"normal": n, "defective": n}}`` strips used per fabric;
- ``patches``: ``{"total": n, "anomalous": n}`` over all strips used (before splitting);
- ``splits``: ``{"train"|"val"|"real_val"|"test": {"strips": n, "patches": n, "anomalous": n,
  "synthetic": n}}`` (val's anomalous patches are its synthetic-defect copies; real_val only
  when defective strips were held out);
- ``skipped``: ``[{"file": path relative to root, "reason": text, "kind": group}]`` files not
  used (``kind`` is the reason without file details, for counting);
- ``notes``: ``[{"file": ..., "note": text, "kind": group}]`` files used with a remark (mode
  converted, masks unioned, non-standard name, edge-aligned last patch);
- ``cache``: ``{"hit": bool, "path": str | null}`` where the decoded patches live.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vae.data.layouts import Issue
from vae.data.readers import TOO_SMALL

EXAMPLES_PER_KIND = 3  # files listed under each kind of skip in the table (all in --json)


@dataclass
class DataSummary:
    format: str
    root: str
    patch_size: int
    stride: int
    resize: int = 0
    strips: dict[str, int] = field(default_factory=lambda: {"normal": 0, "defective": 0})
    fabrics: dict[str, dict[str, int]] = field(default_factory=dict)
    patches: dict[str, int] = field(default_factory=lambda: {"total": 0, "anomalous": 0})
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=lambda: {"hit": False, "path": None})

    def add_strip(self, fabric: str, defective: bool) -> None:
        kind = "defective" if defective else "normal"
        self.strips[kind] += 1
        per_fabric = self.fabrics.setdefault(fabric, {"normal": 0, "defective": 0})
        per_fabric[kind] += 1

    def skip(self, issue: Issue) -> None:
        self.skipped.append({"file": issue.file, "reason": issue.reason, "kind": issue.group})

    def note(self, issue: Issue) -> None:
        self.notes.append({"file": issue.file, "note": issue.reason, "kind": issue.group})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSummary:
        return cls(**data)

    def table(self) -> str:
        """Human-readable summary (what ``aitexvae data check`` prints); one line per kind."""
        resized = f", resized to {self.resize}x{self.resize}" if self.resize else ""
        lines = [f"data set  {self.root}  (format {self.format}, patches "
                 f"{self.patch_size}x{self.patch_size}, stride {self.stride}{resized})",
                 f"strips    normal {self.strips['normal']}, defective "
                 f"{self.strips['defective']}",
                 f"patches   {self.patches['total']} ({self.patches['anomalous']} anomalous)", "",
                 f"{'fabric':<12}{'normal':>8}{'defective':>11}"]
        for fabric in sorted(self.fabrics):
            counts = self.fabrics[fabric]
            lines.append(f"{fabric:<12}{counts['normal']:>8}{counts['defective']:>11}")
        if self.splits:
            lines += ["", f"{'split':<12}{'strips':>8}{'patches':>9}{'anomalous':>11}"
                          f"{'synthetic':>11}"]
            for name, c in self.splits.items():
                lines.append(f"{name:<12}{c['strips']:>8}{c['patches']:>9}{c['anomalous']:>11}"
                             f"{c['synthetic']:>11}")
        lines += ["", f"skipped   {len(self.skipped)} file(s)"]
        lines += skip_lines(self.skipped)
        hint = self.include_hint()
        if hint:
            lines.append(f"  hint: {hint}")
        lines.append(f"notes     {len(self.notes)} remark(s)")
        lines += [f"  {len(entries)} x {kind}" for kind, entries in by_kind(self.notes).items()]
        lines.append(f"cache     {'hit' if self.cache.get('hit') else 'built'}: "
                     f"{self.cache.get('path') or 'disabled'}")
        return "\n".join(lines)

    def include_hint(self) -> str | None:
        """The flags that would include images skipped as smaller than a patch, if any were."""
        small = sum(1 for s in self.skipped if s.get("kind") == TOO_SMALL)
        if not small:
            return None
        size = self.patch_size
        if self.format == "folder":
            return (f"{small} image(s) smaller than one {size}x{size} patch were skipped: "
                    f"--resize {size} resizes every image to {size}x{size} (one patch each; the "
                    "folder format's default), or a smaller --patch-size cuts them natively")
        # Strips are patched natively: a smaller patch keeps their scale, a resize would not.
        return (f"{small} image(s) smaller than one {size}x{size} patch were skipped: give a "
                "--patch-size no larger than their height (the small synthetic set's strips "
                "are 64 px high: --patch-size 64), or --resize to rescale them")


def skip_lines(skipped: list[dict[str, str]], examples: int = EXAMPLES_PER_KIND) -> list[str]:
    """One line per kind of skip with a count, then up to ``examples`` of its files."""
    lines = []
    for kind, entries in by_kind(skipped).items():
        lines.append(f"  {len(entries)} x {kind}")
        lines += [f"      {s['file']}: {s['reason']}" for s in entries[:examples]]
        if len(entries) > examples:
            lines.append(f"      ... and {len(entries) - examples} more (see --json)")
    return lines


def by_kind(entries: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    """Entries grouped by kind, largest group first (old caches' entries have no kind)."""
    groups: dict[str, list[dict[str, str]]] = {}
    for entry in entries:
        text = entry.get("reason", entry.get("note", ""))
        groups.setdefault(entry.get("kind") or text.split(":")[0], []).append(entry)
    return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])))
