"""train.py as a DDP process of tests/test_ddp.py, recording what each rank does.

Run it like train.py (Lightning's launcher re-runs this file for the other ranks; torchrun runs it
once per process). Into the folder $ECHO_DDP_RECORD it appends, per training step and rank, the
step, the loss, a checksum of the Gaussian noise and of the foreign (re-mixup) noise and which
examples were the partners (rank<R>.jsonl), and one line per checkpoint written (saves.jsonl).
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import echo.model  # noqa: E402
import echo.sdes  # noqa: E402
import train  # noqa: E402

RECORD = Path(os.environ["ECHO_DDP_RECORD"])
_step_record = {}


def checksum(z):
    return float(z.real.double().sum() + 2 * z.imag.double().sum())


def _rank():
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _append(name, entry):
    with open(RECORD / name, "a") as handle:
        handle.write(json.dumps(entry) + "\n")


_foreign_noise = echo.model.foreign_noise
_complex_randn_like = echo.sdes.complex_randn_like
_step = echo.model.ScoreModel._step
_save_checkpoint = train.AtomicCheckpointIO.save_checkpoint


def foreign_noise(bank, own, generator=None):
    drawn = _foreign_noise(bank, own, generator)
    pool, source = (bank._noise[: len(bank)], "bank") if bank.compatible(own) else (own, "batch")
    # the partner of each example: its slot in the bank, or its index in the batch while the bank is empty
    partners = [next(i for i in range(len(pool)) if torch.equal(pool[i], example)) for example in drawn]
    _step_record.update(foreign=checksum(drawn), partners=[source, partners])
    return drawn


def complex_randn_like(x, generator=None):
    z = _complex_randn_like(x, generator)
    _step_record["noise"] = checksum(z)
    return z


def step(self, batch, *args, **kwargs):
    _step_record.clear()
    loss = _step(self, batch, *args, **kwargs)
    if kwargs.get("training", args[0] if args else False):
        _append(f"rank{self.global_rank}.jsonl", dict(_step_record, rank=self.global_rank, world=self.trainer.world_size,
                                                      step=self.global_step, loss=float(loss)))
    return loss


def save_checkpoint(self, checkpoint, path, storage_options=None):
    _append("saves.jsonl", {"rank": _rank(), "pid": os.getpid(), "path": str(path)})
    return _save_checkpoint(self, checkpoint, path, storage_options)


echo.model.foreign_noise = foreign_noise
echo.sdes.complex_randn_like = complex_randn_like
echo.model.ScoreModel._step = step
train.AtomicCheckpointIO.save_checkpoint = save_checkpoint

if __name__ == "__main__":
    train.main(sys.argv[1:])
