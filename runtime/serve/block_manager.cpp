#include "serve/block_manager.hpp"

#include <xxhash.h>

#include <bit>
#include <climits>
#include <cstring>
#include <string>

#include "core/error.hpp"
#include "format/model_file.hpp"

namespace parley {

namespace {

// Appends v as `bytes` little-endian bytes (the key definition is fixed
// little-endian so that keys do not depend on the host).
void put_le(std::vector<unsigned char> &out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

void store_le64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

BlockKey to_key(XXH128_hash_t h) {
  return BlockKey{h.low64, h.high64};
}

// Fills buf[16, 16 + 4 * count) with the token ids as i32 little-endian.
void store_tokens(unsigned char *buf, const int32_t *tokens, int64_t count) {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(buf, tokens, static_cast<size_t>(count) * sizeof(int32_t));
  } else {
    for (int64_t i = 0; i < count; ++i) {
      const auto v = static_cast<uint32_t>(tokens[i]);
      for (int j = 0; j < 4; ++j) buf[4 * i + j] = static_cast<unsigned char>(v >> (8 * j));
    }
  }
}

// XXH3-128 of parent.lo | parent.hi | tokens[0, count) (docs/serving.md). Hashing
// one contiguous buffer (rather than a streaming state) keeps to xxHash's stable
// API; blocks of up to 256 tokens are hashed from the stack.
BlockKey hash_block(const BlockKey &parent, const int32_t *tokens, int64_t count) {
  constexpr int64_t kStackTokens = 256;
  unsigned char stack[16 + 4 * kStackTokens];
  std::vector<unsigned char> heap;
  unsigned char *buf = stack;
  const size_t size = 16 + 4 * static_cast<size_t>(count);
  if (count > kStackTokens) {
    heap.resize(size);
    buf = heap.data();
  }
  store_le64(buf, parent.lo);
  store_le64(buf + 8, parent.hi);
  store_tokens(buf + 16, tokens, count);
  return to_key(XXH3_128bits(buf, size));
}

std::string block_name(BlockId b) {
  return "KV block " + std::to_string(b);
}

}  // namespace

BlockKey model_identity_key(const Preamble &p, int32_t kv_dtype, int64_t block_size, std::string_view extra) {
  if (block_size < 1)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "KV block size " + std::to_string(block_size) + " must be at least 1");
  if (dtype_bits(kv_dtype) == 0)
    fail(PARLEY_ERROR_INVALID_ARGUMENT, "KV dtype " + std::to_string(kv_dtype) + " is not a known dtype");
  static constexpr char kTag[] = "parley.kv.v1";  // with its NUL: 13 bytes
  std::vector<unsigned char> bytes(kTag, kTag + sizeof kTag);
  for (uint64_t v : {uint64_t{p.major}, uint64_t{p.minor}, uint64_t{p.preamble_size}, p.header_offset, p.header_length,
                     p.header_checksum, p.data_offset, p.data_length, p.preamble_checksum})
    put_le(bytes, v, 8);
  put_le(bytes, static_cast<uint32_t>(kv_dtype), 4);
  put_le(bytes, static_cast<uint64_t>(block_size), 8);
  put_le(bytes, extra.size(), 8);
  bytes.insert(bytes.end(), extra.begin(), extra.end());
  return to_key(XXH3_128bits(bytes.data(), bytes.size()));
}

BlockKey model_identity_key(const ModelFile &file, int32_t kv_dtype, int64_t block_size, std::string_view extra) {
  return model_identity_key(file.preamble(), kv_dtype, block_size, extra);
}

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size, BlockKey model_identity)
    : block_size_(block_size), root_(model_identity) {
  if (num_blocks < 1 || num_blocks > INT32_MAX)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "KV block count " + std::to_string(num_blocks) + " is outside [1, " + std::to_string(INT32_MAX) + "]");
  // 4 * block_size token bytes (+16) must fit the hashed buffer's size arithmetic comfortably.
  if (block_size < 1 || block_size > INT32_MAX / 4)
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         "KV block size " + std::to_string(block_size) + " is outside [1, " + std::to_string(INT32_MAX / 4) + "]");
  blocks_.resize(static_cast<size_t>(num_blocks));
  free_.reserve(static_cast<size_t>(num_blocks));
  // Pushed in reverse so that a fresh manager hands out 0, 1, 2, ...
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<BlockId>(b));
}

