#include "serve/engine.hpp"

#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <exception>

#include "core/error.hpp"

namespace parley {

using Clock = std::chrono::steady_clock;

// The sequences of one run() call; complete when every one has run all its
// tokens. Lives on the caller's stack; the scheduler reaches it only while
// it is queued.
struct Engine::Group {
  std::vector<Sequence *> seqs;
  uint64_t ticket = 0;
  int64_t remaining = 0;
  std::vector<float> *logits = nullptr;  // [seqs, vocab], the caller's
  LogitStats *stats = nullptr;           // the caller's, or NULL: no statistics wanted
  bool stats_ok = true;                  // every row so far came with its statistics
  std::exception_ptr error;
  std::optional<Clock::time_point> blocked_since;  // could not get blocks since then
  bool blocked = false;                            // could not get blocks in this scheduling round
  // The caller's, woken (under mu_) when a step ran one of its sequences or
  // failed it: a caller whose group did not move sleeps on, so callers
  // waiting past the batch cost nothing per step.
  std::condition_variable cv;
  std::vector<int64_t> *computed = nullptr;  // the caller's, or NULL
  // run_await: the suspended caller, its control (cancel, deadline,
  // resumer: the scheduler checks them), and where its error goes.
  std::coroutine_handle<> waiter;
  RunControl control;
  std::exception_ptr *error_out = nullptr;
};

int64_t Engine::Sequence::length() const {
  return static_cast<int64_t>(tokens_.size());
}
int64_t Engine::Sequence::resident() const {
  return resident_;
}

namespace {

uint64_t default_budget() {
  const uint64_t phys = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGE_SIZE));
  return std::min<uint64_t>(phys / 4, uint64_t{4} << 30);
}

void check_option(bool ok, const std::string &what) {
  if (!ok) fail(PARLEY_ERROR_INVALID_ARGUMENT, "engine option " + what);
}

}  // namespace

// Validates the options and allocates the pool. An explicit budget is
// allocated as asked (or fails naming it). The default is a quarter of
// physical memory, at most 4 GiB, and never more than max_sequences
// sequences of the model's full length could use; when the device cannot
// hold that, it halves until it can (down to one block).
Engine::Pools Engine::allocate_pools(const Transformer &model, const EngineOptions &options) {
  if (!model.supports_paged())
    fail(PARLEY_ERROR_UNSUPPORTED,
         "the serving engine needs an attention kernel that reads a paged KV cache "
         "(PARLEY_KERNEL_FLAG_KV_PAGED with KV_APPEND)");
  check_option(options.block_size >= 1 && options.block_size <= 4096, "block_size must be in [1, 4096]");
  check_option(options.max_sequences >= 1, "max_sequences must be >= 1");
  check_option(options.max_batch_tokens >= 1, "max_batch_tokens must be >= 1");
  check_option(options.prefill_chunk >= 1, "prefill_chunk must be >= 1");
  check_option(options.admission_timeout_ms >= 0, "admission_timeout_ms must be >= 0");
  check_option(options.gather_us >= 0, "gather_us must be >= 0");
  // An encoder-decoder model splits the budget between decoder KV blocks and
  // as many blocks of cross-attention K/V (one source position each).
  const bool cross = model.encoder_decoder();
  const uint64_t per_block = model.kv_block_bytes(options.block_size) + model.cross_block_bytes(options.block_size);
  auto make = [&](uint64_t blocks) {
    Pools p;
    p.self = model.make_kv_pool(static_cast<int64_t>(blocks), options.block_size);
    if (cross) p.cross = model.make_cross_pool(static_cast<int64_t>(blocks), options.block_size);
    return p;
  };
  if (options.kv_budget_bytes) {
    if (options.kv_budget_bytes / per_block < 1)
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "the KV budget of " + std::to_string(options.kv_budget_bytes) +
                                              " bytes is less than one block of " + std::to_string(per_block) +
                                              " bytes (" + std::to_string(options.block_size) + " tokens)");
    return make(options.kv_budget_bytes / per_block);
  }
  uint64_t blocks = std::max<uint64_t>(1, default_budget() / per_block);
  int64_t positions = model.decoder_params().max_positions;
  if (cross && model.encoder_params().max_positions > 0)
    positions = std::max(positions, model.encoder_params().max_positions);
  if (positions > 0) {
    const uint64_t per_seq = static_cast<uint64_t>((positions + options.block_size - 1) / options.block_size);
    blocks = std::min(blocks, per_seq * static_cast<uint64_t>(options.max_sequences));
  }
  for (;;) {
    try {
      return make(blocks);
    } catch (const Error &e) {
      if (e.status() != PARLEY_ERROR_OUT_OF_MEMORY || blocks == 1) throw;
      blocks /= 2;
    }
  }
}

Engine::Engine(const Transformer &model, const EngineOptions &options, BlockKey model_identity)
    : Engine(model, options, model_identity, allocate_pools(model, options)) {}

