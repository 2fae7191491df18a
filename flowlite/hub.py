"""Where pretrained weights come from: a local folder or a hub id (theory §12.1). Shared by image model packages and
image rewards; nothing here imports diffusers or transformers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flowlite.errors import FlowliteError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_pretrained(pretrained: str | Path, what: str) -> str:
    """An existing local path, or a string shaped like a hub id (owner/name); anything else is a missing folder."""
    path = Path(pretrained).expanduser()
    if path.exists():
        return str(path)
    if _HUB_ID.match(str(pretrained)):
        return str(pretrained)
    raise FlowliteError(f"{what} weight folder {str(pretrained)!r} not found; pass an existing folder (saved with "
                        "save_pretrained) or a hub id such as owner/name")


def read_model_index(folder: str | Path, what: str) -> dict:
    """A local pipeline folder's ``model_index.json`` as a dict, or one FlowliteError naming the file (truncated,
    not JSON, not an object, no ``_class_name``)."""
    path = Path(folder) / "model_index.json"
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FlowliteError(f"{what} folder {str(folder)!r}: {path.name} cannot be read ({err}); save the pipeline "
                            "again with save_pretrained or download it again") from None
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise FlowliteError(f"{what} folder {str(folder)!r}: {path.name} names no pipeline class (_class_name)")
    if not _has_class("diffusers", index["_class_name"]):
        raise FlowliteError(f"{what} folder {str(folder)!r}: {path.name} names the pipeline class "
                            f"{index['_class_name']!r}, which diffusers does not have")
    for name, entry in index.items():
        if name.startswith("_") or entry is None or entry == [None, None]:
            continue
        library, cls = (entry + [None, None])[:2] if isinstance(entry, list) else (None, None)
        if not (isinstance(library, str) and isinstance(cls, str) and _has_class(library, cls)):
            raise FlowliteError(f"{what} folder {str(folder)!r}: {path.name} gives component {name!r} the class "
                                f"{entry!r}, which is not a class of an installed library")
    return index


def _has_class(library: str, cls: str) -> bool:
    import importlib

    if library not in ("diffusers", "transformers"):
        return False
    return hasattr(importlib.import_module(library), cls)
