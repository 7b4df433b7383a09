"""The enums of the bridge's C header (fortran_bridge/src/paramlib_bridge.h), the one source
of its status codes and flags: fypp generates the Fortran module's parameters from them
(paramlib_bridge.fypp, `fypp -M fortran_bridge/cmake -m bridge_header`) and the tests check
the Python copies (paramlib/fortran/bridge.py) against them."""

from __future__ import annotations

import re
from pathlib import Path

HEADER = Path(__file__).resolve().parents[1] / "src" / "paramlib_bridge.h"


def enum(name: str, header: Path = HEADER) -> list[tuple[str, int]]:
    """(enumerator, value) of `enum name { ... }` in header order. Every enumerator must have
    an explicit integer value, so no copy has to count."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    found = re.search(r"\benum\s+" + re.escape(name) + r"\s*\{(.*?)\}", text, flags=re.S)
    if found is None:
        raise ValueError(f"{header}: no enum {name}")
    values = []
    for item in filter(None, (part.strip() for part in found.group(1).split(","))):
        entry = re.fullmatch(r"(\w+)\s*=\s*(-?\d+)", item)
        if entry is None:
            raise ValueError(f"{header}: enum {name}: '{item}' has no explicit integer value")
        values.append((entry.group(1), int(entry.group(2))))
    return values
