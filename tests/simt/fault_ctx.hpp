// A kernel context for the SIMT emulator that can inject one fault, so a
// test proves its harness catches a broken kernel: a dropped first barrier
// (the emulator reports the race) or a shuffle that reads the wrong lane
// (butterfly mask `from` read as `to`; each test picks a mask its kernels use).
#pragma once

#include <cstddef>

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
  bool dropped = false;
};

}  // namespace parley::simt
