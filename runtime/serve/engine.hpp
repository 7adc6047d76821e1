// The serving engine: one per model, it steps every active request together.
//
// Requests keep their own decoding loop (greedy, sampling, beam search in
// engine/decoding.cpp, run on the caller's thread or a worker's); each time
// a loop needs logits it posts its rows' new tokens here and waits. A
// scheduler thread collects what is posted, picks a batch (decode rows
// first, then prefill chunks of at most prefill_chunk tokens, within
// max_batch_tokens and max_sequences; oldest request first), and runs one
// Transformer::step_paged for all of them (continuous batching): requests
// join and leave between steps, a long prompt is cut into chunks so that it
// does not stall the others.
//
// KV memory is a pool of fixed-size blocks (Transformer::make_kv_pool)
// sized by a byte budget; a BlockManager (serve/block_manager.hpp) hands
// blocks out, counts references (beams share blocks; a shared block is
// copied before it is written), and keeps full blocks findable by a chained
// XXH3-128 key of their tokens, so a sequence that starts with tokens some
// other sequence already ran (a common system prompt, an earlier turn of the
// same chat) reuses their K/V. When the pool is full, a sequence waits; a
// running sequence of a younger request may be preempted (its blocks
// released; it recomputes from its tokens when it runs again); a request
// that waits longer than admission_timeout_ms gets OUT_OF_MEMORY naming the
// budget.
//
// Callbacks of asynchronous requests run on the scheduler thread
// (call_on_engine_thread): between steps, one at a time, in the order they
// were posted. A blocking engine call from that thread (a request's callback
// calling run() on any engine) would wait for a step that cannot come, so it
// fails with BUSY instead.
//
// Thread-safety: every public member may be called from any thread. A
// Sequence is used by one request at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/task.hpp"
#include "model/transformer.hpp"
#include "serve/block_manager.hpp"

namespace parley {

struct EngineOptions {
  int64_t block_size = 16;         // positions per KV block
  uint64_t kv_budget_bytes = 0;    // 0: see allocate_pool() in engine.cpp
  int64_t max_sequences = 256;     // sequences in one step
  int64_t max_batch_tokens = 512;  // tokens in one step (decode rows + prefill chunks)
  int64_t prefill_chunk = 256;     // tokens of one sequence's prompt per step
  int64_t admission_timeout_ms = 60000;
  // After a step, how long the scheduler waits for the rows that just ran to
  // post their next token (their threads are choosing it), so they join the
  // next step instead of the one after: gather_us, or an eighth of the last
  // step's time when that is longer (at most 10 x gather_us; 32 chats from
  // Python threads, whose callbacks take turns on the GIL, then ran 30 rows
  // a step instead of 21). 0: no waiting.
  int64_t gather_us = 2000;
  // Tests only: called on the scheduler thread after every step, without the
  // engine's lock (it may call stats() and block), so a test can order an
  // arrival against the steps deterministically instead of racing them.
  std::function<void()> after_step_for_tests;
};

struct EngineStats {
  uint64_t steps = 0, rows = 0;  // batched steps run; sequence-rows over all steps
  uint64_t prefill_tokens = 0, decode_tokens = 0;
  uint64_t reused_tokens = 0;  // tokens whose K/V came from the prefix cache instead of being computed
  uint64_t preemptions = 0, refused = 0, cancelled = 0, timed_out = 0;
  uint64_t encode_batches = 0, encoded_sources = 0;
  uint64_t prefix_waits = 0;  // rounds a sequence skipped to reuse blocks another one was computing  // encoder runs
                              // (attach_sources) and the sources they encoded
  int64_t waiting = 0;        // sequences with posted tokens not yet run
  int64_t max_batch_rows = 0;
  uint64_t kv_budget_bytes = 0, kv_block_bytes = 0;
  BlockStats blocks{};
};

// How a run() may end early, and where a suspended caller goes on.
struct RunControl {
  const std::atomic<bool> *cancel = nullptr;                      // set by another thread: CANCELLED
  std::optional<std::chrono::steady_clock::time_point> deadline;  // passed: TIMEOUT
  // Set: a decoding loop awaiting run_await() suspends instead of blocking
  // its thread, and this resumes it once its tokens ran (asynchronous
  // requests). NULL: run_await() blocks like run().
  Resumer *resumer = nullptr;
};

class Engine {
  struct Group;
  struct EncodeJob;

 public:
  // A row of K/V in the pool. `tokens` are the ids whose K/V the sequence
  // stands for; the first `resident` of them are in its blocks now (the rest
  // are computed at the next run, e.g. after a preemption or park()).
  class Sequence {
   public:
    int64_t length() const;  // tokens
    int64_t resident() const;
    const std::vector<int32_t> &tokens() const { return tokens_; }  // only while no run() is in flight

