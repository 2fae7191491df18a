"""The one training loop: base training and every fine-tuning method, on the toy and on image models.

    for step in range(start, train_steps):
        loss, logs = loss_fn(step)         # a method samples, builds targets and returns its loss
        loss.backward(); optimizer.step(); scheduler.step()

around which it adds: a tqdm progress bar, a CSV of scalars (and TensorBoard when installed), periodic
atomic checkpoints holding model, optimizer, scheduler, RNG states and step, exact resume (from the newest checkpoint
that loads), optional gradient clipping and the NaN guard (``flowlite.guard``): a non-finite loss, logged scalar,
gradient or parameter stops training before the optimizer step, so no checkpoint ever holds one.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowlite import guard
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
    """Rows of scalars, flushed to ``metrics.csv`` (rewritten so new columns just appear) and TensorBoard."""

    def __init__(self, run_dir: Path | None, start: int):
        self.path = run_dir / "metrics.csv" if run_dir else None
        self.rows: list[dict] = []
        if self.path and self.path.is_file() and start > 0:
            with self.path.open() as f:
                self.rows = [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
            self.rows = [r for r in self.rows if r.get("step", 0) <= start]
        self.tb = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard is optional
                self.tb = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, int(row["step"]))

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
        if self.tb is not None:
            self.tb.flush()


def train(module: nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer, train_steps: int,
          scheduler=None, run_dir: str | Path | None = None, checkpoint_every: int = 0, keep_last: int = 2,
          resume: bool = False, grad_clip: float | None = None, callback: Callable[[int], dict] | None = None,
          callback_every: int = 0, log_every: int = 50, progress: bool = True, desc: str = "train",
          ema: EMA | None = None, accumulate: int = 1, before_step: Callable[[list], None] | None = None,
          checkpoint_files: Callable[[Path], None] | None = None, main_process: bool = True) -> TrainResult:
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
        accumulate: micro-batches per step (gradient accumulation): ``loss_fn(step)`` is called that many times,
            each loss divided by ``accumulate`` and backpropagated at once, so memory stays that of one micro-batch.
        before_step: ``before_step(params)`` after the backward passes, before clipping and the optimizer step
            (data-parallel runs average the gradients across processes here).
        checkpoint_files: ``checkpoint_files(folder)`` writes extra files into each checkpoint folder before it
            is renamed into place (e.g. the LoRA in the diffusers format), so they are atomic with it.
        main_process: False on the other ranks of a data-parallel run: they train and resume but write nothing.
    Raises:
        NonFiniteLossError: the loss, a logged scalar, a gradient or a parameter became NaN/inf; the optimizer step
            is not taken and nothing is written for that step (``flowlite.guard``).
        ValueError: ``resume`` found a checkpoint past ``train_steps``.
    """
    if train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {train_steps}")
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None
    if (checkpoint_every or resume) and run_dir is None:
        raise ValueError("checkpoint_every and resume need a run_dir")
    if accumulate < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate}")
    if run_dir is not None and main_process:
        run_dir.mkdir(parents=True, exist_ok=True)

    start, last = 0, None
    if resume:
        last, state = load_newest_loadable(ckpt_dir, module, optimizer, scheduler)
        if last is not None:
            start = int(state["step"])
            if start > train_steps:
                raise ValueError(f"the checkpoint {last} is at step {start}, past train_steps={train_steps}")
            if ema is not None and "ema" in state["extra"]:
                ema.load_state_dict(state["extra"]["ema"])
    log = _ScalarLog(run_dir if main_process else None, start)
    result = TrainResult(history=log.rows, step=start, run_dir=run_dir, last_checkpoint=last)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    named = guard.named_parameters(module, params)
    clock = time.perf_counter()
    bar = tqdm(range(start, train_steps), initial=start, total=train_steps, desc=desc, disable=not progress,
               dynamic_ncols=True, leave=False)
    try:
        for step in bar:
            module.train()
            optimizer.zero_grad(set_to_none=True)
            value, logs = 0.0, {}
            for _ in range(accumulate):
                out = loss_fn(step)
                loss, micro_logs = (out if isinstance(out, tuple) else (out, {}))
                micro = float(loss.detach())
                guard.check_scalars({"loss": micro, **micro_logs}, step + 1, result.last_checkpoint)
                (loss / accumulate if accumulate > 1 else loss).backward()
                value += micro / accumulate
                for k, v in micro_logs.items():
                    logs[k] = logs.get(k, 0.0) + float(v) / accumulate
            if before_step is not None:
                before_step(params)
            row = {"step": step + 1, "loss": value}
            if grad_clip is not None:
                row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
            guard.check_gradients(named, step + 1, result.last_checkpoint)
            optimizer.step()
            guard.check_parameters(named, step + 1, result.last_checkpoint)
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.update()
            row["lr"] = optimizer.param_groups[0]["lr"]
            row.update({k: float(v) for k, v in logs.items()})
            if callback is not None and callback_every and ((step + 1) % callback_every == 0 or step + 1 == train_steps):
                module.eval()
                if ema is not None:
                    with ema.average_parameters():
                        row.update({k: float(v) for k, v in callback(step + 1).items()})
                else:
                    row.update({k: float(v) for k, v in callback(step + 1).items()})
            row["seconds"] = time.perf_counter() - clock
            log.add(row)
            result.step = step + 1
            if progress:
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
            checkpoint_now = checkpoint_every and main_process and ((step + 1) % checkpoint_every == 0
                                                                    or step + 1 == train_steps)
            if (step + 1) % log_every == 0 or checkpoint_now:  # the log never lags behind a checkpoint
                log.flush()
            if checkpoint_now:
                extra = {"ema": ema.state_dict()} if ema is not None else None
                result.last_checkpoint = save_checkpoint(ckpt_dir, module, optimizer, scheduler, step + 1,
                                                         keep_last=keep_last, extra=extra, files=checkpoint_files)
    finally:
        bar.close()
        log.flush()
        result.seconds = time.perf_counter() - clock
    module.eval()
    return result