Engine::Engine(const Transformer &model, const EngineOptions &options, BlockKey model_identity, Pools pools)
    : model_(model),
      options_(options),
      pool_(std::move(pools.self)),
      cross_pool_(std::move(pools.cross)),
      blocks_(pool_.num_blocks, options.block_size, model_identity) {
  if (model_.encoder_decoder()) cross_blocks_.emplace(cross_pool_.num_blocks, options.block_size, model_identity);
  stats_.kv_block_bytes = model_.kv_block_bytes(options_.block_size) + model_.cross_block_bytes(options_.block_size);
  stats_.kv_budget_bytes = stats_.kv_block_bytes * static_cast<uint64_t>(blocks_.num_blocks());
  try {
    thread_ = std::thread([this] { scheduler_loop(); });
  } catch (const std::exception &) {
    fail(PARLEY_ERROR_OUT_OF_MEMORY, "could not start the serving engine's thread");
  }
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Engine::SequencePtr Engine::open(const BlockKey *root) {
  // Allocated before taking the lock: when the shared_ptr's control block
  // cannot be allocated, it calls the deleter, and close() locks mu_.
  auto *raw = new Sequence();
  raw->engine_ = this;
  SequencePtr s(raw, [](Sequence *p) {
    p->engine_->close(*p);
    delete p;
  });
  raw->root_ = root ? *root : blocks_.model_identity();
  std::lock_guard<std::mutex> lock(mu_);
  holders_.push_back(raw);  // close() erases it; a failed push leaves nothing to erase
  s->ticket_ = next_ticket_++;
  return s;
}

void Engine::renew(Sequence &s) {
  std::lock_guard<std::mutex> lock(mu_);
  s.ticket_ = next_ticket_++;
}

Engine::SequencePtr Engine::fork(const Sequence &parent) {
  SequencePtr child = open();
  std::lock_guard<std::mutex> lock(mu_);
  // Copies first (they may throw): the child owns the blocks only once they
  // are retained, or closing it would release the parent's references.
  std::vector<int32_t> tokens = parent.tokens_;
  std::vector<BlockId> blocks = parent.blocks_, cross = parent.cross_;
  std::vector<BlockKey> keys = parent.keys_;
  for (BlockId b : blocks) blocks_.retain(b);
  for (BlockId b : cross) cross_blocks_->retain(b);
  child->tokens_ = std::move(tokens);
  child->resident_ = parent.resident_;
  child->blocks_ = std::move(blocks);
  child->keys_ = std::move(keys);
  child->root_ = parent.root_;
  child->cross_ = std::move(cross);
  child->src_len_ = parent.src_len_;
  child->ticket_ = parent.ticket_;
  return child;
}

void Engine::forget_expected(Sequence &s) {
  if (s.expected_) {
    s.expected_ = false;
    --expected_;
  }
}

void Engine::release_blocks(Sequence &s) {
  drop_inflight(s, SIZE_MAX);
  for (BlockId b : s.blocks_) blocks_.release(b);
  s.blocks_.clear();
  s.resident_ = 0;
}

// Under mu_: drops the tokens that did not run and the blocks reserved for
// them (they are private, but a fork would share them and then write into a
// shared block past the one reserve() copies on write).
void Engine::keep_resident(Sequence &s) {
  drop_inflight(s, SIZE_MAX);
  const size_t bs = static_cast<size_t>(options_.block_size);
  s.tokens_.resize(static_cast<size_t>(s.resident_));
  s.keys_.resize(std::min(s.keys_.size(), s.tokens_.size() / bs));
  const size_t keep = (s.tokens_.size() + bs - 1) / bs;
  while (s.blocks_.size() > keep) {
    blocks_.release(s.blocks_.back());
    s.blocks_.pop_back();
  }
}

void Engine::truncate(Sequence &s, int64_t length) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (length < 0 || length > s.length())
      fail(PARLEY_ERROR_INTERNAL, "truncate past the sequence's " + std::to_string(s.length()) + " tokens");
    forget_expected(s);
    drop_inflight(s, SIZE_MAX);
    s.tokens_.resize(static_cast<size_t>(length));
    s.resident_ = std::min(s.resident_, length);
    const size_t bs = static_cast<size_t>(options_.block_size);
    const size_t keep = (static_cast<size_t>(s.resident_) + bs - 1) / bs;
    while (s.blocks_.size() > keep) {
      blocks_.release(s.blocks_.back());
      s.blocks_.pop_back();
    }
    s.keys_.resize(std::min(s.keys_.size(), static_cast<size_t>(length) / bs));
  }
  work_.notify_all();
}

void Engine::park(Sequence &s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    forget_expected(s);
    publish_full_blocks(s);
    release_blocks(s);
  }
  work_.notify_all();
}

void Engine::close(Sequence &s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    forget_expected(s);
    release_blocks(s);
    for (BlockId b : s.cross_) cross_blocks_->release(b);
    s.cross_.clear();
    holders_.erase(std::remove(holders_.begin(), holders_.end(), &s), holders_.end());
  }
  work_.notify_all();
  done_.notify_all();  // sources waiting for cross-attention blocks (attach_part)
}

size_t Engine::kv_block_bytes() const {
  return model_.kv_block_bytes(pool_);
}

std::string Engine::export_prefix(const std::vector<int32_t> &tokens, int64_t *blocks, const BlockKey *root) {
  // The blocks are retained while their bytes are read: a keyed block is
  // never written again, and a retained one is never evicted.
  const std::vector<BlockKey> keys = blocks_.chain_keys(tokens.data(), static_cast<int64_t>(tokens.size()), root);
  std::vector<BlockId> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const BlockKey &key : keys) {
      const BlockId b = blocks_.lookup(key);
      if (b < 0) break;
      held.push_back(b);
    }
  }
  const size_t bytes = kv_block_bytes();
  std::string out;
  try {
    out.resize(held.size() * bytes);
    for (size_t i = 0; i < held.size(); ++i) model_.read_kv_block(pool_, held[i], out.data() + i * bytes);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    for (BlockId b : held) blocks_.release(b);
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (BlockId b : held) blocks_.release(b);
  }
  *blocks = static_cast<int64_t>(held.size());
  return out;
}

int64_t Engine::import_prefix(const std::vector<int32_t> &tokens, const char *data, int64_t blocks,
                              const BlockKey *root) {
  const int64_t full = static_cast<int64_t>(tokens.size()) / options_.block_size;
  if (blocks < 0 || blocks > full)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "saved K/V holds " + std::to_string(blocks) + " blocks but its " +
                                            std::to_string(tokens.size()) + " tokens fill only " +
                                            std::to_string(full) + " blocks of " + std::to_string(options_.block_size));
  const std::vector<BlockKey> keys = blocks_.chain_keys(tokens.data(), blocks * options_.block_size, root);
  // (block, index into data) of the blocks to fill: new, unkeyed, ours alone.
  std::vector<std::pair<BlockId, size_t>> fill;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      BlockId b = blocks_.lookup(keys[i]);
      if (b >= 0) {  // cached already (or in use): keep it
        blocks_.release(b);
        continue;
      }
      if ((b = blocks_.allocate()) < 0) break;
      fill.emplace_back(b, i);
    }
  }
  const size_t bytes = kv_block_bytes();
  auto finish = [&](bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto &[b, i] : fill) {
      if (ok) blocks_.publish(b, keys[i]);  // false: another sequence published it meanwhile
      blocks_.release(b);
    }
  };
  try {
    for (const auto &[b, i] : fill) model_.write_kv_block(pool_, b, data + i * bytes);
  } catch (...) {
    finish(false);
    throw;
  }
  finish(true);
  work_.notify_all();
  return static_cast<int64_t>(fill.size());
}

BlockKey Engine::block_key(const Sequence &s, size_t index) const {
  const size_t bs = static_cast<size_t>(options_.block_size);
  const BlockKey parent = index == 0 ? s.root_ : s.keys_[index - 1];
  return blocks_.chain_key(parent, s.tokens_.data() + index * bs);
}