   private:
    friend class Engine;
    Engine *engine_ = nullptr;
    std::vector<int32_t> tokens_;
    int64_t resident_ = 0;
    std::vector<BlockId> blocks_;
    std::vector<BlockKey> keys_;  // chain keys of the full blocks computed so far (keys_[i] for block i)
    BlockKey root_{};             // parent key of block 0: the model, or the model and the source
    // Encoder-decoder models: the encoded source's cross-attention K/V
    // (blocks of the cross pool, shared by forks; kept across preemption).
    std::vector<BlockId> cross_;
    int64_t src_len_ = 0;
    uint64_t ticket_ = 0;    // the request's arrival order (older first; forks inherit it)
    bool expected_ = false;  // ran in the last step; the scheduler waits a moment for its next tokens
    // run() state
    int64_t goal_ = 0;            // tokens_.size() when the run's tokens are all resident
    int64_t computed_ = 0;        // tokens computed (not reused) during the current run
    int64_t computed_upto_ = 0;   // positions below this were resident or computed during the current run
    bool in_step_ = false;        // part of the step being computed now
    bool waited_prefix_ = false;  // skipped a round: its next block was being computed by another sequence
    std::vector<std::pair<size_t, BlockKey>> inflight_;  // (block index, key) it registered in Engine::inflight_
    size_t inflight_upto_ = 0;                           // blocks below this index were registered
    bool queued_ = false;                                // waiting for the scheduler
    bool done_ = false;
    std::vector<float> *logits_ = nullptr;  // where to put its last logits (row in the group's buffer)
    int64_t logits_row_ = 0;
    Group *group_ = nullptr;
  };
  using SequencePtr = std::shared_ptr<Sequence>;

  // Throws UNSUPPORTED when !model.supports_paged(), OUT_OF_MEMORY when the
  // pool cannot be allocated, INVALID_ARGUMENT for bad options (naming it).
  Engine(const Transformer &model, const EngineOptions &options, BlockKey model_identity);
  ~Engine();
  Engine(const Engine &) = delete;
  Engine &operator=(const Engine &) = delete;

  const Transformer &model() const { return model_; }
  const EngineOptions &options() const { return options_; }

  // A new, empty sequence; its request is younger than every earlier one.
  // Its blocks are keyed in a chain from `root` (identity() when NULL): a
  // private root keeps them apart from every other sequence's (K/V that
  // came from outside, a restored chat's, must not serve anyone else).
  SequencePtr open(const BlockKey *root = nullptr);
  // Makes s's request the youngest (a new chat turn on an old sequence).
  void renew(Sequence &s);
  // A sequence with the same tokens sharing `parent`'s blocks (beam search);
  // copy on write keeps them apart.
  SequencePtr fork(const Sequence &parent);
  // Keeps the first `length` tokens (<= length()).
  void truncate(Sequence &s, int64_t length);
  // Makes the full blocks findable by their tokens and releases every block
  // (the sequence keeps its tokens; the next run finds its K/V again unless
  // it was evicted meanwhile, and recomputes what is missing). Used between
  // chat turns, so idle conversations hold no memory.
  void park(Sequence &s);
  // Releases the sequence's blocks (also done when the last pointer to it goes).
  void close(Sequence &s);
  // Session save / restore with K/V (parley_chat_session_save_kv). The
  // K/V of the leading full blocks of `tokens` (a sequence's tokens, chained
  // from the model identity) that the cache holds now, block after block,
  // kv_block_bytes() each; stops at the first block it does not find.
  // *blocks: how many.
  // `root`: the chain's root (identity() when NULL; see open()).
  std::string export_prefix(const std::vector<int32_t> &tokens, int64_t *blocks, const BlockKey *root = nullptr);
  // Puts `blocks` blocks of such bytes, taken from an engine of the same
  // identity() for the same tokens, into the prefix cache as if computed
  // here (a block the cache holds already is kept). Stops early when every
  // block is in use. Returns the blocks it added. INVALID_ARGUMENT when
  // `blocks` exceeds the full blocks of `tokens`.
  int64_t import_prefix(const std::vector<int32_t> &tokens, const char *data, int64_t blocks,
                        const BlockKey *root = nullptr);
  size_t kv_block_bytes() const;
  // Blocks of the decoder's pool and of the cross pool (0 for a
  // decoder-only model): what a caller sizes its batches by.
  int64_t pool_blocks() const { return blocks_.num_blocks(); }
  int64_t cross_pool_blocks() const { return cross_blocks_ ? cross_blocks_->num_blocks() : 0; }
  const BlockKey &identity() const { return blocks_.model_identity(); }
  // Encoder-decoder models: encodes `source` for the empty sequence s (its
  // cross-attention K/V goes to the cross pool; its decoder blocks are then
  // keyed by the source too). Waits for cross blocks like run() waits for
  // KV blocks: CANCELLED, TIMEOUT, OUT_OF_MEMORY after admission_timeout_ms.
  void attach_source(Sequence &s, const std::vector<int32_t> &source, const RunControl &control = {});
  // The same for several empty sequences at once. The scheduler encodes
  // every queued source in one padded batch (shortest first, at most
  // kEncodeBatchTokens positions a batch): sources of requests that arrive
  // together share the encoder's weight reads.
  void attach_sources(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &sources,
                      const RunControl &control = {});
  static constexpr int64_t kEncodeBatchTokens = 2048;
  // How often a caller waiting in run() looks at its cancel flag when no step
  // wakes it (a step that runs one of its sequences does).
  static constexpr int64_t kCancelPollMs = 20;

