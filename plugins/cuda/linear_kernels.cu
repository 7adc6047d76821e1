// __global__ entry points of the LINEAR kernels: the bodies of
// linear/linear_body.cuh (tested on the CPU under tests/simt's emulator) with
// the device context of attention/simt_device.cuh, and their launchers.
#include <cuda_runtime.h>

#include "attention/simt_device.cuh"
#include "cuda_common.h"
#include "linear/linear_body.cuh"
#include "linear/linear_mma.cuh"

namespace parley::cuda {

namespace {
using attn::DeviceCtx;
using lin::LinearParams;

template <int WT, int M>
__global__ void __launch_bounds__(lin::kGemvThreads) linear_gemv_kernel(LinearParams p) {
  DeviceCtx ctx;
  lin::linear_gemv<DeviceCtx, WT, M>(ctx, p);
}

template <int WT>
__global__ void __launch_bounds__(lin::kTileThreads, 2) linear_tiled_kernel(LinearParams p) {
  DeviceCtx ctx;
  lin::linear_tiled<DeviceCtx, WT>(ctx, p);
}

template <int WT>
__global__ void __launch_bounds__(lin::kMmaLinThreads, 2) linear_mma_kernel(LinearParams p) {
  DeviceCtx ctx;
  lin::linear_mma<DeviceCtx, WT>(ctx, p);
}

__global__ void __launch_bounds__(lin::kResidualThreads) linear_residual_kernel(lin::ResidualParams p) {
  DeviceCtx ctx;
  lin::linear_residual_add<DeviceCtx>(ctx, p);
}

template <int WT>
void launch_typed(const LinearParams &p, bool tensor_cores, cudaStream_t s) {
  if (p.m <= lin::kGemvMaxM) {
    const unsigned grid = static_cast<unsigned>((p.n + lin::kGemvRows - 1) / lin::kGemvRows);
    const int rows = p.m <= 1 ? 1 : p.m <= 2 ? 2 : p.m <= 4 ? 4 : 8;
    const size_t smem = static_cast<size_t>(lin::gemv_smem_words(rows)) * 4;
    switch (rows) {
      case 1:
        linear_gemv_kernel<WT, 1><<<grid, lin::kGemvThreads, smem, s>>>(p);
        break;
      case 2:
        linear_gemv_kernel<WT, 2><<<grid, lin::kGemvThreads, smem, s>>>(p);
        break;
      case 4:
        linear_gemv_kernel<WT, 4><<<grid, lin::kGemvThreads, smem, s>>>(p);
        break;
      default:
        linear_gemv_kernel<WT, 8><<<grid, lin::kGemvThreads, smem, s>>>(p);
        break;
    }
    return;
  }
  const dim3 grid(static_cast<unsigned>((p.n + lin::kTileN - 1) / lin::kTileN), static_cast<unsigned>(p.grid_y));
  if constexpr (WT != PARLEY_DTYPE_F32) {  // F32 weights (F16 activations only) stay on CUDA cores
    if (tensor_cores) {
      linear_mma_kernel<WT><<<grid, lin::kMmaLinThreads, lin::kMmaLinSmemWords * 4, s>>>(p);
      return;
    }
  }
  linear_tiled_kernel<WT><<<grid, lin::kTileThreads, lin::kTileSmemWords * 4, s>>>(p);
}

}  // namespace

// p.grid_y must be set (tiled_grid_y) by the caller. tensor_cores: more than
// kGemvMaxM rows run linear_mma (x rounded to 16 bits, I8 / I4 weights
// dequantised to F16) instead of linear_tiled.
void launch_linear(int weight_dtype, const LinearParams &p, bool tensor_cores, cudaStream_t s) {
  switch (weight_dtype) {
    case PARLEY_DTYPE_F32:  // F16 activations over F32 weights (F32 ones go to cuBLASLt)
      launch_typed<PARLEY_DTYPE_F32>(p, false, s);
      break;
    case PARLEY_DTYPE_F16:
      launch_typed<PARLEY_DTYPE_F16>(p, tensor_cores, s);
      break;
    case PARLEY_DTYPE_BF16:
      launch_typed<PARLEY_DTYPE_BF16>(p, tensor_cores, s);
      break;
    case PARLEY_DTYPE_I8:
      launch_typed<PARLEY_DTYPE_I8>(p, tensor_cores, s);
      break;
    case PARLEY_DTYPE_I4:
      launch_typed<PARLEY_DTYPE_I4>(p, tensor_cores, s);
      break;
    default:
      break;  // the caller only passes these
  }
}

void launch_linear_residual(const lin::ResidualParams &p, cudaStream_t s) {
  linear_residual_kernel<<<static_cast<unsigned>(p.grid), lin::kResidualThreads, 0, s>>>(p);
}

}  // namespace parley::cuda
