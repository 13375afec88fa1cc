"""How the network's raw output becomes the clean-speech estimate (``--output_scaling``).

The release keeps SGMSE+'s division of the output pyramid by t (``release``), a rule made for
score networks, whose target grows like 1/sigma. ECHO's network predicts clean speech, whose
level does not depend on t, so the division must be learned away over a 25-fold range of t;
until it is, the estimate's level depends on t and multi-step sampling drifts (see README,
"Output scaling"). The choices:

- ``release``: divide the 4-channel output pyramid by t before the final (deformable) 1x1 layer;
- ``none``: no division, the network output is the estimate;
- ``after``: divide the output of the final layer by t (the offset and mask predictors of the
  deformable output layer see an undivided input);
- ``edm``: EDM preconditioning (Karras et al. 2022) over the VP marginal
  x_t = alpha s + sigma z: with x~ = x_t / alpha and s~ = sigma / alpha (the noise level of x~),
  D = c_skip x~ + c_out F(c_in x~, y, t), c_skip = sd^2 / (s~^2 + sd^2),
  c_out = s~ sd / sqrt(s~^2 + sd^2), c_in = 1 / sqrt(s~^2 + sd^2), sd = ``sigma_data``.
  The network's target then has unit scale at every t, and at small t the estimate leans on
  the state itself.
"""

OUTPUT_SCALINGS = ("release", "none", "after", "edm")
# the default of data-predicting SDEs (echo), chosen by the measurement in
# experiments/results/output_scaling.md; score-based SDEs (ouve) keep the release's rule
DEFAULT_OUTPUT_SCALING = "none"
# std of the compressed clean spectrogram (spec_factor 0.15, exponent 0.5) of peak-normalised
# speech, per complex bin: 0.088 over 60 whole LibriSpeech train-clean-100 files divided by
# their peak, 0.110 over their 2-s centre crops divided by the crop's peak
DEFAULT_SIGMA_DATA = 0.1


def resolve_output_scaling(output_scaling=None, scale_by_sigma=None, prediction="data"):
    """The output scaling a model uses. ``scale_by_sigma`` is the older flag (and the key in
    checkpoints written before ``output_scaling`` existed): True means ``release``, False
    ``none``. Given both, they must agree."""
    legacy = None if scale_by_sigma is None else ("release" if scale_by_sigma else "none")
    if output_scaling is None:
        if legacy is not None:
            return legacy
        return DEFAULT_OUTPUT_SCALING if prediction == "data" else "release"
    if output_scaling not in OUTPUT_SCALINGS:
        raise ValueError(f"unknown output_scaling '{output_scaling}' (known: {', '.join(OUTPUT_SCALINGS)})")
    if legacy is not None and legacy != output_scaling and not (legacy == "none" and output_scaling in ("after", "edm")):
        raise ValueError(f"--output_scaling {output_scaling} contradicts --{'' if scale_by_sigma else 'no-'}scale_by_sigma")
    if output_scaling == "edm" and prediction != "data":
        raise ValueError("output_scaling 'edm' needs a clean-speech-predicting SDE such as echo")
    return output_scaling


def edm_coefficients(alpha, sigma, sigma_data):
    """(c_in, c_skip, c_out) applied to x_t / alpha; tensors of t's shape."""
    s = sigma / alpha
    norm = (s ** 2 + sigma_data ** 2).sqrt()
    return 1.0 / norm, sigma_data ** 2 / norm ** 2, s * sigma_data / norm
