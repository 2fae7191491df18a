"""Where pretrained weights come from: a local folder or a hub id (theory §12.1). Shared by image model packages and
image rewards; nothing here imports diffusers or transformers."""

from __future__ import annotations

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
