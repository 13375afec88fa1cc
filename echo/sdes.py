"""Forward processes (SDEs). ``echo`` is the default: a variance-preserving process whose
Gaussian noise is augmented with the (re-mixed) real noise of the recording (METHOD.md section 2).

An SDE here knows its marginal (mean and std of x_t given clean speech), how to draw the
prior at t = 1, and the discrete schedule its sampler walks down.
"""
import math

import torch

from echo.util.registry import Registry

SDERegistry = Registry("SDE")


def complex_randn_like(x: torch.Tensor, generator=None) -> torch.Tensor:
    """Complex standard normal noise: real and imaginary parts each of variance 1/2."""
    if x.is_complex():
        real = torch.randn(x.shape, generator=generator, dtype=x.real.dtype, device=x.device)
        imag = torch.randn(x.shape, generator=generator, dtype=x.real.dtype, device=x.device)
        return torch.complex(real, imag) / math.sqrt(2.0)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _per_example(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a [B] tensor so that it broadcasts over the other axes of ``like``."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


@SDERegistry.register("echo")
class EchoSDE:
    """VP SDE with linear beta(t) and the noise-augmented perturbation of ECHO.

    beta(t) = beta_min + t (beta_max - beta_min); alpha(t) = exp(-1/2 int_0^t beta);
    sigma(t) = sqrt(1 - alpha(t)^2). Training perturbs clean speech s as
    x_t = alpha(t) s + sigma(t) (eps + t n_mix), where n_mix is the re-mixed real noise.
    """

    T = 1.0
    prediction = "data"  # the network estimates clean speech, not a score

    def __init__(self, beta_min=0.5, beta_max=10.0, N=20, t_eps=0.04, **ignored):
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        if not 0 < t_eps < 1:
            raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        self.N = int(N)
        self.t_eps = float(t_eps)

    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("ECHO SDE")
        group.add_argument("--beta_min", type=float, default=0.5, help="beta(0) of the VP process (default 0.5)")
        group.add_argument("--beta_max", type=float, default=10.0, help="beta(1) of the VP process (default 10)")
        group.add_argument("--N", type=int, default=20, help="Default number of reverse steps saved with the model (default 20)")
        group.add_argument("--t_eps", type=float, default=0.04, help="Smallest diffusion time, for training and sampling (default 0.04)")
        return parser

    def hparams(self):
        return dict(beta_min=self.beta_min, beta_max=self.beta_max, N=self.N, t_eps=self.t_eps)

    # continuous process
    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t):
        return -0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2)

    def alpha(self, t):
        return torch.exp(self.log_alpha(t)) if torch.is_tensor(t) else math.exp(self.log_alpha(t))

    def sigma(self, t):
        a = self.alpha(t)
        return torch.sqrt(1.0 - a ** 2) if torch.is_tensor(t) else math.sqrt(1.0 - a ** 2)

    def marginal_prob(self, x0, t, y=None):
        """Mean and std of x_t | x0 (the VP marginal ignores y)."""
        alpha = _per_example(self.alpha(t), x0)
        return alpha * x0, self.sigma(t)

    def sample_t(self, batch_size, device, generator=None):
        """t ~ U(t_eps, T) per example."""
        u = torch.rand(batch_size, device=device, generator=generator)
        return self.t_eps + u * (self.T - self.t_eps)

    def perturb(self, x0, t, noise_mix, generator=None, y=None):
        """x_t = alpha(t) x0 + sigma(t) (eps + t n_mix); ``noise_mix`` None means eps alone
        (``y``, the noisy condition, is not part of this process)."""
        z = complex_randn_like(x0, generator)
        if noise_mix is not None:
            z = z + _per_example(t, x0) * noise_mix
        mean, std = self.marginal_prob(x0, t)
        return mean + _per_example(std, x0) * z

    def prior_sampling(self, y, generator=None):
        """x_T = alpha(1) y + sigma(1) eps: the released sampler starts from the continuous
        marginal at t = 1, although its steps follow the discrete chain below."""
        t = torch.ones(y.shape[0], device=y.device)
        alpha = _per_example(self.alpha(t), y)
        sigma = _per_example(self.sigma(t), y)
        return alpha * y + sigma * complex_randn_like(y, generator)

    def score_from_clean(self, x_t, clean, t):
        """Score of the Gaussian marginal N(alpha s, sigma^2) at x_t with s replaced by the network's
        estimate (Tweedie's relation); it ignores the real-noise term, which sampling never adds."""
        alpha = _per_example(self.alpha(t), x_t)
        sigma = _per_example(self.sigma(t), x_t)
        return (alpha * clean - x_t) / sigma ** 2

    # discrete chain used by the sampler
    def discrete_schedule(self, N=None, device="cpu"):
        """DDPM chain with beta_k = linspace(beta_min/N, beta_max/N, N): returns
        (betas, alphas, alpha_bars), each of length N, in float64 for an exact posterior."""
        N = self.N if N is None else int(N)
        betas = torch.linspace(self.beta_min / N, self.beta_max / N, N, dtype=torch.float64, device=device)
        alphas = 1.0 - betas
        return betas, alphas, torch.cumprod(alphas, dim=0)

    def copy(self, **changes):
        params = self.hparams()
        params.update(changes)
        return type(self)(**params)


