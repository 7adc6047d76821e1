// Bookkeeping of the paged KV cache (issue 12): which fixed-size KV blocks are
// free, who holds which block (reference counts), and the shared-prefix index
// that finds a computed block again by the tokens it holds. Host-side only: the
// engine owns the KV pool arrays and indexes them with the BlockIds handed out
// here.
//
// Block states (every block is in exactly one):
//   free    refcount 0, no key             on the free stack
//   cached  refcount 0, keyed              on the LRU list: evictable, findable by key
//   in use  refcount >= 1, keyed or not    held by requests (block tables)
// allocate() takes a free block, else evicts the least recently released
// cached block. A keyed block is never written again (its key names its
// contents); a request that must write into a shared block copies it first.
//
// Prefix cache keys (docs/serving.md, "Prefix cache keys"): the key of a FULL
// block is XXH3-128 (seed 0, xxHash >= 0.8) of 16 + 4 * block_size bytes:
//   parent.lo (u64 little-endian) | parent.hi (u64 LE) | block_size token ids (each i32 LE)
// where parent is the key of the previous block of the sequence, and for the
// first block the model identity key (model_identity_key below). BlockKey.lo /
// .hi are XXH128_hash_t.low64 / .high64. So a key names the whole token prefix
// up to the end of its block, under one model, KV dtype and block size: the
// same tokens at another position (another parent) get another key.
#pragma once

#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace parley {

class ModelFile;
struct Preamble;

using BlockId = int32_t;

// An XXH3-128 value (low64, high64).
struct BlockKey {
  uint64_t lo = 0, hi = 0;
  bool operator==(const BlockKey &) const = default;
};

// XXH3 output is already uniformly mixed: its low half is a good bucket hash.
struct BlockKeyHash {
  size_t operator()(const BlockKey &k) const noexcept { return static_cast<size_t>(k.lo ^ (k.hi >> 1)); }
};

struct BlockStats {
  int64_t blocks = 0;      // num_blocks
  int64_t free = 0;        // refcount 0, unkeyed
  int64_t cached = 0;      // refcount 0, keyed: evictable, findable by key
  int64_t in_use = 0;      // refcount >= 1; blocks == free + cached + in_use
  uint64_t hits = 0;       // lookups (also through match_prefix) that found a block
  uint64_t misses = 0;     // lookups that found none (match_prefix counts at most one per call)
  uint64_t evictions = 0;  // cached blocks whose key allocate() dropped to reuse them
  uint64_t published = 0;  // successful publish() calls
};

// The model identity a cache is keyed under (the root parent of every chain of
// keys): XXH3-128 (seed 0) of
//   "parley.kv.v1\0" (13 bytes) |
//   the file's preamble fields as u64 LE: major, minor, preamble_size, header_offset, header_length,
//     header_checksum, data_offset, data_length, preamble_checksum |
//   kv_dtype (parley_dtype, i32 LE) | block_size (i64 LE) | extra.size() (u64 LE) | extra's bytes
// The header checksum covers the config, the tokenizers and every tensor's
// XXH3-64 checksum (formats/FORMAT.md), so two files with other weights,
// config or format differ; the KV dtype and block size are folded in so that a
// cache of another precision or layout never matches. `extra` is for anything
// else the engine wants to separate caches by (e.g. the device or kernel set
// that computed the KV); empty by default.
// Throws INVALID_ARGUMENT for block_size < 1 or a kv_dtype with no element size.
BlockKey model_identity_key(const Preamble &preamble, int32_t kv_dtype, int64_t block_size,
                            std::string_view extra = {});
BlockKey model_identity_key(const ModelFile &file, int32_t kv_dtype, int64_t block_size, std::string_view extra = {});