// Full, resident blocks become findable by their tokens.
void Engine::publish_full_blocks(Sequence &s) {
  const size_t bs = static_cast<size_t>(options_.block_size);
  const size_t full = static_cast<size_t>(s.resident_) / bs;
  while (s.keys_.size() < full) s.keys_.push_back(block_key(s, s.keys_.size()));
  for (size_t i = 0; i < full && i < s.blocks_.size(); ++i)
    if (!blocks_.keyed(s.blocks_[i])) blocks_.publish(s.blocks_[i], s.keys_[i]);
  drop_inflight(s, full);
}

// In-flight prefix blocks: when a sequence is picked for a step, the full
// blocks its run will compute are registered under their keys, until they
// are published (or the sequence lets them go). Another sequence whose next
// block has such a key waits for it instead of computing the same K/V (the
// common case: many chats opening with the same system prompt at once).
void Engine::register_inflight(Sequence &s) {
  const size_t bs = static_cast<size_t>(options_.block_size);
  const size_t upto = static_cast<size_t>(s.goal_) / bs;
  size_t i = std::max(static_cast<size_t>(s.resident_) / bs, s.inflight_upto_);
  if (i >= upto) return;
  while (s.keys_.size() < upto) s.keys_.push_back(block_key(s, s.keys_.size()));
  for (; i < upto; ++i)
    if (inflight_.emplace(s.keys_[i], &s).second) s.inflight_.push_back({i, s.keys_[i]});
  s.inflight_upto_ = upto;
}

// Unregisters s's in-flight blocks of index below `below` (SIZE_MAX: all,
// when the sequence lets its run's blocks go).
void Engine::drop_inflight(Sequence &s, size_t below) {
  if (below == SIZE_MAX) s.inflight_upto_ = 0;
  auto gone = std::remove_if(s.inflight_.begin(), s.inflight_.end(), [&](const std::pair<size_t, BlockKey> &e) {
    if (e.first >= below) return false;
    auto it = inflight_.find(e.second);
    if (it != inflight_.end() && it->second == &s) inflight_.erase(it);
    return true;
  });
  s.inflight_.erase(gone, s.inflight_.end());
}

// True when s's next full block is being computed by another sequence.
bool Engine::waits_for_inflight(Sequence &s) const {
  const size_t bs = static_cast<size_t>(options_.block_size);
  const size_t next = static_cast<size_t>(s.resident_) / bs;
  if (s.resident_ % static_cast<int64_t>(bs) != 0 || s.blocks_.size() != next || next >= s.keys_.size() ||
      (s.tokens_.size() - 1) / bs <= next)
    return false;
  auto it = inflight_.find(s.keys_[next]);
  return it != inflight_.end() && it->second != &s;
}

// A sequence holding no K/V picks up the longest run of cached full blocks
// of its tokens, leaving at least its last token to compute (for logits).
void Engine::match_prefix(Sequence &s) {
  // Also a sequence that waited for in-flight blocks: it goes on from its
  // last full block (it holds no block past it).
  const bool fresh = s.blocks_.empty() && s.resident_ == 0;
  if (s.tokens_.empty() || !(fresh || s.waited_prefix_)) return;
  const size_t bs = static_cast<size_t>(options_.block_size);
  const size_t have = s.blocks_.size();
  if (static_cast<size_t>(s.resident_) != have * bs) return;
  const size_t limit = (s.tokens_.size() - 1) / bs;
  if (have >= limit) return;
  while (s.keys_.size() < limit) s.keys_.push_back(block_key(s, s.keys_.size()));
  s.blocks_.reserve(limit);  // a retained block must never miss its slot
  for (size_t i = have; i < limit; ++i) {
    BlockId b = blocks_.lookup(s.keys_[i]);
    if (b < 0) break;
    s.blocks_.push_back(b);
  }
  const int64_t gained = static_cast<int64_t>((s.blocks_.size() - have) * bs);
  s.resident_ += gained;
  stats_.reused_tokens += static_cast<uint64_t>(gained);
}

// Frees the blocks of the youngest request younger than for_ticket that is
// not in the step being built; it recomputes them when it runs again.
bool Engine::preempt_one(uint64_t for_ticket) {
  Sequence *victim = nullptr;
  for (Sequence *h : holders_)
    if (!h->in_step_ && !h->blocks_.empty() && h->ticket_ > for_ticket && (!victim || h->ticket_ > victim->ticket_))
      victim = h;
  if (!victim) return false;
  publish_full_blocks(*victim);  // its full blocks stay findable until evicted
  release_blocks(*victim);
  ++stats_.preemptions;
  return true;
}

int64_t Engine::preemptable_blocks(uint64_t for_ticket) const {
  // Blocks that preempting every candidate would surely free: those held by
  // one of them alone (a block shared with someone else may stay in use).
  int64_t n = 0;
  for (const Sequence *h : holders_)
    if (!h->in_step_ && h->ticket_ > for_ticket)
      for (BlockId b : h->blocks_)
        if (blocks_.refcount(b) == 1) ++n;
  return n;
}

bool Engine::reserve(Sequence &s, int64_t upto, const Group *group) {
  const int64_t bs = options_.block_size;
  // The block receiving the next row must be this sequence's alone and
  // unkeyed (a keyed block is someone's cached prefix): copy it otherwise.
  const size_t at = static_cast<size_t>(s.resident_ / bs);
  const bool copy = at < s.blocks_.size() && (blocks_.refcount(s.blocks_[at]) > 1 || blocks_.keyed(s.blocks_[at]));
  const size_t slots = static_cast<size_t>((upto + bs - 1) / bs);
  const int64_t need = (copy ? 1 : 0) + static_cast<int64_t>(slots > s.blocks_.size() ? slots - s.blocks_.size() : 0);
  // All or nothing: a sequence that took part of what it needs (preempting
  // younger ones for it) would hold blocks that let nobody run, and preempt
  // again next round. Preempt only when that makes room for the whole step.
  if (blocks_.available() < need) {
    if (blocks_.available() + preemptable_blocks(group->ticket) < need) return false;
    while (blocks_.available() < need)
      if (!preempt_one(group->ticket)) return false;
  }
  if (copy) {
    const BlockId old = s.blocks_[at], fresh = blocks_.allocate();
    if (fresh < 0) fail(PARLEY_ERROR_INTERNAL, "the KV block pool ran out after it had room");
    model_.copy_kv_block(pool_, fresh, old, s.resident_ % bs);
    blocks_.release(old);
    s.blocks_[at] = fresh;
  }
  s.blocks_.reserve(slots);  // an allocated block must never miss its slot
  while (s.blocks_.size() < slots) {
    const BlockId b = blocks_.allocate();
    if (b < 0) fail(PARLEY_ERROR_INTERNAL, "the KV block pool ran out after it had room");
    s.blocks_.push_back(b);
  }
  return true;
}

