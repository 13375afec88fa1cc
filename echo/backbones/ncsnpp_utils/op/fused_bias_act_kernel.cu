// Bias + activation + gain in one elementwise pass, and the derivatives its backward needs.
//
// order 0:  out = gain * act(x + bias[c])
// order n:  out = x * gain * act^(n)(z), n = 1, 2, where x is an incoming gradient and z the
//           pre-activation, recovered from `ref`:
//             linear       act' = 1, no ref needed;
//             relu, lrelu  ref is the forward output, whose sign (times the sign of gain) is
//                          the sign of z; that is all the piecewise-linear derivative needs;
//             silu         ref is the forward input, z = ref + bias[c].
// Activation codes: 0 linear, 1 relu, 2 lrelu (slope alpha), 3 silu.
// Arithmetic is in float (double for double tensors), whatever the storage type.
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

enum Activation : int { kLinear = 0, kRelu = 1, kLeakyRelu = 2, kSilu = 3 };

template <typename acc_t>
struct ActivationParams {
  int activation;
  int order;
  acc_t alpha;
  acc_t gain;
};

template <typename acc_t>
__device__ __forceinline__ acc_t sigmoid(acc_t z) {
  return acc_t(1) / (acc_t(1) + exp(-z));
}

template <typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t z, const ActivationParams<acc_t>& p) {
  switch (p.activation) {
    case kRelu:
      return z > acc_t(0) ? z : acc_t(0);
    case kLeakyRelu:
      return z > acc_t(0) ? z : p.alpha * z;
    case kSilu:
      return z * sigmoid(z);
    default:
      return z;
  }
}

// True where the pre-activation was positive, read from the forward output y = gain * act(z).
template <typename acc_t>
__device__ __forceinline__ bool positive_side(acc_t output, acc_t gain) {
  return gain > acc_t(0) ? output > acc_t(0) : output < acc_t(0);
}

template <typename acc_t>
__device__ __forceinline__ acc_t first_derivative(acc_t ref, acc_t bias, const ActivationParams<acc_t>& p) {
  switch (p.activation) {
    case kRelu:
      return positive_side(ref, p.gain) ? acc_t(1) : acc_t(0);
    case kLeakyRelu:
      return positive_side(ref, p.gain) ? acc_t(1) : p.alpha;
    case kSilu: {
      const acc_t z = ref + bias;
      const acc_t s = sigmoid(z);
      return s * (acc_t(1) + z * (acc_t(1) - s));
    }
    default:
      return acc_t(1);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t second_derivative(acc_t ref, acc_t bias, const ActivationParams<acc_t>& p) {
  if (p.activation != kSilu) return acc_t(0);  // piecewise linear
  const acc_t z = ref + bias;
  const acc_t s = sigmoid(z);
  return s * (acc_t(1) - s) * (acc_t(2) + z * (acc_t(1) - acc_t(2) * s));
}

template <typename scalar_t, typename acc_t>
__global__ void fused_bias_act_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ bias,
                                      const scalar_t* __restrict__ ref, scalar_t* __restrict__ output,
                                      int64_t total, int64_t channels, int64_t inner, ActivationParams<acc_t> p) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total;
       index += stride) {
    const acc_t value = static_cast<acc_t>(input[index]);
    const acc_t b = bias != nullptr ? static_cast<acc_t>(bias[(index / inner) % channels]) : acc_t(0);
    acc_t result;
    if (p.order == 0) {
      result = activate(value + b, p);
    } else {
      const acc_t point = ref != nullptr ? static_cast<acc_t>(ref[index]) : acc_t(0);
      result = value * (p.order == 1 ? first_derivative(point, b, p) : second_derivative(point, b, p));
    }
    output[index] = static_cast<scalar_t>(result * p.gain);
  }
}

}  // namespace

at::Tensor fused_bias_act_cuda(const at::Tensor& input, const at::Tensor& bias, const at::Tensor& ref,
                               int64_t activation, int64_t order, double alpha, double gain) {
  const c10::cuda::OptionalCUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor b = bias.contiguous();
  const at::Tensor r = ref.contiguous();
  at::Tensor output = at::empty_like(x);
  const int64_t total = x.numel();
  if (total == 0) return output;
  const int64_t channels = x.dim() >= 2 ? x.size(1) : 1;
  const int64_t inner = x.dim() >= 2 ? total / (x.size(0) * channels) : 1;

  const int64_t blocks = std::min<int64_t>((total + kThreadsPerBlock - 1) / kThreadsPerBlock, kMaxBlocks);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(),
                                  "fused_bias_act_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ActivationParams<acc_t> params{static_cast<int>(activation), static_cast<int>(order),
                                         static_cast<acc_t>(alpha), static_cast<acc_t>(gain)};
    fused_bias_act_kernel<scalar_t, acc_t><<<blocks, kThreadsPerBlock, 0, stream>>>(
        x.data_ptr<scalar_t>(), b.numel() > 0 ? b.data_ptr<scalar_t>() : nullptr,
        r.numel() > 0 ? r.data_ptr<scalar_t>() : nullptr, output.data_ptr<scalar_t>(), total, channels, inner,
        params);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}
