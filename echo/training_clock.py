"""Training time that survives resuming, and a plain progress line for logs.

A model card has to say how long its model trained in all, across every resumed run, and a
recipe with a total budget has to know how much of it a killed run had already spent. Lightning's
Timer counts one run only (our ``--max_time`` is deliberately per run), so ``TrainingClock`` keeps
the running total in the checkpoint. ``ProgressLines`` replaces the progress bar, whose carriage
returns turn a log file into one endless line, with a line every so many steps.
"""
import sys
import time
from datetime import timedelta

from lightning.pytorch.callbacks import Callback

CLOCK_KEY = "TrainingClock"


def parse_max_time(text):
    """DD:HH:MM:SS -> timedelta, with a one-line error for anything else."""
    parts = text.split(":")
    try:
        days, hours, minutes, seconds = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--max_time {text}: expected DD:HH:MM:SS, e.g. 00:01:30:00") from None
    budget = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if len(parts) != 4 or budget.total_seconds() <= 0:
        raise ValueError(f"--max_time {text}: expected a positive DD:HH:MM:SS, e.g. 00:01:30:00")
    return budget


def format_max_time(seconds: float) -> str:
    """Seconds -> Lightning's DD:HH:MM:SS, whole seconds, at least one."""
    seconds = max(1, int(round(seconds)))
    return f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainingClock(Callback):
    """Seconds of training of this model in all: what the resumed checkpoint had, plus this run."""

    def __init__(self):
        self.seconds_before = 0.0
        self._started = None

    @property
    def state_key(self):
        return CLOCK_KEY

    def on_train_start(self, trainer, pl_module):
        self._started = time.monotonic()

    def total_seconds(self) -> float:
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self.seconds_before + running

    def state_dict(self):
        return {"seconds": self.total_seconds()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        # the whole checkpoint, so that one written before the clock existed counts its Timer's time
        self.seconds_before = training_seconds(checkpoint)


def training_seconds(checkpoint: dict) -> float:
    """Total training seconds recorded in a loaded checkpoint. Checkpoints written before the
    clock existed fall back to the time their run's Timer recorded (0 without one)."""
    callbacks = checkpoint.get("callbacks", {})
    if CLOCK_KEY in callbacks:
        return float(callbacks[CLOCK_KEY]["seconds"])
    for key, state in callbacks.items():
        if "Timer" in key:
            return float(state.get("time_elapsed", {}).get("train", 0.0))
    return 0.0


class ProgressLines(Callback):
    """One line every ``every`` optimizer steps: step, total training time, seconds per step and
    the latest training loss."""

    def __init__(self, every: int, clock: TrainingClock, stream=None):
        self.every, self.clock = every, clock
        self.stream = stream or sys.stdout
        self._last = None  # (step, time) of the last line

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        # with gradient accumulation several batches end on the same step: one line per step
        if step == 0 or step % self.every or (self._last and self._last[0] == step):
            return
        now = time.monotonic()
        pace = f"{(now - self._last[1]) / (step - self._last[0]):.2f} s/step" if self._last else "-"
        self._last = (step, now)
        loss = trainer.callback_metrics.get("train_loss_step")
        loss_text = f"{float(loss):.4g}" if loss is not None else "-"
        hours, rest = divmod(int(self.clock.total_seconds()), 3600)
        print(f"step {step} | trained {hours}:{rest // 60:02d}:{rest % 60:02d} | {pace} | train_loss {loss_text}",
              file=self.stream, flush=True)
