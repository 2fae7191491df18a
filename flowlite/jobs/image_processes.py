"""The processes of the image fine-tuning job (``flowlite.jobs.image_job``): its ``Accelerator`` (accumulation,
mixed precision, trackers), and sharding: ``--fsdp`` shards the transformer with torch's FSDP2 (``flowlite.sharding``,
one unit per block of the family), while a launch with accelerate's own FSDP plugin is refused (README "Many GPUs")."""

from __future__ import annotations

import os
from pathlib import Path

from flowlite.errors import FlowliteError
from flowlite.parallel import Processes, processes


def refuse_fsdp() -> None:
    """Stop a launch with accelerate's FSDP plugin (``accelerate launch --config_file configs/fsdp.yaml``) with one
    line: the job shards with ``--fsdp`` (torch's FSDP2 applied by ``flowlite.sharding``, the path rehearsed on CPU by
    ``tests/core/test_fsdp_rehearsal.py`` and ``tests/jobs/test_sd3_job.py``), never through accelerate's plugin,
    which runs on GPUs only and so has never run here (README "Many GPUs")."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise FlowliteError("accelerate's FSDP plugin is not supported by `flowlite sd3` (GPU only, never rehearsed); "
                            "launch with --multi_gpu and pass --fsdp to shard the transformer (README 'Many GPUs')")


def shard_units(config: dict, procs: Processes) -> tuple[str, ...]:
    """--fsdp: the family's FSDP units (``image_models.MODELS``); none without it. One process cannot shard, and an
    int8 base (``--quantize-base``: torchao tensors) is refused, never having been sharded."""
    if not config.get("fsdp"):
        return ()
    if config.get("quantize_base"):
        raise FlowliteError("--fsdp with --quantize-base is not supported: an int8 base has never been sharded")
    if procs.world < 2:
        raise FlowliteError("--fsdp shards across processes: launch with `accelerate launch --multi_gpu "
                            "--num_processes N -m flowlite sd3 --fsdp ...`")
    from flowlite.jobs.image_models import MODELS

    return MODELS[config.get("model", "sd3")].fsdp_units


def job_processes(config: dict, run_dir: Path | None = None) -> Processes:
    """The job's ``Accelerator``: ``--grad-accum`` micro-batches per update, ``--mixed-precision``, and with a run
    folder the trackers that are installed (TensorBoard; wandb unless ``--no-wandb``)."""
    from flowlite.parallel import installed_trackers

    refuse_fsdp()

    wanted = ("tensorboard",) if config.get("no_wandb") else ("tensorboard", "wandb")
    return processes(config["grad_accum"], config["mixed_precision"], run_dir,
                     installed_trackers(wanted) if run_dir is not None else None)


def tracker_init(config: dict, run_dir: Path) -> dict:
    """wandb's ``init`` arguments: the run folder, the config, offline unless ``WANDB_MODE`` says otherwise."""
    return {"wandb": {"dir": str(run_dir), "config": config, "mode": os.environ.get("WANDB_MODE", "offline")}}
