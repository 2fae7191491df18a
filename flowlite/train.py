"""The one training loop: base training and every fine-tuning method, on the toy and on image models, on accelerate.

    for step in range(start, train_steps):
        for micro in range(accumulate):
            with accelerator.accumulate(objective):
                loss, logs = objective(step)    # a method samples, builds targets and returns its loss
                accelerator.backward(loss)      # divided by accumulate; DDP averages gradients on the last micro-batch
        accelerator.clip_grad_norm_(params, grad_clip); optimizer.step(); scheduler.step()

as diffusers' training scripts run it (``flowlite.parallel.make_accelerator`` builds the ``Accelerator``; one CPU
process for the toy, where the loop gives the same numbers bit for bit as the hand-written loop before it). Around it:
a tqdm progress bar, ``metrics.csv`` and accelerate's trackers (TensorBoard, wandb when installed), periodic atomic
checkpoints holding the trainable state, optimizer, scheduler, RNG states and step, exact resume (from the newest
checkpoint that loads), optional gradient clipping and the NaN guard (``flowlite.guard``): a non-finite loss, logged
scalar, gradient or parameter stops training before the optimizer step, so no checkpoint ever holds one.

Where the wrapper is and is not used. ``accelerator.prepare`` wraps ``objective``, a module whose forward is
``loss_fn(step)``: under several processes DistributedDataParallel sees that forward, finds which parameters the loss
used and averages their gradients in the backward pass. Inside, a method samples its trajectories and solves the lean
adjoint through its own, unwrapped model: those passes run without a graph to the trained weights (or differentiate
with respect to states only, adapters off), and a call through the DDP wrapper would prepare a gradient reduction that
never comes. Checkpoints and ``callback`` (evaluation) use the unwrapped module too.

Checkpoints keep flowlite's format (``flowlite.checkpoint``) rather than ``accelerator.save_state``: it is written
once by the main process to a temporary folder and renamed into place (``save_state`` writes in place), it holds only
the trained weights in safetensors beside a training state read with ``weights_only=True`` (``save_state`` pickles the
RNG states), the diffusers-format LoRA is written inside it before the rename, and resume falls back to the newest
checkpoint that loads.
"""

from __future__ import annotations

import csv
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowlite import guard, sharding
from flowlite.checkpoint import load_newest_loadable, save_checkpoint
from flowlite.ema import EMA

LossFn = Callable[[int], "Tensor | tuple[Tensor, dict]"]


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    step: int = 0
    run_dir: Path | None = None
    last_checkpoint: Path | None = None
    seconds: float = 0.0

    def column(self, key: str) -> list[float]:
        """One logged scalar over the steps where it was logged."""
        return [row[key] for row in self.history if key in row]