// A function call_on_engine_thread hands to the scheduler. Lives on the
// caller's stack until `done`.
struct Engine::Call {
  const std::function<void()> *fn = nullptr;
  const void *owner = nullptr;
  // Its own: a shared one would wake every waiting caller after each call.
  // Notified under mu_, so the caller cannot return and destroy it first.
  std::condition_variable ran;
  bool done = false;
  std::exception_ptr error;
};

namespace {
// The engine whose scheduler loop runs on this thread, if any.
thread_local Engine *t_scheduler_of = nullptr;
}  // namespace

bool Engine::on_engine_thread() {
  return t_scheduler_of != nullptr;
}

void Engine::refuse_on_engine_thread(const char *what) {
  if (t_scheduler_of)
    fail(PARLEY_ERROR_BUSY,
         std::string(what) +
             " was called on a serving engine's thread (from an asynchronous request's callback): it would wait "
             "for a step that thread runs; submit it as a request (parley_*_submit) instead");
}

void Engine::call_on_engine_thread(const std::function<void()> &fn, const void *owner) {
  if (t_scheduler_of == this) {
    fn();
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (stop_) {
    lock.unlock();
    fn();
    return;
  }
  Call call;
  call.fn = &fn;
  call.owner = owner;
  calls_.push_back(&call);
  work_.notify_all();
  call.ran.wait(lock, [&] { return call.done; });
  if (call.error) std::rethrow_exception(call.error);
}

// no_sanitize: catching abi::__forced_unwind binds a reference to no object.
__attribute__((no_sanitize("null"))) void Engine::run_calls(std::unique_lock<std::mutex> &lock, const void *owner) {
  for (;;) {
    auto it = owner ? std::find_if(calls_.begin(), calls_.end(), [&](const Call *c) { return c->owner == owner; })
                    : calls_.begin();
    if (it == calls_.end()) return;
    Call *c = *it;
    calls_.erase(it);
    lock.unlock();
    try {
      (*c->fn)();
    } catch (const abi::__forced_unwind &) {
      // The host's callback ended this thread (pthread_exit / cancel; CPython
      // does it to a thread that asks for the GIL while it shuts down). The
      // unwinding must go on (swallowed, it aborts the process). No waiter
      // is left hanging on a callback: the queued ones are released unrun,
      // and later ones run on their workers, as after stop.
      lock.lock();
      c->done = true;
      c->ran.notify_one();
      for (Call *q : calls_) {
        q->done = true;
        q->ran.notify_one();
      }
      calls_.clear();
      stop_ = true;
      // The scheduler thread ends here: suspended callers end now
      // (CANCELLED), or nothing would ever resume them.
      try {
        release_async(lock);
      } catch (...) {
      }
      lock.unlock();
      throw;
    } catch (...) {
      c->error = std::current_exception();
    }
    lock.lock();
    c->done = true;
    c->ran.notify_one();
  }
}

void Engine::run_queued_calls_here(const void *owner) {
  Engine *e = t_scheduler_of;
  if (!e || !owner) return;
  std::unique_lock<std::mutex> lock(e->mu_);
  // A suspended request the caller waits for (cancelled, to be freed) is
  // released by the scheduler loop, which is this thread, inside a
  // callback: release it from here.
  e->release_async(lock);
  e->run_calls(lock, owner);
}

// Sources waiting for the scheduler to encode them (attach_sources). Lives
// on the caller's stack; the scheduler reaches it only while it is queued
// or being encoded.
struct Engine::EncodeJob {
  std::vector<Sequence *> seqs;
  const std::vector<std::vector<int32_t>> *sources = nullptr;
  bool started = false, finished = false;
  std::exception_ptr error;
};

void Engine::attach_source(Sequence &s, const std::vector<int32_t> &source, const RunControl &control) {
  attach_sources({&s}, {source}, control);
}

void Engine::attach_sources(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &sources,
                            const RunControl &control) {
  if (!cross_blocks_) fail(PARLEY_ERROR_INTERNAL, "attach_source on a decoder-only model's engine");
  refuse_on_engine_thread("a translation through the serving engine");
  if (seqs.empty() || seqs.size() != sources.size()) fail(PARLEY_ERROR_INTERNAL, "attach_sources: one source each");
  const int64_t bs = options_.block_size;
  std::vector<int64_t> need(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (!seqs[i] || seqs[i]->engine_ != this) fail(PARLEY_ERROR_INTERNAL, "a sequence of another engine");
    if (sources[i].empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a source is empty");
    const int64_t len = static_cast<int64_t>(sources[i].size());
    need[i] = (len + bs - 1) / bs;
    if (need[i] > cross_blocks_->num_blocks())
      fail(PARLEY_ERROR_OUT_OF_MEMORY, "a source of " + std::to_string(len) + " tokens does not fit the KV budget of " +
                                           std::to_string(stats_.kv_budget_bytes) + " bytes (" +
                                           std::to_string(cross_blocks_->num_blocks() * bs) + " source positions)");
  }
  // Sources are attached in parts that fit the cross pool at once, each all
  // or nothing, so that waiting requests never hold part of what they need.
  size_t first = 0;
  while (first < seqs.size()) {
    size_t end = first;
    int64_t part = 0;
    while (end < seqs.size() && part + need[end] <= cross_blocks_->num_blocks()) part += need[end++];
    const std::vector<Sequence *> part_seqs(seqs.begin() + static_cast<std::ptrdiff_t>(first),
                                            seqs.begin() + static_cast<std::ptrdiff_t>(end));
    const std::vector<std::vector<int32_t>> part_sources(sources.begin() + static_cast<std::ptrdiff_t>(first),
                                                         sources.begin() + static_cast<std::ptrdiff_t>(end));
    attach_part(part_seqs, part_sources, part, control);
    first = end;
  }
}

void Engine::count_stopped(parley_status status) {
  std::lock_guard<std::mutex> lock(mu_);
  if (status == PARLEY_ERROR_CANCELLED) ++stats_.cancelled;
  if (status == PARLEY_ERROR_TIMEOUT) ++stats_.timed_out;
}

void Engine::attach_part(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &sources,
                         int64_t need, const RunControl &control) {
  const int64_t bs = options_.block_size;
  std::unique_lock<std::mutex> lock(mu_);
  auto check_control = [&](const char *waiting_for) {
    if (control.cancel && control.cancel->load()) {
      ++stats_.cancelled;
      fail(PARLEY_ERROR_CANCELLED, "the request was cancelled");
    }
    if (control.deadline && Clock::now() >= *control.deadline) {
      ++stats_.timed_out;
      fail(PARLEY_ERROR_TIMEOUT, std::string("the request's deadline passed ") + waiting_for);
    }
  };
  for (Sequence *s : seqs)
    if (!s->cross_.empty() || s->length() != 0) fail(PARLEY_ERROR_INTERNAL, "attach_source on a used sequence");
  const auto since = Clock::now();
  while (cross_blocks_->available() < need) {
    check_control("while it waited for KV memory");
    if (Clock::now() - since >= std::chrono::milliseconds(options_.admission_timeout_ms)) {
      ++stats_.refused;
      fail(PARLEY_ERROR_OUT_OF_MEMORY, "the KV budget of " + std::to_string(stats_.kv_budget_bytes) +
                                           " bytes stayed full for " + std::to_string(options_.admission_timeout_ms) +
                                           " ms (admission_timeout_ms): no room for a source of " +
                                           std::to_string(need * bs) + " positions");
    }
    // Released blocks notify done_ (close, the end of a step); cancellation is
    // seen within kCancelPollMs, the deadline and the admission timeout on time.
    auto wake = std::min(Clock::now() + std::chrono::milliseconds(kCancelPollMs),
                         since + std::chrono::milliseconds(options_.admission_timeout_ms));
    if (control.deadline) wake = std::min(wake, *control.deadline);
    done_.wait_until(lock, wake);
  }
  auto release = [&] {
    for (Sequence *s : seqs) {
      for (BlockId b : s->cross_) cross_blocks_->release(b);
      s->cross_.clear();
      s->src_len_ = 0;
      s->root_ = blocks_.model_identity();
    }
  };
  EncodeJob job;
  job.seqs = seqs;
  job.sources = &sources;
  try {
    for (size_t i = 0; i < seqs.size(); ++i) {
      Sequence &s = *seqs[i];
      const int64_t len = static_cast<int64_t>(sources[i].size());
      s.cross_.reserve(static_cast<size_t>((len + bs - 1) / bs));
      while (static_cast<int64_t>(s.cross_.size()) * bs < len) s.cross_.push_back(cross_blocks_->allocate());
      s.src_len_ = len;
      s.root_ = blocks_.source_key(sources[i].data(), len);
    }
    encodes_.push_back(&job);
  } catch (...) {
    release();
    throw;
  }
  work_.notify_all();
  // The scheduler encodes every queued source in one batch (sources of
  // concurrent requests together) between decode steps.
  for (;;) {
    if (job.finished) break;
    if (!job.started &&
        ((control.cancel && control.cancel->load()) || (control.deadline && Clock::now() >= *control.deadline))) {
      encodes_.erase(std::remove(encodes_.begin(), encodes_.end(), &job), encodes_.end());
      release();
      check_control("while its source waited to be encoded");
    }
    auto wake = Clock::now() + std::chrono::milliseconds(kCancelPollMs);  // encode_queued notifies when done
    if (!job.started && control.deadline) wake = std::min(wake, *control.deadline);
    done_.wait_until(lock, wake);
  }
  if (job.error) {
    release();
    std::rethrow_exception(job.error);
  }
}

void Engine::encode_queued(std::unique_lock<std::mutex> &lock) {
  // Shortest first, in batches of at most kEncodeBatchTokens padded
  // positions, so that a batch wastes little on padding.
  struct Item {
    EncodeJob *job;
    size_t index;
    int64_t len;
  };
  std::vector<EncodeJob *> jobs;
  jobs.swap(encodes_);
  for (EncodeJob *j : jobs) j->started = true;
  lock.unlock();
  uint64_t encode_batches_done = 0, sources_done = 0;
  try {
    std::vector<Item> items;
    for (EncodeJob *j : jobs)
      for (size_t i = 0; i < j->seqs.size(); ++i)
        items.push_back({j, i, static_cast<int64_t>((*j->sources)[i].size())});
    std::stable_sort(items.begin(), items.end(), [](const Item &a, const Item &b) { return a.len < b.len; });
    size_t first = 0;
    while (first < items.size()) {
      size_t end = first + 1;
      while (end < items.size() && static_cast<int64_t>(end + 1 - first) * items[end].len <= kEncodeBatchTokens) ++end;
      try {
        std::vector<std::vector<int32_t>> sources;
        std::vector<const int32_t *> tables;
        for (size_t i = first; i < end; ++i) {
          sources.push_back((*items[i].job->sources)[items[i].index]);
          tables.push_back(items[i].job->seqs[items[i].index]->cross_.data());
        }
        model_.encode_paged(cross_pool_, sources, tables);
        encode_batches_done += 1;
        sources_done += end - first;
      } catch (...) {
        const std::exception_ptr error = std::current_exception();
        for (size_t i = first; i < end; ++i)
          if (!items[i].job->error) items[i].job->error = error;
      }
      first = end;
    }
  } catch (...) {  // the bookkeeping itself could not be allocated
    const std::exception_ptr error = std::current_exception();
    for (EncodeJob *j : jobs)
      if (!j->error) j->error = error;
  }
  lock.lock();
  stats_.encode_batches += encode_batches_done;
  stats_.encoded_sources += sources_done;
  for (EncodeJob *j : jobs) j->finished = true;
  done_.notify_all();
}

std::vector<float> Engine::run(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
                               const RunControl &control, std::vector<int64_t> *computed) {
  std::vector<float> logits;
  run_into(seqs, tokens, control, logits, nullptr, computed);
  return logits;
}

void Engine::check_run(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens) const {
  if (seqs.empty() || seqs.size() != tokens.size())
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "run needs one token list per sequence");
  const int64_t vocab = model_.vocab(), max_pos = model_.decoder_params().max_positions;
  const uint64_t pool_tokens = static_cast<uint64_t>(blocks_.num_blocks() * options_.block_size);
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (!seqs[i] || seqs[i]->engine_ != this) fail(PARLEY_ERROR_INTERNAL, "a sequence of another engine");
    if (tokens[i].empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "a sequence got no tokens to run");
    if (cross_blocks_ && seqs[i]->cross_.empty()) fail(PARLEY_ERROR_INTERNAL, "a translation without its source");
    for (int32_t id : tokens[i])
      if (id < 0 || id >= vocab)
        fail(PARLEY_ERROR_INVALID_ARGUMENT,
             "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab));
    const uint64_t total = static_cast<uint64_t>(seqs[i]->length()) + tokens[i].size();
    if (max_pos > 0 && total > static_cast<uint64_t>(max_pos))
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "a sequence would reach position " + std::to_string(total) +
                                              ", past the model's " + std::to_string(max_pos) + " positions");
    if (total > pool_tokens)
      fail(PARLEY_ERROR_OUT_OF_MEMORY,
           "a sequence of " + std::to_string(total) + " tokens does not fit the KV budget of " +
               std::to_string(stats_.kv_budget_bytes) + " bytes (" + std::to_string(pool_tokens) + " tokens)");
  }
}