// Not thread-safe: the engine calls it under its own lock (chain_key /
// chain_keys read only immutable members and may be called concurrently with
// each other). Every operation is O(1) except chain_keys / match_prefix (O(n
// tokens)) and clear_cache (O(cached blocks)). Misuse (an id out of range, a
// retain/release/publish of a block that is not in use) throws Error naming the
// block and leaves the manager unchanged.
class BlockManager {
 public:
  // num_blocks in [1, INT32_MAX], block_size in [1, INT32_MAX / 4] (INVALID_ARGUMENT otherwise).
  BlockManager(int64_t num_blocks, int64_t block_size, BlockKey model_identity);
  BlockManager(const BlockManager &) = delete;
  BlockManager &operator=(const BlockManager &) = delete;

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  const BlockKey &model_identity() const { return root_; }

  // Blocks allocate() can return now without failing: free + cached (refcount 0).
  int64_t available() const { return static_cast<int64_t>(free_.size()) + cached_; }

  // A block owned by the caller alone (refcount 1), unkeyed. Takes a free block
  // first, else evicts the least recently used cached block (dropping its key,
  // counted in evictions). Returns -1 when every block is in use.
  BlockId allocate();
  // refcount++. INTERNAL unless b is in use.
  void retain(BlockId b);
  // refcount--; at 0 a keyed block becomes cached (the most recently used), an
  // unkeyed one free. INTERNAL unless b is in use.
  void release(BlockId b);
  int32_t refcount(BlockId b) const;
  bool keyed(BlockId b) const;
  // The key b holds; INTERNAL when it holds none.
  const BlockKey &key(BlockId b) const;

  // The key of one full block of block_size tokens whose predecessor has key
  // `parent` (model_identity() for the first block).
  BlockKey chain_key(const BlockKey &parent, const int32_t *block_tokens) const;
  // Keys of the floor(n / block_size) full blocks of tokens[0, n), chained from
  // `root` (model_identity() when NULL). INVALID_ARGUMENT for n < 0 or
  // tokens == nullptr with n > 0.
  std::vector<BlockKey> chain_keys(const int32_t *tokens, int64_t n, const BlockKey *root = nullptr) const;
  // The chain root of a translation's decoder blocks: its K/V depends on the
  // source too, so its chain starts from the model identity and the whole
  // source (tagged so that it never equals a block key).
  BlockKey source_key(const int32_t *tokens, int64_t n) const;

  // The cached or in-use block holding `key`, retained for the caller
  // (refcount++; a cached block leaves the LRU list). -1 when no block holds
  // it. Counts a hit or a miss.
  BlockId lookup(const BlockKey &key);
  // The leading full blocks of tokens[0, n) found in the cache, in order, each
  // retained for the caller; stops at the first block not found (one miss) or
  // at the last full block. A partial trailing block is never looked up.
  std::vector<BlockId> match_prefix(const int32_t *tokens, int64_t n);

  // Makes the in-use block b (full, computed) findable under key. Returns false
  // and changes nothing when another block already holds key (the caller keeps
  // its private copy); true when b now holds key (also when it already did).
  // A block holds at most one key: INTERNAL when b holds another key, or is
  // not in use.
  bool publish(BlockId b, const BlockKey &key);

  // Drops every cached block's key: they become free. Returns how many.
  // In-use blocks keep their keys.
  int64_t clear_cache();

  BlockStats stats() const;

 private:
  struct Block {
    BlockKey key;
    int32_t refcount = 0;
    BlockId prev = -1, next = -1;  // LRU links while cached
    bool has_key = false;
  };
  void check_id(BlockId b, const char *what) const;
  void check_in_use(BlockId b, const char *what) const;
  void lru_push_back(BlockId b);
  void lru_unlink(BlockId b);

  int64_t block_size_;
  BlockKey root_;
  std::vector<Block> blocks_;
  std::vector<BlockId> free_;  // stack: the most recently freed block is reused first
  std::unordered_map<BlockKey, BlockId, BlockKeyHash> index_;
  BlockId lru_head_ = -1, lru_tail_ = -1;  // head: least recently used cached block
  int64_t cached_ = 0;
  uint64_t hits_ = 0, misses_ = 0, evictions_ = 0, published_ = 0;
};

}  // namespace parley
