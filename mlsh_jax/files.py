"""Small file helpers for run directories."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Writes `data` as indented JSON (non-finite floats become null), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    tmp.replace(path)
