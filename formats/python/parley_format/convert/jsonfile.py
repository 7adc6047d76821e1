"""Reading the JSON files a checkpoint or adapter folder holds."""

from __future__ import annotations

import json
import os

from .errors import ConversionError


def read_json_object(path: str, required: bool = True) -> dict | None:
    """The JSON object in `path`; None when it is absent and not required."""
    if not os.path.exists(path):
        if required:
            raise ConversionError(f"{path} not found")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return data
