"""Find the strips of a data set on disk (no decoding): AITEX or a generic folder layout.

AITEX quirks and what the scan does with each (decoding quirks live in ``readers``):
- a defect image with ``_mask1``/``_mask2`` files: all of its masks are used (their union);
- a defect image without any mask: skipped and counted — its pixels cannot be labelled;
- a name that is not ``nnnn_ddd_ff`` but still three numeric fields (``0018_00_01.png`` in a
  defect-free folder): used — the folder says defect-free, the last field is the fabric — and
  listed as a note; names that do not parse, non-PNG names, masks without an image, and codes
  that contradict their folder (``000`` in Defect_images, non-zero in NODefect_images) are
  skipped and counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from vae.data.errors import AITEX_LAYOUT, FOLDER_LAYOUT, LayoutError

STRICT_NAME = re.compile(r"^(\d{4})_(\d{3})_(\d{2})$")
LENIENT_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)$")
MASK_NAME = re.compile(r"^(?P<stem>.+)_mask(?P<n>\d*)$")
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class StripSource:
    """Where one strip's image and masks are, and what its name says."""

    strip: str  # relative path of the image without suffix: unique within the root
    image: Path
    masks: tuple[Path, ...]
    fabric: str
    defect_code: str
    defective: bool
    split_hint: str | None = None


@dataclass(frozen=True)
class Issue:
    """A file that was skipped (or used with a note), with the reason.

    ``kind`` groups issues in summaries ("412 x not covered by whole strides"); by default it
    is the reason up to its first colon, so give one when the reason starts with file details.
    """

    file: str
    reason: str
    kind: str = ""

    @property
    def group(self) -> str:
        return self.kind or self.reason.split(":")[0]


@dataclass
class Scan:
    root: Path
    format: str
    sources: list[StripSource] = field(default_factory=list)
    skipped: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every file looked at (for the cache key)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _files(directory: Path, recursive: bool) -> list[Path]:
    pattern = directory.rglob("*") if recursive else directory.glob("*")
    return sorted(p for p in pattern if p.is_file())


def _require_root(root: Path, layout: str) -> None:
    if not root.exists():
        raise LayoutError(f"data root {str(root)!r} does not exist; {layout}")
    if not root.is_dir():
        raise LayoutError(f"data root {str(root)!r} is not a directory; {layout}")


def _parse(scan: Scan, path: Path) -> tuple[str, str] | None:
    """``(defect_code, fabric)`` from ``nnnn_ddd_ff``; notes lenient names, skips the rest."""
    match = STRICT_NAME.match(path.stem)
    if match is None:
        match = LENIENT_NAME.match(path.stem)
        if match is None:
            scan.skipped.append(Issue(scan.rel(path), "name does not match nnnn_ddd_ff.png"))
            return None
        scan.notes.append(Issue(scan.rel(path), "non-standard name, read as nnnn_ddd_ff"))
    return f"{int(match.group(2)):03d}", f"{int(match.group(3)):02d}"


def scan_aitex(root: Path) -> Scan:
    _require_root(root, AITEX_LAYOUT)
    dirs = {name: root / name for name in ("Defect_images", "NODefect_images", "Mask_images")}
    missing = [name for name, d in dirs.items() if not d.is_dir()]
    if missing:
        raise LayoutError(f"data root {str(root)!r} has no {', '.join(missing)} folder(s); "
                          f"{AITEX_LAYOUT}")
    scan = Scan(root=root, format="aitex")
    masks: dict[str, list[Path]] = {}
    for path in _files(dirs["Mask_images"], recursive=False):
        scan.files.append(path)
        match = MASK_NAME.match(path.stem)
        if path.suffix.lower() != ".png" or match is None:
            scan.skipped.append(Issue(scan.rel(path), "not a mask name (nnnn_ddd_ff_mask.png)"))
            continue
        masks.setdefault(match.group("stem"), []).append(path)
    used_masks: set[str] = set()
    for folder, defective in (("NODefect_images", False), ("Defect_images", True)):
        for path in _files(dirs[folder], recursive=not defective):
            scan.files.append(path)
            if defective:
                used_masks.add(path.stem)  # its masks are accounted for even if it is skipped
            if path.suffix.lower() != ".png":
                scan.skipped.append(Issue(scan.rel(path), "not a .png file"))
                continue
            parsed = _parse(scan, path)
            if parsed is None:
                continue
            code, fabric = parsed
            if (code != "000") != defective:
                scan.skipped.append(Issue(scan.rel(path), f"defect code {code} contradicts "
                                          f"its folder {folder}"))
                continue
            mask_paths = tuple(masks.get(path.stem, ())) if defective else ()
            if defective and not mask_paths:
                scan.skipped.append(Issue(scan.rel(path), "defect image has no mask "
                                          "(its pixels cannot be labelled)"))
                continue
            scan.sources.append(StripSource(strip=scan.rel(path.with_suffix("")), image=path,
                                            masks=mask_paths, fabric=fabric, defect_code=code,
                                            defective=defective))
    for stem in sorted(set(masks) - used_masks):
        for path in masks[stem]:
            scan.skipped.append(Issue(scan.rel(path), "mask without a defect image"))
    return scan


def scan_folder(root: Path) -> Scan:
    _require_root(root, FOLDER_LAYOUT)
    if not (root / "train" / "good").is_dir():
        raise LayoutError(f"data root {str(root)!r} has no train/good folder; {FOLDER_LAYOUT}")
    scan = Scan(root=root, format="folder")
    fabric = root.resolve().name
    groups = [("good", root / "train" / "good", "train")]
    test = root / "test"
    if test.is_dir():
        groups += [(d.name, d, "test") for d in sorted(test.iterdir()) if d.is_dir()]
    for kind, directory, hint in groups:
        defective = kind != "good"
        truth = root / "ground_truth" / kind
        for path in _files(directory, recursive=False):
            scan.files.append(path)
            if path.suffix.lower() not in FOLDER_SUFFIXES:
                scan.skipped.append(Issue(scan.rel(path), "not an image file name "
                                          f"({'/'.join(FOLDER_SUFFIXES)})"))
                continue
            mask_paths: tuple[Path, ...] = ()
            if defective:
                mask_paths = tuple(sorted(
                    p for p in truth.glob(f"{path.stem}_mask*")
                    if (m := MASK_NAME.match(p.stem)) and m.group("stem") == path.stem))
                scan.files.extend(mask_paths)
                if not mask_paths:
                    scan.skipped.append(Issue(scan.rel(path), "defect image has no mask "
                                              f"(looked in ground_truth/{kind}/)"))
                    continue
            scan.sources.append(StripSource(strip=scan.rel(path.with_suffix("")), image=path,
                                            masks=mask_paths, fabric=fabric, defect_code=kind,
                                            defective=defective, split_hint=hint))
    return scan


def scan(root: Path, data_format: str) -> Scan:
    """List the strips under ``root`` for ``aitex`` (also used by ``synthetic``) or ``folder``."""
    if data_format == "folder":
        return scan_folder(root)
    return scan_aitex(root)