def _number(text: str) -> int | float:
    """A CSV cell as it was logged (an int stays an int, so a resumed log is written back byte for byte)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


class _ScalarLog:
    """Rows of scalars, flushed to ``metrics.csv`` (rewritten so new columns just appear)."""

    def __init__(self, run_dir: Path | None, start: int):
        self.path = run_dir / "metrics.csv" if run_dir else None
        self.rows: list[dict] = []
        if self.path and self.path.is_file() and start > 0:
            with self.path.open() as f:
                self.rows = [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
            self.rows = [r for r in self.rows if r.get("step", 0) <= start]

    def flush(self) -> None:
        if self.path is None or not self.rows:
            return
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)


class _Objective(nn.Module):
    """``loss_fn(step)`` as the forward of a module holding ``module``, so that the DDP wrapper sees the loss."""

    def __init__(self, module: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, step: int):
        out = self.loss_fn(step)
        return out if isinstance(out, tuple) else (out, {})


def train(module: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, train_steps: int,
          scheduler=None, run_dir: str | Path | None = None, checkpoint_every: int = 0, keep_last: int = 2,
          resume: bool = False, grad_clip: float | None = None, callback: Callable[[int], dict] | None = None,
          callback_every: int = 0, log_every: int = 50, progress: bool = True, desc: str = "train",
          ema: EMA | None = None, accumulate: int = 1, checkpoint_files: Callable[[Path], None] | None = None,
          accelerator=None, project: str = "flowlite", tracker_init: dict | None = None,
          shard_units: tuple[str, ...] = ()) -> TrainResult:
    """Run ``train_steps`` optimisation steps of ``loss_fn(step)`` on ``module``'s trainable state.

    Args:
        module: everything whose trainable parameters and buffers make up the checkpoint (e.g. a method
            object holding the model and its value network).
        loss_fn: ``loss_fn(step) -> loss`` or ``(loss, {name: float})``; draws its randomness from the global
            torch RNG so that resume is exact.
        checkpoint_every: write a checkpoint every N steps (and at the end) under ``run_dir/checkpoints``.
        resume: continue from the newest checkpoint in ``run_dir`` that loads (optimizer, scheduler, RNG, step); newer
            ones that do not load are moved aside, with a message saying why.
        callback: ``callback(step) -> {name: float}`` every ``callback_every`` steps (e.g. evaluation);
            its values join the logged row of that step. With ``ema``, it runs on the averaged weights.
        ema: an :class:`~flowlite.ema.EMA` of the trainable parameters, updated after every step and saved in
            checkpoints; the caller decides when to use it (``ema.copy_to_model()`` after training).
        accumulate: micro-batches per step (gradient accumulation): ``loss_fn(step)`` is called that many times and
            ``accelerator.backward`` divides each loss by ``accumulate``, so memory stays that of one micro-batch.
        checkpoint_files: ``checkpoint_files(folder)`` writes extra files into each checkpoint folder before it
            is renamed into place (e.g. the LoRA in the diffusers format), so they are atomic with it.
        accelerator: the run's ``Accelerator`` (``flowlite.parallel.make_accelerator``), built by a job that needs it
            before training (its device, its rank); its ``gradient_accumulation_steps`` must equal ``accumulate``.
            None: one is built here for this run, with TensorBoard when installed, and accelerate's process-wide
            state is cleared afterwards. Only its main process writes (log, trackers, checkpoints); all ranks resume.
        project, tracker_init: ``accelerator.init_trackers(project, init_kwargs=tracker_init)`` when it has trackers.
        shard_units: class names of the FSDP units (e.g. ``("JointTransformerBlock",)``): the module is sharded with
            torch's ``fully_shard`` (``flowlite.sharding``) instead of wrapped in DDP; evaluation then runs on every
            rank, and checkpoints gather the trainable state and optimizer state on every rank before the main process
            writes them. Resume loads before sharding. Not with ``ema``.
    Raises:
        NonFiniteLossError: the loss, a logged scalar, a gradient or a parameter became NaN/inf; the optimizer step
            is not taken and nothing is written for that step (``flowlite.guard``).
        ValueError: ``resume`` found a checkpoint past ``train_steps``.
    """
    from flowlite.parallel import fresh_state, installed_trackers, make_accelerator

    if train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {train_steps}")
    run_dir = Path(run_dir) if run_dir is not None else None
    if (checkpoint_every or resume) and run_dir is None:
        raise ValueError("checkpoint_every and resume need a run_dir")
    if accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate}")
    if shard_units and ema is not None:
        raise ValueError("ema is not supported with shard_units")
    own = accelerator is None
    if own:
        accelerator = make_accelerator(accumulate, run_dir=run_dir,
                                       log_with=installed_trackers(("tensorboard",)) if run_dir is not None else None,
                                       cpu=all(p.device.type == "cpu" for p in module.parameters()))
    elif accelerator.gradient_accumulation_steps != accumulate:
        raise ValueError(f"accumulate={accumulate} but the accelerator accumulates "
                         f"{accelerator.gradient_accumulation_steps} micro-batches")
    try:
        return _loop(module, loss_fn, optimizer, train_steps, scheduler, run_dir, checkpoint_every, keep_last, resume,
                     grad_clip, callback, callback_every, log_every, progress, desc, ema, accumulate,
                     checkpoint_files, accelerator, project, tracker_init, shard_units)
    finally:
        if own:
            fresh_state()


def _loop(module, loss_fn, optimizer, train_steps, scheduler, run_dir, checkpoint_every, keep_last, resume, grad_clip,
          callback, callback_every, log_every, progress, desc, ema, accumulate, checkpoint_files, accelerator, project,
          tracker_init, shard_units) -> TrainResult:
    main = accelerator.is_main_process
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    if run_dir is not None and main:
        run_dir.mkdir(parents=True, exist_ok=True)
    start, last = 0, None
    if resume:
        with accelerator.main_process_first():  # the main process moves a damaged checkpoint aside before others read
            last, state = load_newest_loadable(ckpt_dir, module, optimizer, scheduler)
        if last is not None:
            start = int(state["step"])
            if start > train_steps:
                raise ValueError(f"the checkpoint {last} is at step {start}, past train_steps={train_steps}")
            if ema is not None and "ema" in state["extra"]:
                ema.load_state_dict(state["extra"]["ema"])
    objective = _Objective(module, loss_fn)
    if shard_units:  # FSDP2 instead of DDP: the sharded objective is used as it is (flowlite.sharding)
        wrapped = sharding.shard(objective, shard_units, optimizer)
        rest = accelerator.prepare(optimizer, *([scheduler] if scheduler is not None else []))
        prepared = (wrapped, *(rest if isinstance(rest, tuple) else (rest,)))
    else:
        prepared = accelerator.prepare(objective, optimizer, *([scheduler] if scheduler is not None else []))
    wrapped, stepper = prepared[0], prepared[1]
    stepped_scheduler = prepared[2] if scheduler is not None else None
    if run_dir is not None and accelerator.log_with:
        accelerator.init_trackers(project, init_kwargs=tracker_init or {})
    log = _ScalarLog(run_dir if main else None, start)
    result = TrainResult(history=log.rows, step=start, run_dir=run_dir, last_checkpoint=last)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    named = guard.named_parameters(module, params)
    clock = time.perf_counter()
    bar = tqdm(range(start, train_steps), initial=start, total=train_steps, desc=desc, disable=not progress or not main,
               dynamic_ncols=True, leave=False)
    try:
        for step in bar:
            module.train()
            optimizer.zero_grad(set_to_none=True)
            value, logs = 0.0, {}
            for _ in range(accumulate):
                with accelerator.accumulate(wrapped):
                    loss, micro_logs = wrapped(step)
                    micro = float(loss.detach())
                    guard.check_scalars({"loss": micro, **micro_logs}, step + 1, result.last_checkpoint)
                    accelerator.backward(loss)
                value += micro / accumulate
                for k, v in micro_logs.items():
                    logs[k] = logs.get(k, 0.0) + float(v) / accumulate
            row = {"step": step + 1, "loss": value}
            if grad_clip is not None:
                row["grad_norm"] = float(accelerator.clip_grad_norm_(params, grad_clip))
            else:
                accelerator.unscale_gradients()
            if accelerator.scaler is None:  # with fp16's gradient scaler an overflow skips the step instead
                guard.check_gradients(named, step + 1, result.last_checkpoint)
            stepper.step()
            guard.check_parameters(named, step + 1, result.last_checkpoint)
            if stepped_scheduler is not None:
                stepped_scheduler.step()
            if ema is not None:
                ema.update()
            row["lr"] = optimizer.param_groups[0]["lr"]
            row.update({k: float(v) for k, v in logs.items()})
            if callback is not None and callback_every and ((step + 1) % callback_every == 0 or step + 1 == train_steps):
                module.eval()
                with ema.average_parameters() if ema is not None else nullcontext():
                    row.update({k: float(v) for k, v in callback(step + 1).items()})
            row["seconds"] = time.perf_counter() - clock
            log.rows.append(row)
            if accelerator.trackers:
                accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step + 1)
            result.step = step + 1
            if progress:
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            checkpoint_now = checkpoint_every and ((step + 1) % checkpoint_every == 0 or step + 1 == train_steps)
            if (step + 1) % log_every == 0 or checkpoint_now:  # the log never lags behind a checkpoint
                log.flush()
            if checkpoint_now:
                extra = {"ema": ema.state_dict()} if ema is not None else None
                with sharding.gathered(module, optimizer):  # on every rank; a no-op unless sharded
                    if main:
                        result.last_checkpoint = save_checkpoint(ckpt_dir, module, optimizer, scheduler, step + 1,
                                                                 keep_last=keep_last, extra=extra,
                                                                 files=checkpoint_files)
    finally:
        bar.close()
        log.flush()
        for tracker in accelerator.trackers if main else []:  # not end_training: it would end the process group
            tracker.finish()
        result.seconds = time.perf_counter() - clock
    accelerator.wait_for_everyone()  # when train returns, every rank can read the checkpoints the main one wrote
    module.eval()
    return result
