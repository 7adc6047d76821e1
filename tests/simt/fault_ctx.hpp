// A kernel context for the SIMT emulator that can inject one fault, so a
// test proves its harness catches a broken kernel: a dropped first barrier
// (the emulator reports the race) or a shuffle that reads the wrong lane
// (butterfly mask `from` read as `to`; each test picks a mask its kernels use).
#pragma once

#include <cstddef>
#include <cstdint>

#include "simt_emulator.hpp"

namespace parley::simt {

enum class Fault { kNone, kDropFirstBarrier, kWrongShuffleLane };

template <Fault F, int From, int To>
struct FaultCtx {
  Ctx &c;
  int thread() const { return c.thread(); }
  int block_x() const { return c.block_x(); }
  int block_y() const { return c.block_y(); }
  void sync() {
    if (F == Fault::kDropFirstBarrier && !dropped) {
      dropped = true;
      return;
    }
    c.sync();
  }
  float shfl_xor(float v, int m) { return c.shfl_xor(v, F == Fault::kWrongShuffleLane && m == From ? To : m); }
  float smem_load(size_t i) { return c.smem_load(i); }
  void smem_store(size_t i, float v) { c.smem_store(i, v); }
  uint32_t smem_load_u32(size_t i) { return c.smem_load_u32(i); }
  void smem_store_u32(size_t i, uint32_t v) { c.smem_store_u32(i, v); }
  void ldmatrix(uint32_t *r, int count, bool trans, size_t off) { c.ldmatrix(r, count, trans, off); }
  void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float acc[4], bool bf16) {
    c.mma_m16n8k16(d, a, b, acc, bf16);
  }
  bool dropped = false;
};

}  // namespace parley::simt
