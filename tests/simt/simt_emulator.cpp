#include "simt_emulator.hpp"

#include <ucontext.h>

#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>

// AddressSanitizer must be told about stack switches, or an exception
// thrown on a fiber's stack looks like a stack-use-after-scope.
#if defined(__SANITIZE_ADDRESS__)
#define PARLEY_ASAN_FIBERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PARLEY_ASAN_FIBERS 1
#endif
#endif
#ifdef PARLEY_ASAN_FIBERS
#include <sanitizer/common_interface_defs.h>
#endif

namespace parley::simt {

namespace {
#ifdef PARLEY_ASAN_FIBERS
void start_switch(void **fake_stack, const void *bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake_stack, bottom, size);
}
void finish_switch(void *fake_stack, const void **bottom, size_t *size) {
  __sanitizer_finish_switch_fiber(fake_stack, bottom, size);
}
#else
void start_switch(void **, const void *, size_t) {}
void finish_switch(void *, const void **, size_t *) {}
#endif

enum State { kRunnable = 0, kAtBarrier = 1, kAtShuffle = 2, kDone = 3, kAtCollective = 4 };
constexpr size_t kStackBytes = 256 * 1024;  // kernel bodies keep fragments in "registers" (locals)
}  // namespace

struct Emulator::Fiber {
  ucontext_t ctx{};
  ucontext_t *scheduler = nullptr;
  const void *scheduler_stack = nullptr;  // for the sanitizer's stack bookkeeping
  size_t scheduler_stack_size = 0;
  void *fake_stack = nullptr;
  std::unique_ptr<char[]> stack;
  Ctx kctx;
  int state = kRunnable;
  const std::function<void(Ctx &)> *body = nullptr;
  std::exception_ptr error;
};

namespace {
void fiber_entry(unsigned lo, unsigned hi) {
  auto *f = reinterpret_cast<Emulator::Fiber *>((static_cast<uintptr_t>(hi) << 32) | lo);
  finish_switch(nullptr, &f->scheduler_stack, &f->scheduler_stack_size);
  try {
    (*f->body)(f->kctx);
  } catch (...) {
    f->error = std::current_exception();
  }
  f->state = kDone;
  start_switch(nullptr, f->scheduler_stack, f->scheduler_stack_size);  // this fiber's stack dies
  swapcontext(&f->ctx, f->scheduler);
}
}  // namespace

void Emulator::fault(const std::string &what) {
  throw SimtError(where_ + ": " + what);
}

void Ctx::sync() {
  ++emu_->barriers_;
  emu_->block_wait(tid_, kAtBarrier);
}

float Ctx::shfl_xor(float v, int lane_mask) {
  if (lane_mask < 0 || lane_mask > 31) emu_->fault("shfl_xor lane mask out of range");
  emu_->shfl_slot_[static_cast<size_t>(tid_)] = v;
  ++emu_->shuffles_;
  emu_->block_wait(tid_, kAtShuffle);
  const int src = (tid_ & ~31) | ((tid_ & 31) ^ lane_mask);
  return emu_->shfl_slot_[static_cast<size_t>(src) + emu_->shfl_slot_.size() / 2];
}

namespace {
uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
constexpr uint32_t kPoison = 0x7FFF7FFFu;  // NaN as fp32, and as each fp16 / bf16 half
}  // namespace

uint32_t Emulator::load_word(int tid, size_t i) {
  if (i >= smem_.size())
    fault("thread " + std::to_string(tid) + " reads shared word [" + std::to_string(i) + "] out of bounds");
  Cell &c = shadow_[i];
  if (!c.written) fault("thread " + std::to_string(tid) + " reads shared [" + std::to_string(i) + "] before any write");
  if (c.write_epoch == epoch_ && c.writer != tid)
    fault("race: thread " + std::to_string(tid) + " reads shared [" + std::to_string(i) + "] written by thread " +
          std::to_string(c.writer) + " since the last barrier");
  if (c.read_epoch != epoch_) {
    c.read_epoch = epoch_;
    c.reader = tid;
  } else if (c.reader != tid) {
    c.reader = -2;
  }
  return smem_[i];
}

