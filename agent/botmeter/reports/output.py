"""What every report writes the same way."""

from __future__ import annotations

import json
from typing import Any, TextIO


def write_json(value: Any, out: TextIO) -> None:
    """Indented JSON, UTF-8 names kept as they are, ending in a newline."""
    json.dump(value, out, ensure_ascii=False, indent=1)
    out.write("\n")