  // Appends tokens[i] (>= 1 each) to seqs[i], all at once, and waits until
  // every one has run. Returns [seqs.size(), vocab]: each sequence's logits
  // after its last token. On CANCELLED / TIMEOUT / OUT_OF_MEMORY the
  // sequences keep only the tokens that ran (length() == resident()).
  // *computed (optional) receives how many of the new tokens were computed
  // rather than found in the prefix cache, per sequence.
  std::vector<float> run(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
                         const RunControl &control = {}, std::vector<int64_t> *computed = nullptr);
  // The same into `logits` (resized to [seqs.size(), vocab]; storage of the
  // same size is reused as it is, without clearing), and, when `stats` is
  // not NULL, the rows' block statistics where the model's output
  // projection writes them (stats->valid false otherwise, e.g. a kernel
  // without them, or rows computed in different steps of which one lacked
  // them).
  void run_into(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
                const RunControl &control, std::vector<float> &logits, LogitStats *stats = nullptr,
                std::vector<int64_t> *computed = nullptr);

  // co_await engine.run_await(...): run_into() for a coroutine. With
  // control.resumer set (and off the scheduler thread), the coroutine
  // suspends, holding no thread, and the scheduler hands it to the resumer
  // once the tokens ran, or the run failed, was cancelled or timed out (the
  // error is thrown where it awaited). Without, it blocks like run_into().
  // The arguments must outlive the co_await (named locals of the caller).
  class RunAwait {
   public:
    RunAwait(Engine &engine, const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
             const RunControl &control, std::vector<float> &logits, LogitStats *stats, std::vector<int64_t> *computed);
    RunAwait(RunAwait &&) = default;
    ~RunAwait();
    bool await_ready();
    bool await_suspend(std::coroutine_handle<> h);
    void await_resume();

   private:
    Engine &engine_;
    const std::vector<Sequence *> &seqs_;
    const std::vector<std::vector<int32_t>> &tokens_;
    RunControl control_;
    std::vector<float> &logits_;
    LogitStats *stats_;
    std::vector<int64_t> *computed_;
    std::unique_ptr<Group> group_;
    std::exception_ptr error_;
  };
  RunAwait run_await(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens,
                     const RunControl &control, std::vector<float> &logits, LogitStats *stats = nullptr,
                     std::vector<int64_t> *computed = nullptr);

  EngineStats stats() const;
  // A request's decoding loop stopped between runs (CANCELLED or TIMEOUT):
  // counted with those the engine stops while they wait in it.
  void count_stopped(parley_status status);

  // Runs fn on the scheduler thread, between steps, and returns when it has
  // run (rethrowing what it threw). On the scheduler thread itself, or once
  // the engine is stopping, fn runs on the caller's thread. Calls from
  // several threads run one at a time, in the order they were posted.
  // `owner` tags the call for run_queued_calls_here.
  void call_on_engine_thread(const std::function<void()> &fn, const void *owner = nullptr);
  // True on the scheduler thread of any engine (inside a callback run by
  // call_on_engine_thread).
  static bool on_engine_thread();
  // On a scheduler thread: runs the calls of `owner` queued for it now, in
  // order, and leaves the others queued (a callback that waits there for a
  // request whose callbacks are queued behind it, e.g. parley_request_free,
  // keeps that request moving without running anyone else's callback
  // inside its own). Elsewhere: nothing.
  static void run_queued_calls_here(const void *owner);