void Emulator::store_word(int tid, size_t i, uint32_t v) {
  if (i >= smem_.size())
    fault("thread " + std::to_string(tid) + " writes shared word [" + std::to_string(i) + "] out of bounds");
  Cell &c = shadow_[i];
  if (c.write_epoch == epoch_ && c.writer != tid)
    fault("race: threads " + std::to_string(c.writer) + " and " + std::to_string(tid) + " write shared [" +
          std::to_string(i) + "] between the same barriers");
  if (c.read_epoch == epoch_ && c.reader != tid)
    fault("race: thread " + std::to_string(tid) + " writes shared [" + std::to_string(i) +
          "] read by another thread since the last barrier");
  c.write_epoch = epoch_;
  c.writer = tid;
  c.written = true;
  smem_[i] = v;
}

float Ctx::smem_load(size_t i) {
  return bits_float(emu_->load_word(tid_, i));
}
void Ctx::smem_store(size_t i, float v) {
  emu_->store_word(tid_, i, float_bits(v));
}
uint32_t Ctx::smem_load_u32(size_t i) {
  return emu_->load_word(tid_, i);
}
void Ctx::smem_store_u32(size_t i, uint32_t v) {
  emu_->store_word(tid_, i, v);
}

namespace {
float half_bits_to_float(uint16_t h, bool bf16) {
  if (bf16) return bits_float(static_cast<uint32_t>(h) << 16);
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
  if (exp == 0x1Fu) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
  }
  return bits_float(bits);
}
}  // namespace

void Ctx::ldmatrix(uint32_t *r, int count, bool trans, size_t row_byte_offset) {
  Emulator &e = *emu_;
  if (count != 1 && count != 2 && count != 4) e.fault("ldmatrix: count must be 1, 2 or 4");
  if (row_byte_offset % 16 != 0)
    e.fault("thread " + std::to_string(tid_) + ": ldmatrix row address " + std::to_string(row_byte_offset) +
            " is not 16-byte aligned");
  e.collective_[static_cast<size_t>(tid_)] = {row_byte_offset, static_cast<size_t>(count), trans ? 1u : 0u};
  e.block_wait(tid_, kAtCollective);
  const int warp0 = tid_ & ~31, lane = tid_ & 31;
  if (lane == 0)
    for (int m = 0; m < count; ++m) {
      int hits[32] = {0};
      for (int row = 0; row < 8; ++row) {
        const size_t word = e.collective_snapshot_[static_cast<size_t>(warp0 + 8 * m + row)].a / 4;
        for (int w = 0; w < 4; ++w) ++hits[(word + static_cast<size_t>(w)) % 32];
      }
      for (int bank = 0; bank < 32; ++bank)
        if (hits[bank] > 1) {
          ++e.bank_conflicts_;
          break;
        }
    }
  for (int m = 0; m < count; ++m) {
    uint16_t h[2];
    for (int k = 0; k < 2; ++k) {
      // Element (row, col) of 8x8 matrix m; rows come from lanes 8m..8m+7.
      const int row = trans ? (lane % 4) * 2 + k : lane / 4;
      const int col = trans ? lane / 4 : (lane % 4) * 2 + k;
      const Emulator::Collective &src = e.collective_snapshot_[static_cast<size_t>(warp0 + 8 * m + row)];
      if (src.n != static_cast<size_t>(count) || src.b != (trans ? 1u : 0u))
        e.fault("ldmatrix: lanes of one warp disagree on the shape (or meet a different collective)");
      const size_t addr = src.a;
      const uint32_t word = e.load_word(tid_, addr / 4 + static_cast<size_t>(col / 2));
      h[k] = static_cast<uint16_t>(col % 2 ? word >> 16 : word & 0xFFFFu);
    }
    r[m] = static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 16);
  }
}

void Ctx::cp_async16(size_t smem_word, const void *src, bool zero_fill) {
  Emulator &e = *emu_;
  if (smem_word % 4 != 0) e.fault("cp.async: shared address not 16-byte aligned");
  Emulator::AsyncCopy c{smem_word, {0, 0, 0, 0}};
  if (!zero_fill) {
    if (reinterpret_cast<uintptr_t>(src) % 16 != 0) e.fault("cp.async: global address not 16-byte aligned");
    std::memcpy(c.data, src, 16);  // the source is read at issue; it must not change before the wait
  }
  e.async_open_[static_cast<size_t>(tid_)].push_back(c);
}

