"""Test helper: a pickle that runs code when loaded, the stand-in for a hostile checkpoint's training.pt."""

from __future__ import annotations

from pathlib import Path


class OpensAFile:
    """Unpickling this calls open(marker, "w"): a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