void BlockManager::check_id(BlockId b, const char *what) const {
  if (b < 0 || static_cast<size_t>(b) >= blocks_.size())
    fail(PARLEY_ERROR_INVALID_ARGUMENT,
         std::string(what) + ": " + block_name(b) + " is out of range [0, " + std::to_string(blocks_.size()) + ")");
}

void BlockManager::check_in_use(BlockId b, const char *what) const {
  check_id(b, what);
  const Block &k = blocks_[static_cast<size_t>(b)];
  if (k.refcount <= 0)
    fail(PARLEY_ERROR_INTERNAL, std::string(what) + " of " + block_name(b) + ", which is not in use (" +
                                    (k.has_key ? "cached" : "free") + ", refcount 0)");
}

void BlockManager::lru_push_back(BlockId b) {
  Block &k = blocks_[static_cast<size_t>(b)];
  k.prev = lru_tail_;
  k.next = -1;
  if (lru_tail_ >= 0)
    blocks_[static_cast<size_t>(lru_tail_)].next = b;
  else
    lru_head_ = b;
  lru_tail_ = b;
  ++cached_;
}

void BlockManager::lru_unlink(BlockId b) {
  Block &k = blocks_[static_cast<size_t>(b)];
  if (k.prev >= 0)
    blocks_[static_cast<size_t>(k.prev)].next = k.next;
  else
    lru_head_ = k.next;
  if (k.next >= 0)
    blocks_[static_cast<size_t>(k.next)].prev = k.prev;
  else
    lru_tail_ = k.prev;
  k.prev = k.next = -1;
  --cached_;
}

BlockId BlockManager::allocate() {
  BlockId b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (lru_head_ >= 0) {
    b = lru_head_;
    lru_unlink(b);
    Block &k = blocks_[static_cast<size_t>(b)];
    index_.erase(k.key);
    k.has_key = false;
    k.key = {};
    ++evictions_;
  } else {
    return -1;
  }
  blocks_[static_cast<size_t>(b)].refcount = 1;
  return b;
}

void BlockManager::retain(BlockId b) {
  check_in_use(b, "retain");
  Block &k = blocks_[static_cast<size_t>(b)];
  if (k.refcount == INT32_MAX) fail(PARLEY_ERROR_INTERNAL, "retain of " + block_name(b) + ": refcount overflow");
  ++k.refcount;
}

void BlockManager::release(BlockId b) {
  check_in_use(b, "release");
  Block &k = blocks_[static_cast<size_t>(b)];
  if (--k.refcount > 0) return;
  if (k.has_key)
    lru_push_back(b);
  else
    free_.push_back(b);
}

int32_t BlockManager::refcount(BlockId b) const {
  check_id(b, "refcount");
  return blocks_[static_cast<size_t>(b)].refcount;
}

bool BlockManager::keyed(BlockId b) const {
  check_id(b, "keyed");
  return blocks_[static_cast<size_t>(b)].has_key;
}

const BlockKey &BlockManager::key(BlockId b) const {
  check_id(b, "key");
  const Block &k = blocks_[static_cast<size_t>(b)];
  if (!k.has_key) fail(PARLEY_ERROR_INTERNAL, "key of " + block_name(b) + ", which holds no key");
  return k.key;
}

BlockKey BlockManager::chain_key(const BlockKey &parent, const int32_t *block_tokens) const {
  if (!block_tokens) fail(PARLEY_ERROR_INVALID_ARGUMENT, "chain_key: block tokens are NULL");
  return hash_block(parent, block_tokens, block_size_);
}

