"""Report building blocks shared by the report's modules: titled sections and number format."""

from __future__ import annotations

import math
import re


def fmt(x, digits=1) -> str:
    """A number with thousands separators, or – for a missing one."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


class Section:
    """A titled sequence of paragraphs, tables and figures, rendered in order; ``folded``
    sections (wide tables) are collapsed in the HTML report until opened."""

    def __init__(self, title: str, text: str = "", *, folded: bool = False):
        self.title, self.folded = title, folded
        self.parts: list[tuple[str, object]] = []
        if text:
            self.text(text)

    def text(self, text: str) -> None:
        self.parts.append(("text", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.parts.append(("table", (header, rows)))

    def figure(self, name: str, png: bytes | None) -> None:
        if png:
            self.parts.append(("figure", (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png", png)))
