"""Checks at the jobs' edge, before anything is written: output paths, prompt files, LoRA files, checkpoint names.

Each failure is one ``FlowliteError`` naming the argument and what is accepted; the command line prints it as one
``error:`` line and exits with status 2 (the README's "When things go wrong").
"""

from __future__ import annotations

import os
from pathlib import Path

from flowlite.errors import FlowliteError, first_line
from flowlite.text import check_prompt_length

MAX_PROMPT_FILE_BYTES = 10 * 2**20


def check_output(path: str | Path, flag: str, kind: str = "folder") -> Path:
    """``path`` can become a folder (``kind="folder"``) or a file (``"file"``) we may write: no existing component
    of it is a file where a folder is needed, and the nearest existing folder is writable. Creates nothing."""
    path = Path(path)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise FlowliteError(f"{flag} {str(path)!r} is a file; give a folder (it is created if missing)")
    if kind == "file" and path.is_dir():
        raise FlowliteError(f"{flag} {str(path)!r} is a folder; give a file name")
    parent = path if kind == "folder" else path.parent
    ancestor = parent.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise FlowliteError(f"{flag} {str(path)!r} lies under {str(ancestor)!r}, which is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        where = path if path.exists() else ancestor
        raise FlowliteError(f"{flag} {str(path)!r}: no permission to write in {str(where)!r}; choose another path")
    return path


def read_prompt_file(path, flag: str = "--prompts") -> list[str]:
    """One prompt per line of a UTF-8 text file; blank lines and lines starting with # are skipped. Errors name
    the line: bytes that are not UTF-8, a line over ``flowlite.text.MAX_PROMPT_CHARS``."""
    path = Path(path)
    if not path.is_file():
        raise FlowliteError(f"{flag} file {str(path)!r} not found")
    if path.stat().st_size > MAX_PROMPT_FILE_BYTES:
        raise FlowliteError(f"{flag} file {str(path)!r} is over {MAX_PROMPT_FILE_BYTES // 2**20} MB; "
                            "it should hold one short prompt per line")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FlowliteError(f"{flag} file {str(path)!r}, line {line}: not UTF-8 text (byte {data[err.start]:#04x}); "
                            "save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise FlowliteError(f"{flag} file {str(path)!r}, line {line}: a NUL byte; it looks like a binary file")
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(check_prompt_length(line, f"{flag} file {str(path)!r}, line {number}"))
    if not prompts:
        raise FlowliteError(f"{flag} file {str(path)!r} has no prompts (one per line; blank and # lines skipped)")
    return prompts


def check_lora_file(path: str | Path, flag: str = "--lora") -> Path:
    """A readable safetensors file: its header parses and every tensor in it can be read."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                f.get_slice(key).get_shape()
    except Exception as err:  # safetensors raises its own error type for every kind of damage
        reason = first_line(err, 160)
        raise FlowliteError(f"{flag}: {str(path)!r} is not a readable safetensors LoRA file ({reason}); "
                            "train again or pick another checkpoint with --checkpoint") from None
    if not keys:
        raise FlowliteError(f"{flag}: {str(path)!r} holds no tensors")
    return path


def checkpoint_choice(text: str) -> str:
    """``--checkpoint``: ``latest`` or a step number."""
    import argparse

    if text == "latest" or (text.isdigit() and 0 < int(text) < 10**7):
        return text
    raise argparse.ArgumentTypeError(f"expected 'latest' or a step number (e.g. 50), got {text!r}")