void Engine::enqueue_locked(Group &g, const std::vector<Sequence *> &seqs,
                            const std::vector<std::vector<int32_t>> &tokens) {
  g.ticket = UINT64_MAX;
  // Everything that may throw (allocations, a refusal) comes before the
  // first change to a sequence or the queue: a failure leaves both as they
  // were (marked queued for a group that never ran, they were BUSY for ever).
  for (size_t i = 0; i < seqs.size(); ++i) {
    Sequence &s = *seqs[i];
    if (s.queued_ || s.group_) fail(PARLEY_ERROR_BUSY, "a sequence is already running");
    if (std::find(seqs.begin(), seqs.begin() + static_cast<std::ptrdiff_t>(i), seqs[i]) !=
        seqs.begin() + static_cast<std::ptrdiff_t>(i))
      fail(PARLEY_ERROR_INVALID_ARGUMENT, "the same sequence twice in one run");
    s.tokens_.reserve(s.tokens_.size() + tokens[i].size());
    g.ticket = std::min(g.ticket, s.ticket_);
  }
  if (g.waiter) async_.reserve(async_.size() + 1);
  queue_.insert(std::upper_bound(queue_.begin(), queue_.end(), &g,
                                 [](const Group *a, const Group *b) { return a->ticket < b->ticket; }),
                &g);
  if (g.waiter) async_.push_back(&g);
  for (size_t i = 0; i < seqs.size(); ++i) {
    Sequence &s = *seqs[i];
    forget_expected(s);
    s.tokens_.insert(s.tokens_.end(), tokens[i].begin(), tokens[i].end());
    s.goal_ = s.length();
    s.computed_ = 0;
    s.computed_upto_ = s.resident_;
    s.done_ = false;
    s.queued_ = true;
    s.group_ = &g;
    s.logits_ = g.logits;
    s.logits_row_ = static_cast<int64_t>(i);
  }
  g.remaining = static_cast<int64_t>(seqs.size());
  stats_.waiting += g.remaining;
}

