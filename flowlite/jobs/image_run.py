"""The image job as the command line runs it, callable from Python (notebook 09): the output checked, the run
folder locked (``run_lock.RunLock``) and its resume identity checked (``image_settings.check_resume``) before
:func:`flowlite.jobs.image_job.run_sd3` trains, so a notebook and a terminal cannot write into one folder at once.
"""

from __future__ import annotations

import os

from flowlite.jobs.image_job import run_sd3
from flowlite.jobs.image_processes import refuse_fsdp
from flowlite.jobs.image_settings import check_resume
from flowlite.jobs.run_lock import RunLock
from flowlite.jobs.validate import check_output


def run_image_job(config: dict, resume: str | None = None, overwrite: bool = False) -> dict:
    """Train as ``python -m flowlite sd3`` does, from a resolved config (``image_settings.resolve_config``).

    ``resume="latest"`` continues the run in ``config["output"]``; ``overwrite`` replaces a finished run there.
    Under accelerate only rank 0 locks and checks the folder. Returns run_sd3's summary.
    Raises FlowliteError (one line) for a folder in use, a run that does not match, or an output we cannot write.
    """
    refuse_fsdp()  # before the run folder is locked: nothing is written
    check_output(config["output"], "--output")
    main_process = int(os.environ.get("RANK", "0")) == 0
    lock = RunLock(config["output"], "--output") if main_process else None
    try:
        if lock is not None:
            lock.acquire()
            check_resume(config, resume, overwrite=overwrite)
        return run_sd3(config, resume=resume)
    finally:
        if lock is not None:
            lock.release()