void Ctx::cp_async_commit() {
  Emulator &e = *emu_;
  auto &open = e.async_open_[static_cast<size_t>(tid_)];
  e.async_groups_[static_cast<size_t>(tid_)].push_back(std::move(open));
  open.clear();
}

void Ctx::cp_async_wait(int pending) {
  Emulator &e = *emu_;
  auto &groups = e.async_groups_[static_cast<size_t>(tid_)];
  while (static_cast<int>(groups.size()) > pending) {
    for (const Emulator::AsyncCopy &c : groups.front())
      for (int w = 0; w < 4; ++w) e.store_word(tid_, c.word + static_cast<size_t>(w), c.data[w]);
    groups.erase(groups.begin());
  }
}

void Ctx::mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool bf16) {
  Emulator &e = *emu_;
  Emulator::Collective &mine = e.collective_[static_cast<size_t>(tid_)];
  mine.a = 0;
  mine.n = 0;  // not an ldmatrix
  for (int i = 0; i < 4; ++i) mine.ra[i] = a[i], mine.rc[i] = c[i];
  for (int i = 0; i < 2; ++i) mine.rb[i] = b[i];
  mine.b = bf16 ? 2u : 3u;
  e.block_wait(tid_, kAtCollective);
  const int warp0 = tid_ & ~31, lane = tid_ & 31;
  auto half = [&](uint32_t reg, int i) { return half_bits_to_float(static_cast<uint16_t>(i ? reg >> 16 : reg), bf16); };
  // Gather A (16x16) and B (16x8) from every lane's fragments (PTX ISA layouts).
  double A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const Emulator::Collective &f = e.collective_snapshot_[static_cast<size_t>(warp0 + l)];
    if (f.n != 0 || f.b != mine.b) e.fault("mma: lanes of one warp disagree on the input type (or meet an ldmatrix)");
    const int g = l >> 2, t = l % 4;
    for (int i = 0; i < 8; ++i) {
      const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      A[row][col] = half(f.ra[i / 2], i & 1);
    }
    for (int i = 0; i < 4; ++i) B[t * 2 + (i & 1) + (i >= 2 ? 8 : 0)][g] = half(f.rb[i / 2], i & 1);
  }
  const int g = lane >> 2, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
    double acc = c[i];
    for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    d[i] = static_cast<float>(acc);
  }
}

// Parks the calling fiber in `state` and returns when the scheduler releases it.
void Emulator::block_wait(int tid, int state) {
  Fiber *f = fibers_[static_cast<size_t>(tid)];
  f->state = state;
  start_switch(&f->fake_stack, f->scheduler_stack, f->scheduler_stack_size);
  swapcontext(&f->ctx, f->scheduler);
  finish_switch(f->fake_stack, &f->scheduler_stack, &f->scheduler_stack_size);
}

