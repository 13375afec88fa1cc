"""The ECHO model: a backbone that predicts clean speech, trained on the noise-augmented
forward process of an SDE (METHOD.md section 2)."""
import warnings

import lightning.pytorch as pl
import torch

from echo.backbones import BackboneRegistry
from echo.output_scaling import (DEFAULT_OUTPUT_SCALING, DEFAULT_SIGMA_DATA, OUTPUT_SCALINGS, edm_coefficients,
                                 resolve_output_scaling)
from echo.remix import REMIX_MODES, NoiseBank, decouple_noise, foreign_noise, remix
from echo.sdes import SDERegistry, complex_randn_like
from echo.spectral import SpecConfig, Spectrogram
from echo.util.seeding import derive_seed


class NonFiniteLossError(RuntimeError):
    pass


class ScoreModel(pl.LightningModule):
    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("model")
        group.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
        group.add_argument("--lr_decay_steps", type=int, default=0,
                           help="Optimizer steps over which the learning rate falls linearly from --lr to --lr_min, "
                                "then stays there (default 0: constant --lr). Counted from the run's first step: a "
                                "run started from --init_weights decays over its own steps")
        group.add_argument("--lr_min", type=float, default=0.0,
                           help="Learning rate at the end of --lr_decay_steps (default 0)")
        group.add_argument("--ema_decay", type=float, default=0.999,
                           help="Decay of the weight EMA used for validation and enhancement (default 0.999)")
        group.add_argument("--loss_type", type=str, default="mse", choices=("mse", "mae"),
                           help="Squared (mse, default) or absolute (mae) error of the clean-speech estimate")
        group.add_argument("--remix", type=str, default="echo", choices=REMIX_MODES,
                           help="Real-noise term of the perturbation: echo (beta-blend of own and bank noise, "
                                "default), dans (bank noise only), own (own noise only), none")
        group.add_argument("--noise_bank_size", type=int, default=128,
                           help="Examples of earlier training noise kept for re-mixup (default 128)")
        group.add_argument("--output_scaling", type=str, default=None, choices=OUTPUT_SCALINGS,
                           help=f"How the network output becomes the clean-speech estimate: none (default for echo: "
                                f"{DEFAULT_OUTPUT_SCALING}), release (divide the output pyramid by t, as the release "
                                f"and SGMSE+; default for ouve), after (divide the final output by t), edm "
                                f"(EDM preconditioning from alpha(t), sigma(t)); see README 'Output scaling'")
        group.add_argument("--sigma_data", type=float, default=DEFAULT_SIGMA_DATA,
                           help=f"Std of the compressed clean spectrogram, for --output_scaling edm "
                                f"(default {DEFAULT_SIGMA_DATA})")
        group.add_argument("--num_eval_files", type=int, default=20,
                           help="Validation files enhanced and scored at each validation (default 20; 0 = off)")
        group.add_argument("--max_bad_steps", type=int, default=10,
                           help="Stop after this many consecutive non-finite losses (each is skipped; default 10)")
        return parser

    def __init__(self, backbone="ncsnpp_deform", sde="echo", lr=1e-4, lr_decay_steps=0, lr_min=0.0,
                 ema_decay=0.999, loss_type="mse",
                 remix="echo", noise_bank_size=128, num_eval_files=20, max_bad_steps=10, sr=16000,
                 n_fft=510, hop_length=128, num_frames=256, spec_factor=0.15, spec_abs_exponent=0.5,
                 transform_type="exponent", normalize="noisy", seed=0, output_scaling=None,
                 sigma_data=DEFAULT_SIGMA_DATA, **kwargs):
        super().__init__()
        if remix not in REMIX_MODES:
            raise ValueError(f"unknown remix mode '{remix}' (known: {', '.join(REMIX_MODES)})")
        if loss_type not in ("mse", "mae"):
            raise ValueError(f"unknown loss_type '{loss_type}'")
        # every argument is a plain value, so a checkpoint loads without the training code's classes
        self.save_hyperparameters()
        self.sde = SDERegistry.get_by_name(sde)(**kwargs)
        self.output_scaling = resolve_output_scaling(output_scaling, kwargs.pop("scale_by_sigma", None),
                                                     self.sde.prediction)
        self.sigma_data = float(sigma_data)
        # the resolved value is what the checkpoint keeps: a later change of the default must not
        # change what an existing checkpoint computes
        self.hparams["output_scaling"] = self.output_scaling
        self.hparams["scale_by_sigma"] = self.output_scaling == "release"
        self.dnn = BackboneRegistry.get_by_name(backbone)(scale_by_sigma=self.output_scaling == "release", **kwargs)
        self.spectrogram = Spectrogram(SpecConfig(n_fft=n_fft, hop_length=hop_length,
                                                  transform_type=transform_type, spec_factor=spec_factor,
                                                  spec_abs_exponent=spec_abs_exponent))
        if lr_decay_steps < 0 or not 0 <= lr_min <= lr:
            raise ValueError(f"lr_decay_steps must be >= 0 and 0 <= lr_min <= lr (got {lr_decay_steps}, {lr_min}, {lr})")
        self.lr, self.loss_type, self.remix_mode = lr, loss_type, remix
        self.lr_decay_steps, self.lr_min = int(lr_decay_steps), float(lr_min)
        self.noise_bank = NoiseBank(noise_bank_size)
        self.num_eval_files = num_eval_files
        self.max_bad_steps = max_bad_steps
        self.seed = seed  # with the step, it seeds the step's random numbers (see step_generators)
        self._bad_steps = 0

    @property
    def frames_multiple(self):
        return self.dnn.downsampling_factor

    def forward(self, x_t, y, t):
        """From the state x_t, the noisy condition y and the time t: the clean-speech estimate
        (data-predicting SDEs such as echo) or the score (score-based SDEs such as ouve, where
        the score is the negated network output, as in SGMSE+)."""
        if self.output_scaling == "edm":
            alpha = self.sde.alpha(t).reshape(-1, 1, 1, 1)
            c_in, c_skip, c_out = edm_coefficients(alpha, self.sde.sigma(t).reshape(-1, 1, 1, 1), self.sigma_data)
            scaled = x_t / alpha
            return c_skip * scaled + c_out * self.dnn(torch.cat([c_in * scaled, y], dim=1), t)
        out = self.dnn(torch.cat([x_t, y], dim=1), t)
        if self.output_scaling == "after":
            out = out / t.reshape(-1, 1, 1, 1)
        return -out if self.sde.prediction == "score" else out

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        if not self.lr_decay_steps:
            return optimizer
        # a linear fall at the end of training (the decay phase of a warmup-stable-decay schedule)
        # lowers the loss beyond what the weight EMA alone reaches; the scheduler's step count is
        # in the checkpoint, so a resumed run continues the same fall
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.lr_factor(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """The learning rate after ``step`` optimizer steps, as a fraction of --lr."""
        if not self.lr_decay_steps:
            return 1.0
        end = self.lr_min / self.lr if self.lr > 0 else 1.0
        done = min(step, self.lr_decay_steps) / self.lr_decay_steps
        return 1.0 + (end - 1.0) * done

    def loss_fn(self, err):
        per_bin = err.abs().square() if self.loss_type == "mse" else err.abs()
        return torch.mean(0.5 * per_bin.reshape(per_bin.shape[0], -1).sum(dim=-1))

    def step_generators(self, stage, batch_idx):
        """(generator on the model's device, generator on the CPU) for one step, both seeded from
        (seed, stage, rank, global step, batch index): the step's random numbers depend on where
        it is in the run, not on what ran before, so a resumed run draws what the uninterrupted
        run drew. The rank gives each DDP process its own numbers; the batch index separates the
        micro-batches of one optimizer step (gradient accumulation) and a batch retried after a
        skipped one. Validation leaves the step out: the same weights give the same valid_loss.

        Torch's global generator is seeded the same way, so that randomness drawn from it
        inside the network (dropout) follows the step too.
        """
        step = self.global_step if stage == "train" else "-"
        seed = derive_seed(self.seed, stage, self.global_rank, step, batch_idx)
        torch.manual_seed(seed)
        on_cpu = torch.Generator().manual_seed(seed)
        if self.device.type == "cpu":
            return on_cpu, on_cpu
        return torch.Generator(device=self.device).manual_seed(seed), on_cpu

    def _step(self, batch, training, generators=(None, None)):
        """The loss of a batch. ``generators``: (on the model's device, on the CPU) for t, the
        Gaussian noise, the remix weights and the bank draw; None: torch's global generator."""
        clean, noisy = batch
        on_device, on_cpu = generators
        t = self.sde.sample_t(clean.shape[0], clean.device, generator=on_device)
        if self.sde.prediction == "score":
            return self._score_matching_loss(clean, noisy, t, on_device)
        own = decouple_noise(clean, noisy)
        noise_mix = remix(self.remix_mode, own, foreign_noise(self.noise_bank, own, on_cpu), on_cpu)
        # after drawing: a batch never meets its own noise as foreign; a non-finite batch is kept
        # out, or it would poison the steps that draw from the bank after it is skipped
        if training and torch.isfinite(own).all():
            self.noise_bank.push(own)
        x_t = self.sde.perturb(clean, t, noise_mix, generator=on_device, y=noisy)
        return self.loss_fn(self(x_t, noisy, t) - clean)

    def _score_matching_loss(self, clean, noisy, t, generator=None):
        """SGMSE+'s denoising score matching with sigma^2 weighting: |sigma s(x_t) + z|^2.
        Its noise is Gaussian only: the mean already moves towards y (noise interpolation)."""
        z = complex_randn_like(clean, generator)
        mean, std = self.sde.marginal_prob(clean, t, noisy)
        std = std.reshape(-1, 1, 1, 1)
        score = self(mean + std * z, noisy, t)
        return self.loss_fn(score * std + z)

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, training=True, generators=self.step_generators("train", batch_idx))
        if not torch.isfinite(loss):
            self._bad_steps += 1
            if self._bad_steps >= self.max_bad_steps:
                raise NonFiniteLossError(f"{self._bad_steps} consecutive non-finite losses at step "
                                         f"{self.global_step}; lower --lr or set --gradient_clip_val")
            warnings.warn(f"non-finite loss at step {self.global_step}: batch skipped")
            # no backward pass: the optimizer finds no gradients and leaves the weights as they are
            # (Lightning still counts the step, which keeps every later step's seed as it was)
            return None
        self._bad_steps = 0
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch[0].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self._step(batch, training=False, generators=self.step_generators("valid", batch_idx))
        self.log("valid_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch[0].shape[0])
        # the EMA weights are swapped in for the whole validation epoch, so score them here
        if batch_idx == 0 and self.num_eval_files > 0 and self.trainer is not None and self.trainer.datamodule:
            self._log_speech_metrics()
        return loss

    def _log_speech_metrics(self):
        from echo.validation import evaluate_files, spectrogram_figure

        dataset = self.trainer.datamodule.datasets["valid"]
        means, example = evaluate_files(self, dataset, self.num_eval_files)
        for key, value in means.items():
            self.log(key, value, on_step=False, on_epoch=True, sync_dist=True, batch_size=1)
        if example is not None and self.trainer.is_global_zero and self.logger is not None:
            log_figure(self.logger, spectrogram_figure(*example, self.hparams.sr), self.global_step)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["noise_bank"] = self.noise_bank.state_dict()
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank fills its bank from its own share of the data, and only rank 0 writes the
            # file: gather them all, so that each rank of a resumed run gets its own bank back
            banks = [None] * world
            torch.distributed.all_gather_object(banks, _bank_on_cpu(self.noise_bank.state_dict()))
            checkpoint["noise_banks"] = banks

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("noise_bank")
        banks = checkpoint.get("noise_banks")
        if banks and self._trainer is not None and len(banks) == self.trainer.world_size:
            state = banks[self.trainer.global_rank]
        if state is not None:
            self.noise_bank.load_state_dict(state)

    def on_fit_start(self):
        # a bank restored from a checkpoint lives on the CPU until the device is known
        if len(self.noise_bank):
            self.noise_bank.load_state_dict(self.noise_bank.state_dict(), device=self.device)


def _bank_on_cpu(state):
    return {key: value.cpu() if torch.is_tensor(value) else value for key, value in state.items()}


def log_figure(logger, fig, step):
    """Send a matplotlib figure to whichever logger is in use; CSV runs get a PNG file."""
    import matplotlib.pyplot as plt
    from pathlib import Path

    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_figure"):  # TensorBoard
        experiment.add_figure("spectrograms", fig, global_step=step)
    elif type(logger).__name__ == "WandbLogger":
        logger.log_image(key="spectrograms", images=[fig], step=step)
    else:
        folder = Path(logger.log_dir) / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / f"spectrograms_step{step:07d}.png", dpi=80)
    plt.close(fig)
