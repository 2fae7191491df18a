"""Checkpoints that never corrupt and resume exactly (the README's "Resume").

A checkpoint is a folder ``step_NNNNNNN/`` with ``model.safetensors`` (trainable parameters and buffers, no
pickle) and ``training_state.pt`` (optimizer, scheduler, RNG states, step; read with ``weights_only=True``).
It is written under a temporary name and renamed into place, so a crash mid-write leaves the previous one intact.
Resume takes the newest checkpoint that loads (:func:`load_newest_loadable`): a damaged one (truncated by a full
disk, edited by hand) is moved aside as ``broken-step_NNNNNNN`` with a message, and the one before it is used.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flowlite.errors import FlowliteError, first_line

PREFIX = "step_"
BROKEN = "broken-"


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad plus the persistent buffers of modules that are not frozen: what training
    changes. Frozen submodules (a base model whose parameters all have requires_grad=False) are not saved."""
    state = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    frozen = [name + "." for name, sub in module.named_modules()
              if name and any(True for _ in sub.parameters()) and not any(p.requires_grad for p in sub.parameters())]
    names = set(module.state_dict().keys())
    state.update({n: b.detach() for n, b in module.named_buffers()
                  if n in names and not any(n.startswith(prefix) for prefix in frozen)})
    return {k: v.contiguous().clone() for k, v in state.items()}


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_folder_atomically(final: str | Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` creates and fills a temporary sibling of ``final``, which then replaces ``final`` by one
    rename: readers see the old folder or the new one, never half of one. If ``write`` fails, ``final`` is
    untouched; the leftover temporary folder is removed by :func:`remove_temporary_folders` when the run folder is
    next opened (``flowlite.run_folder``)."""
    final = Path(final)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def save_checkpoint(directory: str | Path, module: nn.Module, optimizer=None, scheduler=None, step: int = 0,
                    keep_last: int | None = None, extra: dict | None = None, files=None) -> Path:
    """Write ``directory/step_NNNNNNN`` atomically (temp folder, then rename) and keep the newest ``keep_last``.
    ``files(folder)``, when given, writes extra files into the temporary folder before the rename."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        tmp.mkdir()
        save_file(trainable_state_dict(module), str(tmp / "model.safetensors"), metadata={"step": str(step)})
        state = {"step": step, "rng": rng_state(), "extra": extra or {}}
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        torch.save(state, tmp / "training_state.pt")
        if files is not None:
            files(tmp)

    final = write_folder_atomically(directory / f"{PREFIX}{step:07d}", write)
    if keep_last:
        for old in list_checkpoints(directory)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary folders are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and (p / "model.safetensors").is_file() and (p / "training_state.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def read_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(weights, training state) of a checkpoint folder, read without touching any model; raises whatever the
    readers raise for a damaged file (safetensors, torch, pickle or OS errors)."""
    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    state = torch.load(path / "training_state.pt", weights_only=True)
    if not isinstance(state, dict) or "step" not in state or "rng" not in state:
        raise ValueError("training_state.pt has no step or RNG state")
    return weights, state


def load_checkpoint(path: str | Path, module: nn.Module, optimizer=None, scheduler=None,
                    restore_rng: bool = True, read: tuple[dict, dict] | None = None) -> dict:
    """Load a checkpoint folder into module (and optimizer/scheduler); returns the training state dict.
    Everything is read before anything is applied, so a damaged file leaves the module as it was."""
    path = Path(path)
    weights, state = read or read_checkpoint(path)
    missing = set(trainable_state_dict(module)) - set(weights)
    unexpected = set(weights) - set(module.state_dict())
    if missing or unexpected:
        raise FlowliteError(f"checkpoint {path} does not match the model: missing {sorted(missing)[:5]}, "
                            f"unexpected {sorted(unexpected)[:5]}")
    module.load_state_dict(weights, strict=False)
    if optimizer is not None and "optimizer" in state:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise FlowliteError(f"checkpoint {path} does not match the optimizer: {err}") from None
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state


def load_newest_loadable(directory: str | Path, module: nn.Module, optimizer=None, scheduler=None,
                         say=lambda message: print(message, file=sys.stderr)) -> tuple[Path | None, dict | None]:
    """Load the newest checkpoint of ``directory`` that reads; each newer one that does not is renamed
    ``broken-step_NNNNNNN`` (so rotation never keeps it over new ones) with one message saying why.
    Returns (path, training state), or (None, None) when there is no checkpoint at all."""
    found = list_checkpoints(directory)
    for path in reversed(found):
        try:
            read = read_checkpoint(path)
        except Exception as err:  # any reader's error on a damaged file: fall back to the previous checkpoint
            reason = first_line(err, 200)
            aside = path.with_name(BROKEN + path.name)
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(path, aside)
            say(f"resume: skipped {path.name} ({type(err).__name__}: {reason}); moved it to {aside.name}")
            continue
        return path, load_checkpoint(path, module, optimizer, scheduler, read=read)
    if found:
        raise FlowliteError(f"resume: no checkpoint in {str(directory)!r} loads (all moved aside as {BROKEN}*)")
    return None, None


def remove_temporary_folders(directory: str | Path) -> list[Path]:
    """Remove the ``.tmp-*`` folders and ``*.tmp`` files a killed writer left in ``directory`` (any process's: call it
    only while holding the run folder's lock). Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    gone = [p for p in directory.iterdir() if p.name.startswith(".tmp-") or p.name.endswith(".tmp")]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone
