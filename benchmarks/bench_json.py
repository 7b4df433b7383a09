"""The JSON every benchmark writes with `--json PATH` (its folder made, the path printed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_json(path: Path, report: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def publish(report: Any, print_table: Callable[[Any], None], path: Path | None) -> int:
    """The end of every benchmark's main(): the table on stdout, the JSON where asked; 0."""
    print_table(report)
    if path:
        write_json(path, report)
    return 0