bool Engine::stepping(const Group &g) {
  return std::any_of(g.seqs.begin(), g.seqs.end(), [](const Sequence *s) { return s->in_step_; });
}

std::optional<Engine::StopReason> Engine::stop_reason(const Group &g, const RunControl &control) const {
  if (control.cancel && control.cancel->load())
    return StopReason{PARLEY_ERROR_CANCELLED, "the request was cancelled", &EngineStats::cancelled};
  if (control.deadline && Clock::now() >= *control.deadline)
    return StopReason{PARLEY_ERROR_TIMEOUT, "the request's deadline passed", &EngineStats::timed_out};
  if (g.blocked_since && Clock::now() - *g.blocked_since >= std::chrono::milliseconds(options_.admission_timeout_ms))
    return StopReason{PARLEY_ERROR_OUT_OF_MEMORY,
                      "the KV budget of " + std::to_string(stats_.kv_budget_bytes) + " bytes (" +
                          std::to_string(blocks_.num_blocks()) + " blocks of " + std::to_string(options_.block_size) +
                          " tokens) stayed full for " + std::to_string(options_.admission_timeout_ms) +
                          " ms (admission_timeout_ms)",
                      &EngineStats::refused};
  return std::nullopt;
}

void Engine::leave_locked(Group &g, bool keep_only_run) {
  queue_.erase(std::remove(queue_.begin(), queue_.end(), &g), queue_.end());
  async_.erase(std::remove(async_.begin(), async_.end(), &g), async_.end());
  for (Sequence *s : g.seqs) {
    if (keep_only_run) {
      if (!s->done_) --stats_.waiting;
      keep_resident(*s);
    }
    s->queued_ = false;
    s->group_ = nullptr;
    s->logits_ = nullptr;
  }
}

void Engine::finish_locked(Group &g) {
  leave_locked(g, g.error != nullptr);
  if (g.error) std::rethrow_exception(g.error);
  if (g.computed) {
    g.computed->clear();
    for (Sequence *s : g.seqs) g.computed->push_back(s->computed_);
  }
  if (g.stats) g.stats->valid = g.stats_ok;
}

void Engine::run_into(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
                      const RunControl &control, std::vector<float> &logits, LogitStats *stats,
                      std::vector<int64_t> *computed) {
  refuse_on_engine_thread("a blocking call that decodes through the serving engine");
  check_run(seqs, tokens);
  Group g;
  prepare_group(g, seqs, logits, stats, computed);
  std::unique_lock<std::mutex> lock(mu_);
  enqueue_locked(g, seqs, tokens);
  work_.notify_all();
  for (;;) {
    // Never leave while the scheduler computes one of the sequences: it
    // reads their tokens and advances them when the step ends.
    const bool busy = stepping(g);
    if ((g.remaining == 0 || g.error) && !busy) break;
    if (!busy) {
      if (std::optional<StopReason> why = stop_reason(g, control)) {
        // Leaves the group: the sequences keep only the tokens that ran.
        leave_locked(g, true);
        ++(stats_.*why->counter);
        lock.unlock();
        work_.notify_all();
        fail(why->status, why->message);
      }
    }
    // Cancellation (a flag the engine is not told about) is seen within
    // kCancelPollMs; the deadline and the admission timeout on time.
    auto wake = Clock::now() + std::chrono::milliseconds(kCancelPollMs);
    if (control.deadline) wake = std::min(wake, *control.deadline);
    if (g.blocked_since)
      wake = std::min(wake, *g.blocked_since + std::chrono::milliseconds(options_.admission_timeout_ms));
    g.cv.wait_until(lock, wake);
  }
  if (g.error) {
    // Failed: the sequences keep only the tokens that ran.
    leave_locked(g, true);
    lock.unlock();
    work_.notify_all();
    std::rethrow_exception(g.error);
  }
  finish_locked(g);
}

void Engine::prepare_group(Group &g, const std::vector<Sequence *> &seqs, std::vector<float> &logits, LogitStats *stats,
                           std::vector<int64_t> *computed) {
  g.seqs = seqs;
  logits.resize(seqs.size() * static_cast<size_t>(model_.vocab()));
  g.logits = &logits;
  g.computed = computed;
  if (stats) {
    linear_stats_for(*stats, static_cast<int64_t>(seqs.size()), model_.vocab());
    stats->valid = false;
    g.stats = stats;
  }
}

