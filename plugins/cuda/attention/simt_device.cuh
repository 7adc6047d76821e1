// The execution context the attention kernel bodies (simt_attention.cuh) see
// on a GPU: CUDA built-ins and intrinsics behind the same methods the SIMT
// emulator (tests/simt) implements on the CPU.
#ifndef PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_DEVICE_CUH
#define PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_DEVICE_CUH

#include <stddef.h>
#include <stdint.h>

namespace parley::cuda::attn {

struct DeviceCtx {
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ int block_x() const { return static_cast<int>(blockIdx.x); }
  __device__ int block_y() const { return static_cast<int>(blockIdx.y); }
  __device__ void sync() { __syncthreads(); }
  __device__ float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
  __device__ float smem_load(size_t i) { return smem()[i]; }
  __device__ void smem_store(size_t i, float v) { smem()[i] = v; }
  __device__ uint32_t smem_load_u32(size_t i) { return reinterpret_cast<uint32_t *>(smem())[i]; }
  __device__ void smem_store_u32(size_t i, uint32_t v) { reinterpret_cast<uint32_t *>(smem())[i] = v; }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16 (count and trans
  // are compile-time constants at every call site, so the branches fold).
  __device__ void ldmatrix(uint32_t *r, int count, bool trans, size_t row_byte_offset) {
    const uint32_t addr =
        static_cast<uint32_t>(__cvta_generic_to_shared(reinterpret_cast<char *>(smem()) + row_byte_offset));
    if (count == 4 && !trans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(addr));
    else if (count == 4)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(addr));
    else if (count == 2 && !trans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
    else if (count == 2)
      asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                   : "=r"(r[0]), "=r"(r[1])
                   : "r"(addr));
    else if (!trans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
  }

  // cp.async.cg.shared.global, 16 bytes; zero_fill copies nothing (src-size 0)
  // and writes zeros, so `src` may then be NULL.
  __device__ void cp_async16(size_t word, const void *src, bool zero_fill) {
    const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem() + word));
    const int bytes = zero_fill ? 0 : 16;
    const void *from = zero_fill ? static_cast<const void *>(smem()) : src;  // never dereferenced when 0
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(from), "r"(bytes));
  }
  __device__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
  }
  __device__ void cp_async_wait(int pending) {
    if (pending == 0)
      asm volatile("cp.async.wait_group 0;\n" ::);
    else
      asm volatile("cp.async.wait_group 1;\n" ::);
  }

  // mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32
  __device__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16) {
    if (bf16)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%10,%11,%12,%13};\n"
          : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
            "f"(c[3]));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
          "{%10,%11,%12,%13};\n"
          : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
            "f"(c[3]));
  }
#endif
  __device__ static float *smem() {
    extern __shared__ float parley_attention_smem[];
    return parley_attention_smem;
  }
};

}  // namespace parley::cuda::attn

#endif  // PARLEY_PLUGINS_CUDA_ATTENTION_SIMT_DEVICE_CUH
