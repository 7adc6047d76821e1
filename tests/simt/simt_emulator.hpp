// A SIMT emulator for running CUDA kernel bodies on the CPU (one CTA at a
// time), so their logic is tested without a GPU.
//
// Each thread of the CTA is a fiber (ucontext) with its own stack; fibers run
// one at a time and switch only at synchronisation points, so the kernel's
// own code is what decides the interleaving, as on a GPU:
//  * sync() is __syncthreads: a thread waits until every live thread of the
//    CTA arrives; a thread that exits while others wait at a barrier, or a
//    state where nobody can proceed, is reported (divergent barrier /
//    deadlock);
//  * shfl_xor() is __shfl_xor_sync(0xffffffff, ...): a rendezvous of the 32
//    lanes of the warp, exact exchange of values;
//  * shared memory is poisoned with NaN before the CTA starts, and every
//    access goes through smem_load/smem_store, which check bounds and report
//    races: a cell written by one thread and read or written by another
//    between the same two barriers (RAW / WAR / WAW), or read before any
//    thread wrote it.
// The scheduler runs threads in descending order, so a thread reading data
// another thread has not produced yet (a missing barrier) sees the poison
// even where the race check would not fire.
//
// Not modelled (the SIMT attention kernels do not use them): cp.async,
// mma.sync, ldmatrix, warp-level divergence inside shuffles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace parley::simt {

struct Dim3 {
  int x = 1, y = 1, z = 1;
};

class Emulator;

// What a kernel body sees (the CUDA built-ins, as methods).
class Ctx {
 public:
  int thread() const { return tid_; }
  int block_x() const { return bx_; }
  int block_y() const { return by_; }
  int block_z() const { return bz_; }
  void sync();
  float shfl_xor(float v, int lane_mask);
  float smem_load(size_t i);
  void smem_store(size_t i, float v);

 private:
  friend class Emulator;
  Emulator *emu_ = nullptr;
  int tid_ = 0, bx_ = 0, by_ = 0, bz_ = 0;
};

class SimtError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Emulator {
 public:
  // Runs body(ctx) for every thread of every CTA of the grid; throws
  // SimtError on a race, deadlock, divergent barrier or out-of-bounds
  // shared-memory access (naming block, thread and cell).
  void launch(Dim3 grid, int threads, size_t smem_floats, const std::function<void(Ctx &)> &body);

  uint64_t barriers() const { return barriers_; }
  uint64_t shuffles() const { return shuffles_; }

  struct Fiber;  // one emulated thread (opaque)

 private:
  friend class Ctx;
  void run_block(int bx, int by, int bz, int threads, const std::function<void(Ctx &)> &body);
  void block_wait(int tid, int state);
  [[noreturn]] void fault(const std::string &what);

  // Per-CTA state.
  std::vector<Fiber *> fibers_;
  std::vector<float> smem_;
  struct Cell {
    uint64_t write_epoch = 0, read_epoch = 0;
    int writer = -1, reader = -1;  // -2: several readers this epoch
    bool written = false;
  };
  std::vector<Cell> shadow_;
  uint64_t epoch_ = 1;
  std::vector<float> shfl_slot_;
  std::string where_;
  uint64_t barriers_ = 0, shuffles_ = 0;
};

}  // namespace parley::simt
