// The execution context the attention kernel bodies (simt_attention.cuh) see
// on a GPU: CUDA built-ins and intrinsics behind the same methods the SIMT
// emulator (tests/simt) implements on the CPU.
#ifndef PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_DEVICE_CUH
#define PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_DEVICE_CUH

#include <stddef.h>

namespace parley::cuda::attn {

struct DeviceCtx {
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ int block_x() const { return static_cast<int>(blockIdx.x); }
  __device__ int block_y() const { return static_cast<int>(blockIdx.y); }
  __device__ void sync() { __syncthreads(); }
  __device__ float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
  __device__ float smem_load(size_t i) { return smem()[i]; }
  __device__ void smem_store(size_t i, float v) { smem()[i] = v; }
  __device__ static float *smem() {
    extern __shared__ float parley_attention_smem[];
    return parley_attention_smem;
  }
};

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_DEVICE_CUH
