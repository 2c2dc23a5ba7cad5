"""Files an attacker could plant: proof, by a side effect, that something was unpickled."""

from __future__ import annotations


class CreatesFileWhenUnpickled:
    """Unpickling this opens (creates) ``path``: proof that a pickle was executed."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))
