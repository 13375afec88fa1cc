"""Train ECHO: python train.py --base_dir DATA [--log_dir logs] [flags].

Reads base_dir/{train,valid}/{clean,noisy}, trains the clean-speech predictor on the
noise-augmented forward process, keeps an EMA of the weights, and writes last.ckpt plus the
best checkpoints under the log directory. `python train.py --help` lists every flag.

Resuming (--ckpt last.ckpt): the checkpoint is first read with weights_only=True (a file that
carries pickled code is refused before Lightning opens it). Every random number of a step is
drawn from (--seed, step) and the data order and crops from (--seed, epoch, file), so a run
resumed from a checkpoint taken at the end of an epoch repeats the uninterrupted run's losses.
Checkpoints are written under a temporary name and renamed: a run killed while saving keeps
its previous last.ckpt. The seed, the arguments and the software versions go to run_info.json
in the run's log folder.
"""
import argparse
import os
import sys
import warnings
from pathlib import Path

if __name__ == "__main__":  # before torch is imported; see echo/util/allocator.py
    from echo.util.allocator import gpu_expected, reexec_reusing_memory

    reexec_reusing_memory(gpu_expected=gpu_expected(sys.argv[1:], "--accelerator"))

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer
from lightning.pytorch.plugins import TorchCheckpointIO

from echo.backbones import BackboneRegistry
from echo.checkpoints import ARCHITECTURE_KEYS, CheckpointError, check_resume_compatible, read_checkpoint
from echo.data_module import SpecsDataModule
from echo.ema import EMA
from echo.model import NonFiniteLossError, ScoreModel
from echo.output_scaling import resolve_output_scaling
from echo.pretrained import shipped_training
from echo.sdes import SDERegistry
from echo.training_clock import ProgressLines, TrainingClock, parse_max_time
from echo.util.audio import AudioError, check_writable_folder, remove_stale_partials, staged_file
from echo.util.other import group_values, positive_int, write_run_info
from echo.util.process_settings import environment_restored

MODEL_GROUPS = ("model", "data", "NCSN++ (deformable) backbone", "ECHO SDE", "OUVE SDE", "predictive baseline")


def build_parser(argv=None):
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--backbone", type=str, default="ncsnpp_deform", choices=BackboneRegistry.get_all_names(),
                      help="Network that estimates clean speech (default ncsnpp_deform)")
    base.add_argument("--sde", type=str, default="echo", choices=SDERegistry.get_all_names(),
                      help="Forward process (default echo)")
    chosen, _ = base.parse_known_args(argv)

    parser = argparse.ArgumentParser(description=__doc__, parents=[base],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = parser.add_argument_group("run")
    run.add_argument("--log_dir", type=str, default="logs", help="Folder for logs and checkpoints")
    run.add_argument("--ckpt", type=str, default=None, help="Resume training from this checkpoint (e.g. last.ckpt)")
    run.add_argument("--init_weights", type=str, default=None,
                     help="Start from the weights of this model (a shipped model such as "
                          "pretrained/echo_cpu_small.ckpt, or any checkpoint) with a fresh optimizer; the network "
                          "settings are taken from it")
    run.add_argument("--seed", type=int, default=0, help="Seed of every random number generator")
    run.add_argument("--logger", type=str, default="csv", choices=("csv", "tensorboard", "wandb"),
                     help="Where metrics go; csv needs no account or network, wandb honours WANDB_MODE")
    run.add_argument("--run_name", type=str, default="echo", help="Name of the run under --log_dir")
    run.add_argument("--progress_every", type=int, default=0,
                     help="Print a plain progress line every this many steps instead of the progress bar "
                          "(for logs of background runs); 0 keeps the bar")
    trainer = parser.add_argument_group("trainer")
    trainer.add_argument("--accelerator", type=str, default="auto", help="cpu, gpu, mps or auto")
    trainer.add_argument("--devices", type=str, default="auto", help="Number of devices, a list such as 0,1, or auto")
    trainer.add_argument("--strategy", type=str, default="auto", help="auto, ddp, ... (multi-GPU runs use DDP)")
    trainer.add_argument("--num_nodes", type=positive_int, default=1,
                         help="Machines taking part; each runs --devices processes. Lightning reads the ranks "
                              "and the address of rank 0 from SLURM (srun) or torchrun")
    trainer.add_argument("--precision", type=str, default="32-true", help="32-true, bf16-mixed, 16-mixed, ...")
    trainer.add_argument("--max_steps", type=int, default=-1, help="Stop after this many optimizer steps (-1: no limit)")
    trainer.add_argument("--max_epochs", type=int, default=-1, help="Stop after this many epochs (-1: no limit)")
    trainer.add_argument("--max_time", type=str, default=None,
                         help="Stop after this wall-clock time of this run, DD:HH:MM:SS (e.g. 00:00:08:00 for "
                              "8 minutes); a resumed run gets the whole budget again")
    trainer.add_argument("--accumulate_grad_batches", type=int, default=1,
                         help="Batches per optimizer step (effective batch = batch_size x devices x this)")
    trainer.add_argument("--val_check_interval", type=float, default=1.0,
                         help="Validate every this fraction of an epoch (<= 1) or this many batches (> 1)")
    trainer.add_argument("--check_val_every_n_epoch", type=int, default=1, help="Validate every this many epochs")
    trainer.add_argument("--gradient_clip_val", type=float, default=None, help="Clip the gradient norm to this value")
    trainer.add_argument("--log_every_n_steps", type=int, default=50, help="Log training metrics every this many steps")
    trainer.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=False,
                         help="Use deterministic algorithms only (slower; same seed gives the same run)")
    SpecsDataModule.add_argparse_args(parser)
    ScoreModel.add_argparse_args(parser)
    BackboneRegistry.get_by_name(chosen.backbone).add_argparse_args(parser)
    SDERegistry.get_by_name(chosen.sde).add_argparse_args(parser)
    return parser