// ------------------------------------------------------------ run_await

Engine::RunAwait::RunAwait(Engine &engine, const std::vector<Sequence *> &seqs,
                           const std::vector<std::vector<int32_t>> &tokens, const RunControl &control,
                           std::vector<float> &logits, LogitStats *stats, std::vector<int64_t> *computed)
    : engine_(engine),
      seqs_(seqs),
      tokens_(tokens),
      control_(control),
      logits_(logits),
      stats_(stats),
      computed_(computed) {}

Engine::RunAwait::~RunAwait() = default;

bool Engine::RunAwait::await_ready() {
  if (control_.resumer && !on_engine_thread()) return false;
  // No one to resume a suspended caller (a blocking call): run it here.
  engine_.run_into(seqs_, tokens_, control_, logits_, stats_, computed_);
  return true;
}

bool Engine::RunAwait::await_suspend(std::coroutine_handle<> h) {
  // Once the group is queued, the scheduler may resume the caller on
  // another thread (and end this awaiter) before this returns: nothing of
  // *this is touched after the lock is released.
  Engine &engine = engine_;
  try {
    engine.check_run(seqs_, tokens_);
    group_ = std::make_unique<Group>();
    engine.prepare_group(*group_, seqs_, logits_, stats_, computed_);
    group_->waiter = h;
    group_->control = control_;
    group_->error_out = &error_;
    std::lock_guard<std::mutex> lock(engine.mu_);
    if (engine.stop_) fail(PARLEY_ERROR_CANCELLED, "the serving engine stopped");
    engine.enqueue_locked(*group_, seqs_, tokens_);
    engine.work_.notify_all();
  } catch (...) {
    group_.reset();
    error_ = std::current_exception();
    return false;  // go on at once, with the error
  }
  return true;
}

void Engine::RunAwait::await_resume() {
  if (error_) std::rethrow_exception(error_);
}

Engine::RunAwait Engine::run_await(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
                                   const RunControl &control, std::vector<float> &logits, LogitStats *stats,
                                   std::vector<int64_t> *computed) {
  return RunAwait(*this, seqs, tokens, control, logits, stats, computed);
}

void Engine::release_async(std::unique_lock<std::mutex> &lock) {
  if (async_.empty()) return;
  std::vector<std::pair<std::coroutine_handle<>, Resumer *>> ready;
  try {
    ready.reserve(async_.size());  // nothing below may fail once a group has left
  } catch (...) {
    return;  // no memory: the next round tries again
  }
  for (size_t i = 0; i < async_.size();) {
    Group &g = *async_[i];
    if (stepping(g)) {
      ++i;
      continue;
    }
    std::optional<StopReason> why;
    std::exception_ptr why_failed;  // building the reason ran out of memory: it leaves with that
    if (!(g.remaining == 0 || g.error) && !stop_) {
      try {
        why = stop_reason(g, g.control);
      } catch (...) {
        why_failed = std::current_exception();
      }
    }
    if (!(g.remaining == 0 || g.error) && !why && !why_failed && !stop_) {
      ++i;
      continue;
    }
    // It leaves now (async_ loses it: the same index holds the next group).
    std::exception_ptr *out = g.error_out;
    try {
      if (why_failed) {
        leave_locked(g, true);
        std::rethrow_exception(why_failed);
      }
      if (why) {
        leave_locked(g, true);
        ++(stats_.*why->counter);
        fail(why->status, why->message);
      }
      if (stop_ && !(g.remaining == 0 || g.error)) {
        leave_locked(g, true);
        fail(PARLEY_ERROR_CANCELLED, "the serving engine stopped");
      }
      if (g.error) {
        leave_locked(g, true);
        std::rethrow_exception(g.error);
      }
      finish_locked(g);
    } catch (...) {
      if (out) *out = std::current_exception();
    }
    ready.emplace_back(g.waiter, g.control.resumer);
  }
  if (ready.empty()) return;
  lock.unlock();
  work_.notify_all();
  for (auto &[h, resumer] : ready) resumer->resume(h);
  lock.lock();
}

void Engine::scheduler_loop() {
  t_scheduler_of = this;
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<Pick> batch;
  std::vector<PagedSequence> paged;
  int64_t last_step_us = 0;
  for (;;) {
    work_.wait(lock, [&] { return stop_ || !queue_.empty() || !encodes_.empty() || !calls_.empty(); });
    run_calls(lock);      // also on stop: no caller is left waiting
    release_async(lock);  // cancelled, past their deadline, or (on stop) all of them
    if (stop_) return;
    if (queue_.empty() && encodes_.empty()) continue;
    if (!encodes_.empty()) {
      // Sources of requests arriving together are encoded together: give
      // the others a moment to queue theirs.
      if (options_.gather_us > 0) work_.wait_for(lock, std::chrono::microseconds(options_.gather_us));
      run_calls(lock);
      if (stop_) {
        release_async(lock);
        return;
      }
      encode_queued(lock);
      continue;
    }
    // The rows that just ran are choosing their next token: let them join,
    // for gather_us or an eighth of the last step (at most 10 x gather_us):
    // a row that misses a long step waits a whole step for the next. Their
    // callbacks run here meanwhile (a row whose streaming callback is
    // queued posts its next token only after it ran).
    if (expected_ > 0 && options_.gather_us > 0) {
      const int64_t wait_us = std::max(options_.gather_us, std::min(last_step_us / 8, 10 * options_.gather_us));
      const auto until = Clock::now() + std::chrono::microseconds(wait_us);
      while (work_.wait_until(lock, until, [&] { return stop_ || expected_ == 0 || !calls_.empty(); })) {
        run_calls(lock);
        if (stop_ || expected_ == 0) break;
      }
    }
    run_calls(lock);
    if (stop_) {
      release_async(lock);  // suspended callers end (CANCELLED) rather than wait for ever
      return;
    }
    const auto step_start = std::chrono::steady_clock::now();
    try {
      schedule_and_step(lock, batch, paged);
    } catch (...) {
      // An allocation failed while picking or publishing: the requests in
      // the step (or, with none picked, the oldest) fail with it; the
      // engine goes on.
      const std::exception_ptr error = std::current_exception();
      bool any = false;
      for (const Pick &p : batch) {
        p.seq->in_step_ = false;
        if (Group *g = p.seq->group_) {
          if (!g->error) g->error = error;
          any = true;
        }
      }
      if (picking_seq_) picking_seq_->in_step_ = false;
      if (picking_group_) {
        if (!picking_group_->error) picking_group_->error = error;
        any = true;
      }
      if (!any && !queue_.empty() && !queue_.front()->error) queue_.front()->error = error;
      picking_group_ = nullptr;
      picking_seq_ = nullptr;
      batch.clear();
      for (Group *g : queue_) g->cv.notify_all();
      done_.notify_all();
    }
    release_async(lock);  // whose tokens just ran
    last_step_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - step_start).count();
    if (options_.after_step_for_tests) {
      lock.unlock();
      options_.after_step_for_tests();
      lock.lock();
    }
  }
}