std::vector<BlockKey> BlockManager::chain_keys(const int32_t *tokens, int64_t n, const BlockKey *root) const {
  if (n < 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "chain_keys: token count " + std::to_string(n) + " is negative");
  if (!tokens && n > 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "chain_keys: tokens are NULL");
  const int64_t full = n / block_size_;
  std::vector<BlockKey> keys;
  keys.reserve(static_cast<size_t>(full));
  BlockKey parent = root ? *root : root_;
  for (int64_t i = 0; i < full; ++i) {
    parent = hash_block(parent, tokens + i * block_size_, block_size_);
    keys.push_back(parent);
  }
  return keys;
}

BlockKey BlockManager::source_key(const int32_t *tokens, int64_t n) const {
  if (n < 0 || (!tokens && n > 0)) fail(PARLEY_ERROR_INVALID_ARGUMENT, "source_key: bad source");
  std::vector<int32_t> tagged;
  tagged.reserve(static_cast<size_t>(n) + 1);
  tagged.push_back(-1);  // no token id is negative
  tagged.insert(tagged.end(), tokens, tokens + n);
  return hash_block(root_, tagged.data(), n + 1);
}

BlockId BlockManager::lookup(const BlockKey &key) {
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return -1;
  }
  const BlockId b = it->second;
  Block &k = blocks_[static_cast<size_t>(b)];
  if (k.refcount == INT32_MAX) fail(PARLEY_ERROR_INTERNAL, "lookup of " + block_name(b) + ": refcount overflow");
  if (k.refcount == 0) lru_unlink(b);
  ++k.refcount;
  ++hits_;
  return b;
}

std::vector<BlockId> BlockManager::match_prefix(const int32_t *tokens, int64_t n) {
  if (n < 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "match_prefix: token count " + std::to_string(n) + " is negative");
  if (!tokens && n > 0) fail(PARLEY_ERROR_INVALID_ARGUMENT, "match_prefix: tokens are NULL");
  std::vector<BlockId> found;
  const int64_t full = n / block_size_;
  found.reserve(static_cast<size_t>(full));
  BlockKey parent = root_;
  // Keys are computed one block at a time: nothing past the first miss is hashed.
  try {
    for (int64_t i = 0; i < full; ++i) {
      parent = hash_block(parent, tokens + i * block_size_, block_size_);
      const BlockId b = lookup(parent);
      if (b < 0) break;
      found.push_back(b);
    }
  } catch (...) {
    for (BlockId b : found) release(b);  // all or nothing
    throw;
  }
  return found;
}

bool BlockManager::publish(BlockId b, const BlockKey &key) {
  check_in_use(b, "publish");
  Block &k = blocks_[static_cast<size_t>(b)];
  if (k.has_key) {
    if (k.key == key) return true;
    fail(PARLEY_ERROR_INTERNAL, "publish of " + block_name(b) + " under a second key (a block holds at most one)");
  }
  if (!index_.emplace(key, b).second) return false;
  k.key = key;
  k.has_key = true;
  ++published_;
  return true;
}

int64_t BlockManager::clear_cache() {
  int64_t dropped = 0;
  while (lru_head_ >= 0) {
    const BlockId b = lru_head_;
    lru_unlink(b);
    Block &k = blocks_[static_cast<size_t>(b)];
    index_.erase(k.key);
    k.has_key = false;
    k.key = {};
    free_.push_back(b);
    ++dropped;
  }
  return dropped;
}

BlockStats BlockManager::stats() const {
  BlockStats s;
  s.blocks = num_blocks();
  s.free = static_cast<int64_t>(free_.size());
  s.cached = cached_;
  s.in_use = s.blocks - s.free - s.cached;
  s.hits = hits_;
  s.misses = misses_;
  s.evictions = evictions_;
  s.published = published_;
  return s;
}

}  // namespace parley