class SaveLastOnStop(Callback):
    """Write last.ckpt when training stops between two scheduled saves (e.g. --max_steps in the
    middle of an epoch), so that a run can always be resumed from where it stopped. It must run
    before the EMA callback's on_train_end, which copies the averaged weights over the training
    weights."""

    def __init__(self, last: ModelCheckpoint):
        self.last = last

    def on_train_end(self, trainer, pl_module):
        path = os.path.join(self.last.dirpath, "last.ckpt")
        if trainer.global_step > 0 and self.last._last_global_step_saved != trainer.global_step:
            trainer.save_checkpoint(path)
            self.last.last_model_path = path


class RunTimer(Timer):
    """--max_time as the budget of this run. Lightning's own timer restores the time the
    checkpoint's run had used, so `--ckpt last.ckpt --max_time 00:00:30:00` after a 32-minute run
    would stop before its first step and write nothing."""

    def load_state_dict(self, state_dict):
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written under a temporary name in the target folder, flushed to disk, then
    renamed over the old file: a run killed while saving (SIGKILL, power loss) keeps the previous
    complete last.ckpt instead of a truncated one. Lightning's own writer stages the file in the
    system temp folder, from where the final move is a copy when that is another file system."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if "://" in str(path):  # remote storage: Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        with staged_file(path) as tmp, open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())


def make_logger(kind, log_dir, name):
    if kind == "csv":
        return pl.loggers.CSVLogger(save_dir=log_dir, name=name)
    if kind == "tensorboard":
        return pl.loggers.TensorBoardLogger(save_dir=log_dir, name=name)
    return pl.loggers.WandbLogger(save_dir=log_dir, name=name)  # WANDB_MODE=offline works without network


def parse_devices(text):
    if text == "auto":
        return "auto"
    if "," in text:
        return [int(d) for d in text.split(",") if d]
    return int(text)


def prepare_resume(ckpt, model_kwargs):
    """Refuse an unsafe, incomplete or incompatible checkpoint with one line, before Lightning
    reads it; note a seed that differs from the checkpoint's; remove checkpoint temporaries that
    a killed run left next to it."""
    saved = check_resume_compatible(ckpt, model_kwargs)
    if "seed" in saved and saved["seed"] != model_kwargs["seed"]:
        print(f"note: {ckpt} was trained with --seed {saved['seed']}; this run draws from --seed "
              f"{model_kwargs['seed']}, so it will not repeat the interrupted run", file=sys.stderr)
    remove_stale_partials(Path(ckpt).parent, suffixes=(".ckpt",))


def take_initial_weights(path, model_kwargs, ckpt=None):
    """The checkpoint of --init_weights, read weights-only; its network settings replace the flags'."""
    if ckpt:
        raise CheckpointError("give --ckpt (resume a run) or --init_weights (start a new run from weights), not both")
    start = read_checkpoint(path)
    saved = start["hyper_parameters"]
    for key in ARCHITECTURE_KEYS:
        if key in saved and key in model_kwargs:
            model_kwargs[key] = saved[key]
    done = shipped_training(start)
    print(f"starting from the weights of {path} ({done['steps']} steps, {done['seconds'] / 3600:.2f} h of training "
          "before); fresh optimizer, step counter from 0")
    return start


def resolve_model_output_scaling(model_kwargs, ckpt=None):
    """Fix --output_scaling (and its older spelling --scale_by_sigma) to one value. A resumed run
    given neither keeps its checkpoint's, whatever today's default is."""
    if ckpt and model_kwargs.get("output_scaling") is None and model_kwargs.get("scale_by_sigma") is None:
        saved = read_checkpoint(ckpt)["hyper_parameters"]
        model_kwargs["output_scaling"] = saved.get("output_scaling")
        model_kwargs["scale_by_sigma"] = saved.get("scale_by_sigma")
    try:
        scaling = resolve_output_scaling(model_kwargs.get("output_scaling"), model_kwargs.get("scale_by_sigma"),
                                         SDERegistry.get_by_name(model_kwargs["sde"]).prediction)
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    model_kwargs.update(output_scaling=scaling, scale_by_sigma=scaling == "release")


