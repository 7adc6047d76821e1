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
//  * shared memory (32-bit words) is poisoned with 0x7FFF7FFF — a NaN as one
//    fp32 and as two fp16/bf16 — before the CTA starts, and every access goes
//    through smem_load/smem_store (fp32) or smem_load_u32/smem_store_u32 (two
//    16-bit values), which check bounds and report races: a word written by
//    one thread and read or written by another between the same two barriers
//    (RAW / WAR / WAW), or read before any thread wrote it;
//  * mma_m16n8k16 (fp16 or bf16 inputs, fp32 accumulation) and ldmatrix
//    (.x1/.x2/.x4, optionally .trans) are warp rendezvous that reproduce the
//    PTX ISA fragment layouts exactly ("Matrix Fragments for mma.m16n8k16
//    with floating point type", "ldmatrix"); the products of 16-bit values are
//    exact in fp32 and each output element is c + sum(a*b) computed in double
//    and rounded once (tensor cores accumulate at least this accurately, in an
//    unspecified order).
// The scheduler runs threads in descending order, so a thread reading data
// another thread has not produced yet (a missing barrier) sees the poison
// even where the race check would not fire. CTAs also run last-first, so a
// CTA reading global memory another CTA of the same launch writes (no order
// exists between them on a GPU) sees the old contents.
//
//  * cp.async copies are queued per thread and land in shared memory only at
//    the cp_async_wait that retires their group, so reading a tile before its
//    wait (or before the barrier after it) sees poison or a race;
//  * ldmatrix counts bank conflicts (8 rows of a phase sharing a bank).
// Not modelled: warp-level divergence inside collectives, timing.
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
  uint32_t smem_load_u32(size_t word);
  void smem_store_u32(size_t word, uint32_t v);
  // ldmatrix.sync.aligned.m8n8.x{count}[.trans].shared.b16: this lane gives
  // the byte offset of one 16-byte row (lanes 8m..8m+7: rows of matrix m) and
  // receives one 32-bit register per matrix in r[0..count).
  void ldmatrix(uint32_t *r, int count, bool trans, size_t row_byte_offset);
  // mma.sync.aligned.m16n8k16.row.col.f32.{f16|bf16}.{f16|bf16}.f32.
  void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16);
  // cp.async.cg.shared.global (16 bytes; zero_fill: src-size 0): queued in
  // the thread's current group and performed only when cp_async_wait leaves
  // at most `pending` newer groups outstanding, as the hardware guarantees
  // nothing earlier. The copy then counts as this thread's write.
  void cp_async16(size_t smem_word, const void *src, bool zero_fill);
  void cp_async_commit();
  void cp_async_wait(int pending);

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
  void launch(Dim3 grid, int threads, size_t smem_words, const std::function<void(Ctx &)> &body);

  uint64_t barriers() const { return barriers_; }
  uint64_t shuffles() const { return shuffles_; }
  // ldmatrix phases (8 rows of one 8x8 matrix) whose 16-byte rows share a
  // shared-memory bank (32 banks of 4 bytes): the serialisation a GPU pays.
  uint64_t bank_conflicts() const { return bank_conflicts_; }

  struct Fiber;  // one emulated thread (opaque)

 private:
  friend class Ctx;
  void run_block(int bx, int by, int bz, int threads, const std::function<void(Ctx &)> &body);
  void block_wait(int tid, int state);
  [[noreturn]] void fault(const std::string &what);
  uint32_t load_word(int tid, size_t i);
  void store_word(int tid, size_t i, uint32_t v);

  // Per-CTA state.
  std::vector<Fiber *> fibers_;
  std::vector<uint32_t> smem_;  // 32-bit words
  struct Cell {
    uint64_t write_epoch = 0, read_epoch = 0;
    int writer = -1, reader = -1;  // -2: several readers this epoch
    bool written = false;
  };
  std::vector<Cell> shadow_;
  uint64_t epoch_ = 1;
  std::vector<float> shfl_slot_;
  // What each lane brought to a warp collective (ldmatrix / mma), and the
  // warp's copy taken when all 32 arrived.
  struct Collective {
    size_t a = 0;    // ldmatrix: row byte offset
    size_t n = 0;    // ldmatrix: count
    uint32_t b = 0;  // ldmatrix: trans; mma: 2 = bf16, 3 = f16
    uint32_t ra[4] = {0, 0, 0, 0}, rb[2] = {0, 0};
    float rc[4] = {0, 0, 0, 0};
  };
  std::vector<Collective> collective_, collective_snapshot_;
  std::string where_;
  uint64_t barriers_ = 0, shuffles_ = 0, bank_conflicts_ = 0;
  struct AsyncCopy {
    size_t word;
    uint32_t data[4];
  };
  // Per thread: committed groups (oldest first) and the open group.
  std::vector<std::vector<std::vector<AsyncCopy>>> async_groups_;
  std::vector<std::vector<AsyncCopy>> async_open_;
};

}  // namespace parley::simt