void Emulator::run_block(int bx, int by, int bz, int threads, const std::function<void(Ctx &)> &body) {
  where_ = "block (" + std::to_string(bx) + "," + std::to_string(by) + "," + std::to_string(bz) + ")";
  std::fill(smem_.begin(), smem_.end(), kPoison);
  std::fill(shadow_.begin(), shadow_.end(), Cell{});
  epoch_ = 1;
  shfl_slot_.assign(static_cast<size_t>(threads) * 2, 0.f);
  collective_.assign(static_cast<size_t>(threads), Collective{});
  async_groups_.assign(static_cast<size_t>(threads), {});
  async_open_.assign(static_cast<size_t>(threads), {});
  collective_snapshot_.assign(static_cast<size_t>(threads), Collective{});

  ucontext_t scheduler;
  std::vector<std::unique_ptr<Fiber>> owned;
  fibers_.clear();
  for (int t = 0; t < threads; ++t) {
    auto f = std::make_unique<Fiber>();
    f->stack.reset(new char[kStackBytes]);
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack.get();
    f->ctx.uc_stack.ss_size = kStackBytes;
    f->ctx.uc_link = nullptr;
    f->scheduler = &scheduler;
    f->body = &body;
    f->kctx.emu_ = this;
    f->kctx.tid_ = t;
    f->kctx.bx_ = bx, f->kctx.by_ = by, f->kctx.bz_ = bz;
    auto p = reinterpret_cast<uintptr_t>(f.get());
    makecontext(&f->ctx, reinterpret_cast<void (*)()>(fiber_entry), 2, static_cast<unsigned>(p & 0xffffffffu),
                static_cast<unsigned>(p >> 32));
    fibers_.push_back(f.get());
    owned.push_back(std::move(f));
  }

  auto rethrow_fiber_errors = [&] {
    for (Fiber *f : fibers_)
      if (f->error) std::rethrow_exception(f->error);
  };
  for (;;) {
    // Run every runnable thread (highest id first) until it blocks or ends.
    bool ran = false;
    for (int t = threads - 1; t >= 0; --t) {
      Fiber *f = fibers_[static_cast<size_t>(t)];
      if (f->state != kRunnable) continue;
      ran = true;
      void *fake = nullptr;
      start_switch(&fake, f->stack.get(), kStackBytes);
      swapcontext(&scheduler, &f->ctx);
      finish_switch(fake, nullptr, nullptr);
      if (f->error) {
        rethrow_fiber_errors();
      }
    }
    // Release warps whose 32 lanes all reached a shuffle.
    bool released = false;
    for (int w = 0; w < threads / 32; ++w) {
      bool all = true;
      for (int l = 0; l < 32; ++l) all = all && fibers_[static_cast<size_t>(w * 32 + l)]->state == kAtShuffle;
      if (!all) continue;
      const size_t half = shfl_slot_.size() / 2;
      for (int l = 0; l < 32; ++l)
        shfl_slot_[half + static_cast<size_t>(w * 32 + l)] = shfl_slot_[static_cast<size_t>(w * 32 + l)];
      for (int l = 0; l < 32; ++l) fibers_[static_cast<size_t>(w * 32 + l)]->state = kRunnable;
      released = true;
    }
    // Release warps whose 32 lanes all reached ldmatrix / mma (same kind).
    for (int w = 0; w < threads / 32; ++w) {
      bool all = true;
      for (int l = 0; l < 32; ++l) all = all && fibers_[static_cast<size_t>(w * 32 + l)]->state == kAtCollective;
      if (!all) continue;
      for (int l = 0; l < 32; ++l) {
        const size_t i = static_cast<size_t>(w * 32 + l);
        collective_snapshot_[i] = collective_[i];
        fibers_[i]->state = kRunnable;
      }
      released = true;
    }
    // Release the CTA at a barrier.
    int at_barrier = 0, done = 0;
    for (Fiber *f : fibers_) {
      at_barrier += f->state == kAtBarrier;
      done += f->state == kDone;
    }
    if (done == threads) break;
    if (at_barrier > 0 && at_barrier + done == threads) {
      if (done > 0) fault(std::to_string(done) + " thread(s) exited while others wait at __syncthreads");
      for (Fiber *f : fibers_) f->state = kRunnable;
      ++epoch_;
      released = true;
    }
    if (!ran && !released)
      fault("deadlock: no thread can proceed (a shuffle or barrier that not every thread reaches)");
  }
  rethrow_fiber_errors();
}

void Emulator::launch(Dim3 grid, int threads, size_t smem_words, const std::function<void(Ctx &)> &body) {
  if (threads <= 0 || threads % 32 != 0 || threads > 1024)
    throw SimtError("block size must be a positive multiple of 32, at most 1024");
  smem_.assign(smem_words, kPoison);
  shadow_.assign(smem_words, Cell{});
  // Last CTA first: a GPU gives no order between the CTAs of a launch, and
  // this one breaks the natural assumption that CTA 0 ran before the rest.
  for (int z = grid.z - 1; z >= 0; --z)
    for (int y = grid.y - 1; y >= 0; --y)
      for (int x = grid.x - 1; x >= 0; --x) run_block(x, y, z, threads, body);
}

}  // namespace parley::simt