def main(argv=None):
    # Lightning's seed_everything leaves the seed in the environment (for the processes it starts):
    # a caller in the same process (the tests, a notebook) gets its own environment back
    with environment_restored("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        return _main(argv)


def _main(argv=None):
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        budget = parse_max_time(args.max_time) if args.max_time else None
    except ValueError as err:
        parser.error(str(err))
    pl.seed_everything(args.seed, workers=True, verbose=False)

    model_kwargs = group_values(parser, args, MODEL_GROUPS)
    model_kwargs.update(backbone=args.backbone, sde=args.sde, seed=args.seed)
    for key in ("base_dir", "batch_size", "num_workers", "resample", "downmix"):
        model_kwargs.pop(key, None)  # data loading only, not part of the model
    resolve_model_output_scaling(model_kwargs, args.ckpt)
    if args.ckpt:
        prepare_resume(args.ckpt, model_kwargs)
    start = take_initial_weights(args.init_weights, model_kwargs, args.ckpt) if args.init_weights else None
    try:
        model = ScoreModel(**model_kwargs)
    except ValueError as err:  # inconsistent model flags (e.g. --lr_min above --lr)
        parser.error(str(err))
    if args.num_frames % model.frames_multiple:
        # the U-Net halves the time axis once per level: the crop must survive every halving
        parser.error(f"--num_frames {args.num_frames}: must be a multiple of {model.frames_multiple} for this "
                     "network (its levels halve the time axis)")
    if start is not None:
        model.load_state_dict(start["state_dict"])
    try:
        data = SpecsDataModule(**vars(args), pin_memory=args.accelerator != "cpu")
        data.setup("fit")  # reads and checks every file now, so data errors come before training
    except ValueError as err:  # inconsistent data flags
        parser.error(str(err))
    check_writable_folder(args.log_dir)

    logger = make_logger(args.logger, args.log_dir, args.run_name)
    checkpoints = ModelCheckpoint(dirpath=os.path.join(logger.log_dir, "checkpoints"),
                                  monitor="valid_loss", mode="min", save_top_k=1,
                                  filename="best-loss-{epoch}-{step}")
    # last.ckpt after every epoch, from a callback of its own: Lightning's save_last writes it only
    # in a step where a best checkpoint is written too, so once the validation loss stopped
    # improving, a killed run would fall back to its best epoch, however long ago
    last = ModelCheckpoint(dirpath=checkpoints.dirpath, filename="last", enable_version_counter=False)
    clock = TrainingClock()  # a resumed run's clock is restored by Lightning with the checkpoint
    if start is not None:
        clock.seconds_before = shipped_training(start)["seconds"]
    callbacks = [SaveLastOnStop(last), EMA(args.ema_decay), checkpoints, last, clock]
    if args.progress_every > 0:
        callbacks.append(ProgressLines(args.progress_every, clock))
    if budget is not None:
        callbacks.append(RunTimer(duration=budget, interval="step"))
    if args.num_eval_files > 0:
        callbacks.append(ModelCheckpoint(dirpath=checkpoints.dirpath, monitor="pesq", mode="max", save_top_k=1,
                                         filename="best-pesq-{epoch}-{step}"))
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=parse_devices(args.devices), strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision, max_steps=args.max_steps, max_epochs=args.max_epochs,
        accumulate_grad_batches=args.accumulate_grad_batches, val_check_interval=int(args.val_check_interval) if args.val_check_interval > 1 else args.val_check_interval,
        check_val_every_n_epoch=args.check_val_every_n_epoch, gradient_clip_val=args.gradient_clip_val,
        log_every_n_steps=args.log_every_n_steps, deterministic=args.deterministic, logger=logger,
        callbacks=callbacks, plugins=[AtomicCheckpointIO()], enable_progress_bar=args.progress_every <= 0,
        # the data module shards the data between DDP processes itself, with its seeded sampler
        # (see echo.data_module.EpochSampler); Lightning's replacement would drop that order
        use_distributed_sampler=False,
    )
    if trainer.is_global_zero:
        logger.experiment  # noqa: B018 -- the logger creates the run's folder first, or it warns that it is not empty
        command_line = sys.argv[1:] if argv is None else list(argv)
        write_run_info(logger.log_dir, seed=args.seed, resumed_from=args.ckpt, argv=command_line, args=vars(args))
    # weights_only: tensors and plain values only, also for Lightning's own read of the file
    trainer.fit(model, datamodule=data, ckpt_path=args.ckpt, weights_only=True)
    last_path = last.last_model_path or last.best_model_path  # written at a stop, or at an epoch's end
    if not last_path:
        print(f"no checkpoint written: training stopped at step {trainer.global_step} before a step was saved "
              f"(check --max_steps / --max_epochs / --max_time)", file=sys.stderr)
    print(f"checkpoints: {checkpoints.dirpath} (last: {last_path or 'none'}, "
          f"best valid_loss: {checkpoints.best_model_path or 'none'}; step {trainer.global_step})")


if __name__ == "__main__":
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    try:
        main()
    except (AudioError, CheckpointError, NonFiniteLossError) as err:
        sys.exit(f"error: {err}")