@SDERegistry.register("ouve")
class OUVESDE:
    """SGMSE+'s Ornstein-Uhlenbeck process with variance exploding diffusion (the baseline).

    dx = theta (y - x) dt + g(t) dw, g(t) = sigma_min (sigma_max/sigma_min)^t sqrt(2 ln(sigma_max/sigma_min)).
    The mean moves from clean speech towards y ("noise interpolation"); the network predicts the score.
    """

    T = 1.0
    prediction = "score"
    default_predictor = "reverse_diffusion"
    default_corrector = "ald"
    default_snr = 0.5

    def __init__(self, theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30, t_eps=0.03, **ignored):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if not 0 < t_eps < 1:
            raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")
        self.theta, self.sigma_min, self.sigma_max = float(theta), float(sigma_min), float(sigma_max)
        self.N, self.t_eps = int(N), float(t_eps)
        self.logsig = math.log(self.sigma_max / self.sigma_min)

    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("OUVE SDE")
        group.add_argument("--theta", type=float, default=1.5, help="Stiffness of the drift towards y (default 1.5)")
        group.add_argument("--sigma_min", type=float, default=0.05, help="Smallest diffusion std (default 0.05)")
        group.add_argument("--sigma_max", type=float, default=0.5, help="Largest diffusion std (default 0.5)")
        group.add_argument("--N", type=int, default=30, help="Default number of reverse steps saved with the model (default 30)")
        group.add_argument("--t_eps", type=float, default=0.03, help="Smallest diffusion time (default 0.03)")
        return parser

    def hparams(self):
        return dict(theta=self.theta, sigma_min=self.sigma_min, sigma_max=self.sigma_max, N=self.N, t_eps=self.t_eps)

    def copy(self, **changes):
        params = self.hparams()
        params.update(changes)
        return type(self)(**params)

    def sample_t(self, batch_size, device, generator=None):
        u = torch.rand(batch_size, device=device, generator=generator)
        return self.t_eps + u * (self.T - self.t_eps)

    def _std(self, t):
        lam = self.logsig
        exp = torch.exp if torch.is_tensor(t) else math.exp
        sqrt = torch.sqrt if torch.is_tensor(t) else math.sqrt
        var = self.sigma_min ** 2 * (exp(2 * t * lam) - exp(-2 * self.theta * t)) * lam / (self.theta + lam)
        return sqrt(var)

    def marginal_prob(self, x0, t, y):
        decay = _per_example(torch.exp(-self.theta * t), x0)
        return decay * x0 + (1 - decay) * y, self._std(t)

    def sde(self, x, t, y):
        drift = self.theta * (y - x)
        diffusion = self.sigma_min * (self.sigma_max / self.sigma_min) ** t * math.sqrt(2 * self.logsig)
        return drift, diffusion

    def prior_sampling(self, y, generator=None):
        std = self._std(torch.ones(y.shape[0], device=y.device))
        return y + _per_example(std, y) * complex_randn_like(y, generator)


@SDERegistry.register("predictive")
class PredictiveProcess:
    """No diffusion: the network maps the noisy spectrogram to clean speech in one pass.

    The baseline that asks whether the diffusion part pays: the same backbone and loss, trained
    on the same data, with the state channels holding the noisy input itself and t fixed at 1.
    Sampling is a single network evaluation (``ddim`` at N = 1 returns the estimate)."""

    T = 1.0
    prediction = "data"
    default_predictor = "ddim"

    def __init__(self, N=1, t_eps=0.04, **ignored):
        self.N, self.t_eps = 1, float(t_eps)

    @staticmethod
    def add_argparse_args(parser):
        group = parser.add_argument_group("predictive baseline")
        group.add_argument("--N", type=int, default=1, help="Network evaluations per file (always 1)")
        return parser

    def hparams(self):
        return dict(N=1, t_eps=self.t_eps)

    def copy(self, **changes):
        return type(self)(t_eps=changes.get("t_eps", self.t_eps))

    def sample_t(self, batch_size, device, generator=None):
        return torch.ones(batch_size, device=device)

    def alpha(self, t):
        return torch.ones_like(t) if torch.is_tensor(t) else 1.0

    def sigma(self, t):
        return torch.ones_like(t) if torch.is_tensor(t) else 1.0

    def perturb(self, x0, t, noise_mix, generator=None, y=None):
        return y

    def prior_sampling(self, y, generator=None):
        return y