 private:
  struct Call;
  // Under mu_ (released while each runs): runs every queued call, or those of `owner`.
  void run_calls(std::unique_lock<std::mutex> &lock, const void *owner = nullptr);
  // Fails with BUSY on a scheduler thread: `what` would wait for a step.
  static void refuse_on_engine_thread(const char *what);
  struct Pick {
    Sequence *seq;
    int64_t take;
  };
  // Why a waiting group leaves before its tokens ran.
  struct StopReason {
    parley_status status;
    std::string message;
    uint64_t EngineStats::*counter;
  };
  // run_into / run_await, in parts. Validation, before any lock:
  void check_run(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens) const;
  void prepare_group(Group &g, const std::vector<Sequence *> &seqs, std::vector<float> &logits, LogitStats *stats,
                     std::vector<int64_t> *computed);
  // Under mu_: queues g (nothing changes when it throws).
  void enqueue_locked(Group &g, const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &tokens);
  static bool stepping(const Group &g);  // under mu_: one of its sequences is in the step being computed
  std::optional<StopReason> stop_reason(const Group &g, const RunControl &control) const;
  // Under mu_: g leaves the queue; keep_only_run: its sequences keep only
  // the tokens that ran (a failed or abandoned run).
  void leave_locked(Group &g, bool keep_only_run);
  // Under mu_: a group whose run ended leaves (rethrowing its error).
  void finish_locked(Group &g);
  // Scheduler, under mu_ (released while resuming): suspended callers
  // whose run ended, failed or was stopped go to their resumers.
  void release_async(std::unique_lock<std::mutex> &lock);
  void scheduler_loop();
  void attach_part(const std::vector<Sequence *> &seqs, const std::vector<std::vector<int32_t>> &sources, int64_t need,
                   const RunControl &control);
  // Scheduler, under mu_ (released while encoding): encodes every queued job.
  void encode_queued(std::unique_lock<std::mutex> &lock);
  // One iteration: picks the rows of a step under `lock`, runs it unlocked.
  void schedule_and_step(std::unique_lock<std::mutex> &lock, std::vector<Pick> &batch,
                         std::vector<PagedSequence> &paged);
  // Under mu_: blocks so that s can hold `upto` tokens, the block receiving
  // s.resident_ private. All or nothing: false, with nothing allocated or
  // preempted, when even preempting every younger sequence would not make
  // room for all of them.
  bool reserve(Sequence &s, int64_t upto, const Group *group);
  int64_t preemptable_blocks(uint64_t for_ticket) const;
  void release_blocks(Sequence &s);
  void keep_resident(Sequence &s);
  struct Pools {
    KvPool self, cross;
  };
  static Pools allocate_pools(const Transformer &model, const EngineOptions &options);
  Engine(const Transformer &model, const EngineOptions &options, BlockKey model_identity, Pools pools);
  void publish_full_blocks(Sequence &s);
  void register_inflight(Sequence &s);
  void drop_inflight(Sequence &s, size_t below);
  bool waits_for_inflight(Sequence &s) const;
  void match_prefix(Sequence &s);
  bool preempt_one(uint64_t for_ticket);
  void forget_expected(Sequence &s);
  BlockKey block_key(const Sequence &s, size_t index) const;

  const Transformer &model_;
  EngineOptions options_;
  mutable std::mutex mu_;
  std::condition_variable work_;  // scheduler: something was posted (or stop)
  std::condition_variable done_;  // requesters: a step finished
  std::deque<Call *> calls_;      // waiting for the scheduler thread
  KvPool pool_;
  KvPool cross_pool_;  // encoder-decoder models only: cross-attention K/V
  BlockManager blocks_;
  std::optional<BlockManager> cross_blocks_;  // of cross_pool_ (never keyed)
  std::deque<Group *> queue_;                 // groups with sequences still to run, in ticket order
  std::vector<Group *> async_;                // those of suspended callers (run_await), also in queue_
  std::vector<EncodeJob *> encodes_;          // sources waiting to be encoded
  // Keys of full blocks that a sequence in a step is computing (not yet published).
  std::unordered_map<BlockKey, Sequence *, BlockKeyHash> inflight_;
  std::vector<Sequence *> holders_;  // open sequences (candidates for preemption)
  int64_t expected_ = 0;             // sequences with expected_ set
  // While the scheduler picks a step: the group and sequence it looks at (an
  // allocation failure there fails that request).
  Group *picking_group_ = nullptr;
  Sequence *picking_seq_ = nullptr;
  uint64_t next_ticket_ = 0;
  bool stop_ = false;
  EngineStats stats_;
  // A step's logits and their block statistics: the scheduler thread's
  // only, kept from step to step so that their storage is not cleared and
  // reallocated each time (30 MB a step for 32 translations of 4 beams);
  // released when a step needs under a quarter of it.
  std::vector<float> step_logits_;
  LogitStats step_stats_;
  std::thread thread_;
};

}  // namespace parley
