"""``DataSummary``: what was read, what was skipped and why, and how it was split.

``to_dict()`` is the JSON printed by ``aitexvae data check --json``; its keys:

- ``format``, ``root``, ``patch_size``, ``stride``: what was read and how it was cut;
- ``strips``: ``{"normal": n, "defective": n}`` strips used;
- ``fabrics``: ``{fabric: {"normal": n, "defective": n}}`` strips used per fabric;
- ``patches``: ``{"total": n, "anomalous": n}`` over all strips used (before splitting);
- ``splits``: ``{"train"|"val"|"test": {"strips": n, "patches": n, "anomalous": n,
  "synthetic": n}}`` (val's anomalous patches are its synthetic-defect copies);
- ``skipped``: ``[{"file": path relative to root, "reason": text}]`` files not used;
- ``notes``: ``[{"file": ..., "note": text}]`` files used with a remark (mode converted, masks
  unioned, non-standard name, edge-aligned last patch);
- ``cache``: ``{"hit": bool, "path": str | null}`` where the decoded patches live.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vae.data.layouts import Issue


@dataclass
class DataSummary:
    format: str
    root: str
    patch_size: int
    stride: int
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
        self.skipped.append({"file": issue.file, "reason": issue.reason})

    def note(self, issue: Issue) -> None:
        self.notes.append({"file": issue.file, "note": issue.reason})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSummary:
        return cls(**data)

    def table(self, max_files: int = 20) -> str:
        """Human-readable summary (what ``aitexvae data check`` prints)."""
        lines = [f"data set  {self.root}  (format {self.format}, patches "
                 f"{self.patch_size}x{self.patch_size}, stride {self.stride})",
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
        lines += [f"  {s['file']}: {s['reason']}" for s in self.skipped[:max_files]]
        if len(self.skipped) > max_files:
            lines.append(f"  ... and {len(self.skipped) - max_files} more (see --json)")
        by_note = Counter(n["note"].split(":")[0] for n in self.notes)
        lines.append(f"notes     {len(self.notes)} remark(s)")
        lines += [f"  {count} x {note}" for note, count in sorted(by_note.items())]
        lines.append(f"cache     {'hit' if self.cache.get('hit') else 'built'}: "
                     f"{self.cache.get('path') or 'disabled'}")
        return "\n".join(lines)
