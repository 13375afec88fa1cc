// Python binding and argument checks of the fused bias + activation CUDA kernel.
#include <torch/extension.h>

at::Tensor fused_bias_act_cuda(const at::Tensor& input, const at::Tensor& bias, const at::Tensor& ref,
                               int64_t activation, int64_t order, double alpha, double gain);

static at::Tensor fused_bias_act(const at::Tensor& input, const at::Tensor& bias, const at::Tensor& ref,
                                 int64_t activation, int64_t order, double alpha, double gain) {
  TORCH_CHECK(input.is_cuda(), "fused_bias_act: input must be a CUDA tensor");
  TORCH_CHECK(activation >= 0 && activation <= 3, "fused_bias_act: unknown activation code ", activation);
  TORCH_CHECK(order >= 0 && order <= 2, "fused_bias_act: derivative order must be 0, 1 or 2");
  if (bias.numel() > 0) {
    TORCH_CHECK(input.dim() >= 2 && bias.dim() == 1 && bias.size(0) == input.size(1),
                "fused_bias_act: bias must have as many entries as input has channels (dim 1)");
    TORCH_CHECK(bias.scalar_type() == input.scalar_type() && bias.device() == input.device(),
                "fused_bias_act: bias must have the dtype and device of input");
  }
  if (ref.numel() > 0) {
    TORCH_CHECK(ref.sizes() == input.sizes() && ref.scalar_type() == input.scalar_type() &&
                    ref.device() == input.device(),
                "fused_bias_act: ref must have the shape, dtype and device of input");
  }
  return fused_bias_act_cuda(input, bias, ref, activation, order, alpha, gain);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fused_bias_act", &fused_bias_act,
        "fused_bias_act(input, bias, ref, activation, order, alpha, gain): order 0 gives "
        "gain * act(input + bias); order n > 0 gives input * gain * act^(n) at the point given by ref");
}
