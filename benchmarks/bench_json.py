"""The JSON every benchmark writes with `--json PATH` (its folder made, the path printed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, report: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
