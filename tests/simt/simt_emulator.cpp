#include "simt_emulator.hpp"

#include <ucontext.h>

#include <cmath>
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

enum State { kRunnable = 0, kAtBarrier = 1, kAtShuffle = 2, kDone = 3 };
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

float Ctx::smem_load(size_t i) {
  Emulator &e = *emu_;
  if (i >= e.smem_.size())
    e.fault("thread " + std::to_string(tid_) + " reads shared memory [" + std::to_string(i) + "] out of bounds");
  Emulator::Cell &c = e.shadow_[i];
  if (!c.written)
    e.fault("thread " + std::to_string(tid_) + " reads shared [" + std::to_string(i) + "] before any write");
  if (c.write_epoch == e.epoch_ && c.writer != tid_)
    e.fault("race: thread " + std::to_string(tid_) + " reads shared [" + std::to_string(i) + "] written by thread " +
            std::to_string(c.writer) + " since the last barrier");
  if (c.read_epoch != e.epoch_) {
    c.read_epoch = e.epoch_;
    c.reader = tid_;
  } else if (c.reader != tid_) {
    c.reader = -2;
  }
  return e.smem_[i];
}

void Ctx::smem_store(size_t i, float v) {
  Emulator &e = *emu_;
  if (i >= e.smem_.size())
    e.fault("thread " + std::to_string(tid_) + " writes shared memory [" + std::to_string(i) + "] out of bounds");
  Emulator::Cell &c = e.shadow_[i];
  if (c.write_epoch == e.epoch_ && c.writer != tid_)
    e.fault("race: threads " + std::to_string(c.writer) + " and " + std::to_string(tid_) + " write shared [" +
            std::to_string(i) + "] between the same barriers");
  if (c.read_epoch == e.epoch_ && c.reader != tid_)
    e.fault("race: thread " + std::to_string(tid_) + " writes shared [" + std::to_string(i) +
            "] read by another thread since the last barrier");
  c.write_epoch = e.epoch_;
  c.writer = tid_;
  c.written = true;
  e.smem_[i] = v;
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
  std::fill(smem_.begin(), smem_.end(), std::numeric_limits<float>::quiet_NaN());
  std::fill(shadow_.begin(), shadow_.end(), Cell{});
  epoch_ = 1;
  shfl_slot_.assign(static_cast<size_t>(threads) * 2, 0.f);

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

void Emulator::launch(Dim3 grid, int threads, size_t smem_floats, const std::function<void(Ctx &)> &body) {
  if (threads <= 0 || threads % 32 != 0 || threads > 1024)
    throw SimtError("block size must be a positive multiple of 32, at most 1024");
  smem_.assign(smem_floats, 0.f);
  shadow_.assign(smem_floats, Cell{});
  for (int z = 0; z < grid.z; ++z)
    for (int y = 0; y < grid.y; ++y)
      for (int x = 0; x < grid.x; ++x) run_block(x, y, z, threads, body);
}

}  // namespace parley::simt
