// upfirdn2d on the GPU: one thread per output sample.
//
// Output sample (oy, ox) is the correlation of the flipped kernel with the padded, zero-inserted
// input at (oy * down, ox * down). Instead of materialising the zero-inserted signal, each
// thread visits only the kernel taps that land on real input samples: those whose position on
// the upsampled grid is a multiple of `up`, i.e. every up-th tap starting from a phase that
// depends on the output position. Accumulation is in float (double for double inputs).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = 65535;

struct ResampleGeometry {
  int64_t in_h, in_w, out_h, out_w;
  int64_t up, down;
  int64_t pad_y0, pad_x0;
  int64_t kernel_h, kernel_w;
};

// First tap t >= 0 with (offset + t) a multiple of up: where the input hits a real sample.
__device__ __forceinline__ int64_t first_live_tap(int64_t offset, int64_t up) {
  const int64_t phase = (-offset) % up;
  return phase < 0 ? phase + up : phase;
}

template <typename scalar_t, typename acc_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ input, const acc_t* __restrict__ kernel,
                                 scalar_t* __restrict__ output, int64_t planes, ResampleGeometry g) {
  const int64_t total = planes * g.out_h * g.out_w;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += stride) {
    const int64_t ox = index % g.out_w;
    const int64_t oy = (index / g.out_w) % g.out_h;
    const int64_t plane = index / (g.out_w * g.out_h);
    const scalar_t* plane_input = input + plane * g.in_h * g.in_w;
    // Positions on the zero-inserted (unpadded) grid that tap 0 reads.
    const int64_t origin_y = oy * g.down - g.pad_y0;
    const int64_t origin_x = ox * g.down - g.pad_x0;
    acc_t sum = 0;
    for (int64_t ty = first_live_tap(origin_y, g.up); ty < g.kernel_h; ty += g.up) {
      const int64_t iy = (origin_y + ty) / g.up;  // exact division by construction of ty
      if (iy < 0 || iy >= g.in_h) continue;
      // Correlating with the flipped kernel: tap ty reads kernel row kernel_h - 1 - ty.
      const acc_t* kernel_row = kernel + (g.kernel_h - 1 - ty) * g.kernel_w;
      const scalar_t* input_row = plane_input + iy * g.in_w;
      for (int64_t tx = first_live_tap(origin_x, g.up); tx < g.kernel_w; tx += g.up) {
        const int64_t ix = (origin_x + tx) / g.up;
        if (ix < 0 || ix >= g.in_w) continue;
        sum += static_cast<acc_t>(input_row[ix]) * kernel_row[g.kernel_w - 1 - tx];
      }
    }
    output[index] = static_cast<scalar_t>(sum);
  }
}

}  // namespace

at::Tensor upfirdn2d_cuda(const at::Tensor& input, const at::Tensor& kernel, int64_t up, int64_t down,
                          int64_t pad_y0, int64_t pad_y1, int64_t pad_x0, int64_t pad_x1) {
  const c10::cuda::OptionalCUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  ResampleGeometry g;
  g.in_h = x.size(2);
  g.in_w = x.size(3);
  g.up = up;
  g.down = down;
  g.pad_y0 = pad_y0;
  g.pad_x0 = pad_x0;
  g.kernel_h = kernel.size(0);
  g.kernel_w = kernel.size(1);
  g.out_h = (g.in_h * up + pad_y0 + pad_y1 - g.kernel_h) / down + 1;
  g.out_w = (g.in_w * up + pad_x0 + pad_x1 - g.kernel_w) / down + 1;
  const int64_t planes = x.size(0) * x.size(1);
  at::Tensor output = at::empty({x.size(0), x.size(1), g.out_h, g.out_w}, x.options());
  if (output.numel() == 0) return output;

  const int64_t blocks = std::min<int64_t>((output.numel() + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                  "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::Tensor taps = kernel.to(x.device(), c10::CppTypeToScalarType<acc_t>::value).contiguous();
    upfirdn2d_kernel<scalar_t, acc_t><<<blocks, kThreadsPerBlock, 0, stream>>>(
        x.data_ptr<scalar_t>(), taps.data_ptr<acc_t>(), output.data_ptr<scalar_t>(), planes, g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}
