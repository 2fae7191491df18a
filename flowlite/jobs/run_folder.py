"""Run folders that cannot be mixed: the one check ``finetune`` and the image job make before writing anything.

Called while holding the folder's lock (``run_lock.RunLock``), :func:`open_run_folder`

* removes temporary folders and files left by a killed writer (any process's: the lock says no one else writes);
* for a fresh run, refuses a folder that already holds a run (its ``config.json`` or checkpoints) unless
  ``overwrite``, which removes that run's outputs first (never anything else in the folder);
* for a resume, requires the run's ``config.json`` (readable) and a checkpoint, the same identity keys (β, method,
  batch, model, seed, …; one line names every key that differs) and a checkpoint no later than ``train_steps``.

The caller writes ``config.json`` only after it returns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flowlite.checkpoint import BROKEN, list_checkpoints, remove_temporary_folders
from flowlite.errors import FlowliteError

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"


def comparable(value):
    """A value as it reads back from config.json (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def saved_config(out: Path, flag: str) -> dict | None:
    """The run's config.json, None when there is none; one error line when it does not parse."""
    path = out / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise FlowliteError(f"{flag} {str(out)!r}: its {CONFIG_FILE} is damaged ({err}); it cannot be resumed, "
                            "start over with --overwrite or choose another folder") from None
    if not isinstance(config, dict):
        raise FlowliteError(f"{flag} {str(out)!r}: its {CONFIG_FILE} does not hold a settings object")
    return config


def differing_keys(saved: dict, config: dict, identity) -> list[str]:
    return [k for k in identity if comparable(saved.get(k)) != comparable(config.get(k))]


def open_run_folder(out: str | Path, config: dict, identity, resume: bool, overwrite: bool, train_steps: int,
                    outputs, flag: str = "--out", resume_flag: str = "--resume",
                    saved_defaults: dict | None = None) -> None:
    """Check ``out`` against ``config`` before anything is written (see the module docstring). ``outputs``: the
    names the job writes in a run folder, removed by ``overwrite``; ``saved_defaults``: values of keys that runs
    saved before the key existed (e.g. ``model``: every run before ``--model`` was SD3)."""
    out = Path(out)
    remove_temporary_folders(out)
    remove_temporary_folders(out / CHECKPOINTS)
    checkpoints = list_checkpoints(out / CHECKPOINTS)
    if not resume:
        holds_run = (out / CONFIG_FILE).exists() or (out / CHECKPOINTS).exists()
        if holds_run and not overwrite:
            raise FlowliteError(f"{flag} {str(out)!r} already holds a run ({CONFIG_FILE}, {CHECKPOINTS}/); pass "
                                f"{resume_flag} to continue it, --overwrite to replace it, or choose another folder")
        if holds_run:
            for name in outputs:
                target = out / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        return
    saved = saved_config(out, flag)
    if saved is None or not checkpoints:
        what = f"no checkpoint in {CHECKPOINTS}/" if not checkpoints else f"no {CONFIG_FILE}"
        broken = [p.name for p in (out / CHECKPOINTS).glob(BROKEN + "*")] if (out / CHECKPOINTS).is_dir() else []
        hint = f" (only damaged ones, moved aside: {', '.join(sorted(broken))})" if broken and saved else ""
        raise FlowliteError(f"{resume_flag}: nothing to resume in {str(out)!r}: {what}{hint}; run without "
                            f"{resume_flag} to start")
    saved = {**(saved_defaults or {}), **saved}
    differ = differing_keys(saved, config, identity)
    if differ:
        pairs = ", ".join(f"{k} {saved.get(k)!r} -> {config.get(k)!r}" for k in differ)
        raise FlowliteError(f"{resume_flag}: the settings differ from the run's {CONFIG_FILE}: {pairs}; resume with "
                            "the run's settings, or start a new run in another folder")
    last_step = int(checkpoints[-1].name.split("_")[-1])
    if last_step > train_steps:
        raise FlowliteError(f"{resume_flag}: the run's newest checkpoint is at step {last_step}, past the "
                            f"{train_steps} steps asked; pass a step count of at least {last_step}")