void Engine::schedule_and_step(std::unique_lock<std::mutex> &lock, std::vector<Pick> &batch,
                               std::vector<PagedSequence> &paged) {
  {
    batch.clear();
    int64_t tokens_left = options_.max_batch_tokens, rows_left = options_.max_sequences;
    for (Group *g : queue_) g->blocked = false;
    // Two passes in ticket order: rows with one token to go (decode), then prompts in chunks.
    for (int pass = 0; pass < 2; ++pass) {
      for (Group *g : queue_) {
        // A failed group is leaving: run() returns as soon as it sees the
        // error and its caller frees the sequences, so none may be stepped.
        if (g->error) continue;
        picking_group_ = g;
        for (Sequence *s : g->seqs) {
          if (s->done_ || s->in_step_ || rows_left == 0 || tokens_left == 0) continue;
          picking_seq_ = s;
          match_prefix(*s);
          s->waited_prefix_ = waits_for_inflight(*s);
          if (s->waited_prefix_) {
            ++stats_.prefix_waits;
            continue;
          }
          const int64_t pending = s->goal_ - s->resident_;
          if ((pending == 1) != (pass == 0)) continue;
          const int64_t take = std::min({pending, options_.prefill_chunk, tokens_left});
          s->in_step_ = true;  // also keeps it from preempting itself
          if (!reserve(*s, s->resident_ + take, g)) {
            s->in_step_ = false;
            g->blocked = true;
            continue;
          }
          batch.push_back({s, take});
          register_inflight(*s);
          tokens_left -= take;
          --rows_left;
        }
      }
    }
    picking_group_ = nullptr;
    picking_seq_ = nullptr;
    // The admission clock runs from the first round in which a group found
    // the pool full until a round in which none of its sequences did. (Set
    // per pass, a prompt blocked in the prefill pass had its clock reset by
    // the decode pass of the next round, so it was never refused.)
    for (Group *g : queue_) {
      if (!g->blocked)
        g->blocked_since.reset();
      else if (!g->blocked_since)
        g->blocked_since = Clock::now();
    }
    if (batch.empty()) {  // everything waits for memory: wait for a release
      work_.wait_for(lock, std::chrono::milliseconds(5));
      return;
    }
    paged.clear();
    for (const Pick &p : batch) {
      Sequence &s = *p.seq;
      PagedSequence q;
      q.table = s.blocks_.data();
      q.table_len = static_cast<int64_t>(s.blocks_.size());
      q.cached = s.resident_;
      q.tokens = s.tokens_.data() + s.resident_;
      q.n = p.take;
      q.want_logits = s.resident_ + p.take == s.goal_;
      q.cross_table = s.cross_.data();
      q.cross_len = s.src_len_;
      paged.push_back(q);
    }
    // Nothing the step reads changes while it runs: the picked sequences
    // are in_step_ (not preempted, not abandoned), and their tokens and
    // tables are only touched under mu_ by the scheduler.
    lock.unlock();
    std::vector<float> &logits = step_logits_;  // reused from step to step (not cleared)
    LogitStats &step_stats = step_stats_;
    // Kept between steps and calls (so that a call's allocations do not
    // depend on when the scheduler last ran), but not far above what the
    // steps need now: a buffer four times this step's size goes back.
    const size_t need = paged.size() * static_cast<size_t>(model_.vocab());
    if (logits.capacity() > 4 * need) {
      std::vector<float>().swap(logits);
      step_stats = LogitStats{};
    }
    const bool want_stats =
        std::any_of(batch.begin(), batch.end(), [](const Pick &p) { return p.seq->group_ && p.seq->group_->stats; });
    std::exception_ptr error;
    try {
      step_stats.valid = false;
      model_.step_paged_into(pool_, paged, logits, cross_blocks_ ? &cross_pool_ : nullptr,
                             want_stats ? &step_stats : nullptr);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    const int64_t vocab = model_.vocab();
    ++stats_.steps;
    stats_.rows += batch.size();
    stats_.max_batch_rows = std::max<int64_t>(stats_.max_batch_rows, static_cast<int64_t>(batch.size()));
    for (size_t i = 0; i < batch.size(); ++i) {
      Sequence &s = *batch[i].seq;
      s.in_step_ = false;
      Group *g = s.group_;
      if (g) g->cv.notify_all();  // under mu_: it wakes once the step's bookkeeping is done
      if (error) {
        if (g && !g->error) g->error = error;
        continue;
      }
      (batch[i].take == 1 && s.goal_ - s.resident_ == 1 ? stats_.decode_tokens : stats_.prefill_tokens) +=
          static_cast<uint64_t>(batch[i].take);
      // A position recomputed after a preemption is counted once.
      const int64_t upto = s.resident_ + batch[i].take;
      s.computed_ += std::max<int64_t>(0, upto - std::max(s.resident_, s.computed_upto_));
      s.computed_upto_ = std::max(s.computed_upto_, upto);
      s.resident_ = upto;
      publish_full_blocks(s);
      if (s.resident_ == s.goal_ && g) {
        std::copy_n(logits.begin() + static_cast<int64_t>(i) * vocab, vocab,
                    s.logits_->begin() + s.logits_row_ * vocab);
        if (LogitStats *st = g->stats) {
          if (step_stats.valid) {
            const int64_t nb = st->blocks, from = static_cast<int64_t>(i) * nb, to = s.logits_row_ * nb;
            std::copy_n(step_stats.block_max.begin() + from, nb, st->block_max.begin() + to);
            std::copy_n(step_stats.block_sum.begin() + from, nb, st->block_sum.begin() + to);
          } else {
            g->stats_ok = false;
          }
        }
        s.done_ = true;
        --stats_.waiting;
        if (--g->remaining == 0)
          for (Sequence *r : g->seqs) {
            r->expected_ = true;
            ++expected_;
          }
      }
    }
    done_.notify_all();
  }
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.blocks = blocks_.stats();
  return s;
}

}  // namespace parley
