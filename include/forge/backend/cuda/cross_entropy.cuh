#pragma once
// Softmax cross-entropy with an ignore index on the GPU, the definition of
// backend/cross_entropy.hpp (PyTorch CrossEntropyLoss, reduction "mean", ignore_index -100):
//   ℓ_t = logsumexp(z_t) − z_t[y_t],   L = (1/n) Σ_{t: y_t ≠ −100} ℓ_t
//   dz_t = (softmax(z_t) − onehot(y_t)) · grad_scale / n for kept rows, 0 for ignored rows
// n = number of kept rows; with n = 0 the loss is 0. Shapes: logits, dlogits [rows, vocab]
// in T; targets [rows] int64. One block per row: a single pass keeps a running maximum and
// rescaled sum per thread (the online softmax of Milakov & Gimelshein 2018), a second pass
// writes the gradient. Row losses are summed in a fixed order (reproducible).

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "forge/backend/cuda/check.cuh"
#include "forge/backend/cuda/context.cuh"
#include "forge/backend/cuda/numeric.cuh"

namespace forge::cuda {

/// The label that marks a row as not contributing to the loss (as on the CPU).
inline constexpr std::int64_t ce_ignore_index = -100;

namespace detail {

// status[0] = kept rows, status[1] = first row with an out-of-range target (or INT_MAX).
__global__ void ce_count_kernel(std::int64_t rows, std::int64_t vocab,
                                const std::int64_t* __restrict__ targets, int* status) {
  __shared__ float scratch[32];
  float kept = 0.0f;
  int bad = 0x7fffffff;
  for (std::int64_t t = threadIdx.x; t < rows; t += blockDim.x) {
    const std::int64_t y = targets[t];
    if (y != ce_ignore_index) {
      kept += 1.0f;
      if (y < 0 || y >= vocab) bad = min(bad, int(t));
    }
  }
  kept = block_sum(kept, scratch);
  if (bad != 0x7fffffff) atomicMin(status + 1, bad);
  if (threadIdx.x == 0) status[0] = int(kept + 0.5f);
}

/// Online logsumexp of one row, reduced over the block.
template <class T>
__device__ float row_logsumexp(const T* z, std::int64_t vocab, float* scratch) {
  float mx = -INFINITY, sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float v = to_f32(z[i]);
    if (v > mx) {
      sum = sum * expf(mx - v) + 1.0f;
      mx = v;
    } else {
      sum += expf(v - mx);
    }
  }
  const float gmx = block_max(mx, scratch);
  sum = mx == -INFINITY ? 0.0f : sum * expf(mx - gmx);
  sum = block_sum(sum, scratch);
  return gmx + logf(sum);
}

template <class T>
__global__ void ce_row_kernel(std::int64_t vocab, const T* __restrict__ logits,
                              const std::int64_t* __restrict__ targets, const int* status,
                              T* __restrict__ dlogits, float grad_scale,
                              float* __restrict__ row_loss) {
  __shared__ float scratch[32];
  const std::int64_t t = blockIdx.x;
  const std::int64_t y = targets[t];
  const T* z = logits + t * vocab;
  T* dz = dlogits ? dlogits + t * vocab : nullptr;
  if (y == ce_ignore_index || y < 0 || y >= vocab) {  // out-of-range rows are reported by status
    if (dz)
      for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x) dz[i] = from_f32<T>(0.0f);
    if (threadIdx.x == 0) row_loss[t] = 0.0f;
    return;
  }
  const float lse = row_logsumexp(z, vocab, scratch);
  if (threadIdx.x == 0) row_loss[t] = lse - to_f32(z[y]);
  if (dz) {
    const float g = status[0] > 0 ? grad_scale / float(status[0]) : 0.0f;
    for (std::int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
      dz[i] = from_f32<T>((expf(to_f32(z[i]) - lse) - (i == y ? 1.0f : 0.0f)) * g);
  }
}

// loss = Σ row_loss / n, summed in double by one block in a fixed order.
__global__ void ce_mean_kernel(std::int64_t rows, const float* __restrict__ row_loss,
                               const int* status, double* loss) {
  __shared__ double part[256];
  double s = 0.0;
  for (std::int64_t t = threadIdx.x; t < rows; t += blockDim.x) s += double(row_loss[t]);
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = status[0] > 0 ? part[0] / double(status[0]) : 0.0;
}

}  // namespace detail

/// Mean cross-entropy over kept rows; writes dlogits (if not null) for dL = grad_scale.
/// Waits for the result and throws forge::error naming the first row whose target is
/// neither −100 nor in [0, vocab).
template <class T>
double cross_entropy(context& ctx, std::int64_t rows, std::int64_t vocab, const T* logits,
                     const std::int64_t* targets, T* dlogits, double grad_scale = 1.0) {
  if (rows <= 0) return 0.0;
  cudaStream_t s = ctx.stream();
  auto status = ctx.alloc<int>(2);
  auto row_loss = ctx.alloc<float>(std::size_t(rows));
  auto loss = ctx.alloc<double>(1);
  const int init[2] = {0, 0x7fffffff};
  FORGE_CUDA_CHECK(cudaMemcpyAsync(status.data(), init, sizeof init, cudaMemcpyHostToDevice, s));
  detail::ce_count_kernel<<<1, 1024, 0, s>>>(rows, vocab, targets, status.data());
  FORGE_CUDA_CHECK_LAUNCH("ce_count_kernel");
  detail::ce_row_kernel<T><<<unsigned(rows), vocab >= 8192 ? 1024u : 256u, 0, s>>>(
      vocab, logits, targets, status.data(), dlogits, float(grad_scale), row_loss.data());
  FORGE_CUDA_CHECK_LAUNCH("ce_row_kernel");
  detail::ce_mean_kernel<<<1, 256, 0, s>>>(rows, row_loss.data(), status.data(), loss.data());
  FORGE_CUDA_CHECK_LAUNCH("ce_mean_kernel");
  int st[2];
  double l = 0;
  FORGE_CUDA_CHECK(cudaMemcpyAsync(st, status.data(), sizeof st, cudaMemcpyDeviceToHost, s));
  FORGE_CUDA_CHECK(cudaMemcpyAsync(&l, loss.data(), sizeof l, cudaMemcpyDeviceToHost, s));
  ctx.synchronize();
  if (st[1] != 0x7fffffff) {
    std::int64_t y = 0;
    FORGE_CUDA_CHECK(cudaMemcpy(&y, targets + st[1], sizeof y, cudaMemcpyDeviceToHost));
    throw error({.what = "target token out of range",
                 .place = "row " + std::to_string(st[1]),
                 .expected = "in [0, " + std::to_string(vocab) + ") or -100",
                 .found = std::to_string(y)});
  }
  return l;
}

}  // namespace forge::cuda
