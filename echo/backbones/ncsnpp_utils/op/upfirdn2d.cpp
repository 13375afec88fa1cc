// Python binding and argument checks of the upfirdn2d CUDA kernel (see upfirdn2d_kernel.cu).
#include <torch/extension.h>

at::Tensor upfirdn2d_cuda(const at::Tensor& input, const at::Tensor& kernel, int64_t up, int64_t down,
                          int64_t pad_y0, int64_t pad_y1, int64_t pad_x0, int64_t pad_x1);

static at::Tensor upfirdn2d(const at::Tensor& input, const at::Tensor& kernel, int64_t up, int64_t down,
                            int64_t pad_y0, int64_t pad_y1, int64_t pad_x0, int64_t pad_x1) {
  TORCH_CHECK(input.is_cuda(), "upfirdn2d: input must be a CUDA tensor");
  TORCH_CHECK(input.dim() == 4, "upfirdn2d: input must be [N, C, H, W]");
  TORCH_CHECK(kernel.dim() == 2, "upfirdn2d: kernel must be 2-D");
  TORCH_CHECK(up >= 1 && down >= 1, "upfirdn2d: up and down must be >= 1");
  const int64_t rows = input.size(2) * up + pad_y0 + pad_y1 - kernel.size(0);
  const int64_t cols = input.size(3) * up + pad_x0 + pad_x1 - kernel.size(1);
  TORCH_CHECK(rows >= 0 && cols >= 0, "upfirdn2d: the padded signal is shorter than the kernel");
  return upfirdn2d_cuda(input, kernel, up, down, pad_y0, pad_y1, pad_x0, pad_x1);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("upfirdn2d", &upfirdn2d,
        "upfirdn2d(input, kernel, up, down, pad_y0, pad_y1, pad_x0, pad_x1): zero-insertion upsampling, "
        "padding, FIR convolution and decimation of [N, C, H, W]");
}
