// The paged KV cache's block manager (runtime/serve/block_manager.hpp):
// allocation, reference counts, the shared-prefix index and its LRU eviction,
// the key definition of docs/serving.md, misuse errors, and a randomised
// sequence of operations checked against a simple reference model (fixed,
// printed seed; PARLEY_TEST_SEED=<n> explores others).
#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "../common/gtest_seed.h"
#include "core/error.hpp"
#include "format/model_file.hpp"
#include "serve/block_manager.hpp"

namespace parley {
namespace {

const BlockKey kModelA{0x0123456789abcdefull, 0xfedcba9876543210ull};
const BlockKey kModelB{0x0123456789abcdefull, 0xfedcba9876543211ull};

// Runs f, which must throw Error with `status` and a message containing `needle`.
void expect_error(const std::function<void()> &f, parley_status status, const std::string &needle) {
  try {
    f();
  } catch (const Error &e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not name '" << needle << "'";
    return;
  }
  ADD_FAILURE() << "no Error thrown (expected one naming '" << needle << "')";
}

void expect_stats(const BlockManager &m, int64_t free, int64_t cached, int64_t in_use) {
  const BlockStats s = m.stats();
  EXPECT_EQ(s.blocks, m.num_blocks());
  EXPECT_EQ(s.free, free);
  EXPECT_EQ(s.cached, cached);
  EXPECT_EQ(s.in_use, in_use);
  EXPECT_EQ(s.free + s.cached + s.in_use, s.blocks);
  EXPECT_EQ(m.available(), free + cached);
}

std::vector<int32_t> iota_tokens(int64_t n, int32_t first) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[static_cast<size_t>(i)] = first + static_cast<int32_t>(i);
  return t;
}

TEST(BlockManager, AllocateUntilExhausted) {
  BlockManager m(4, 16, kModelA);
  EXPECT_EQ(m.num_blocks(), 4);
  EXPECT_EQ(m.block_size(), 16);
  expect_stats(m, 4, 0, 0);
  std::vector<BlockId> got;
  for (int i = 0; i < 4; ++i) {
    const BlockId b = m.allocate();
    ASSERT_GE(b, 0);
    ASSERT_LT(b, 4);
    EXPECT_EQ(m.refcount(b), 1);
    EXPECT_FALSE(m.keyed(b));
    got.push_back(b);
  }
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<BlockId>{0, 1, 2, 3}));
  expect_stats(m, 0, 0, 4);
  EXPECT_EQ(m.allocate(), -1);
  EXPECT_EQ(m.allocate(), -1);
  expect_stats(m, 0, 0, 4);
}

TEST(BlockManager, ReleaseAndReuse) {
  BlockManager m(3, 4, kModelA);
  const BlockId a = m.allocate(), b = m.allocate(), c = m.allocate();
  ASSERT_EQ(m.allocate(), -1);
  m.release(b);
  EXPECT_EQ(m.refcount(b), 0);
  expect_stats(m, 1, 0, 2);
  EXPECT_EQ(m.allocate(), b);  // the only free block
  EXPECT_EQ(m.refcount(b), 1);
  m.release(a);
  m.release(c);
  expect_stats(m, 2, 0, 1);
  const BlockId x = m.allocate(), y = m.allocate();
  EXPECT_TRUE((x == a && y == c) || (x == c && y == a));
  EXPECT_EQ(m.allocate(), -1);
}

TEST(BlockManager, Refcounts) {
  BlockManager m(2, 4, kModelA);
  const BlockId b = m.allocate();
  m.retain(b);
  m.retain(b);
  EXPECT_EQ(m.refcount(b), 3);
  m.release(b);
  EXPECT_EQ(m.refcount(b), 2);
  expect_stats(m, 1, 0, 1);
  m.release(b);
  EXPECT_EQ(m.refcount(b), 1);
  expect_stats(m, 1, 0, 1);
  m.release(b);
  EXPECT_EQ(m.refcount(b), 0);
  expect_stats(m, 2, 0, 0);
}

TEST(BlockManager, PublishLookupHitsAndMisses) {
  BlockManager m(4, 4, kModelA);
  const std::vector<int32_t> tokens = iota_tokens(4, 100);
  const BlockKey k = m.chain_keys(tokens.data(), 4).at(0);
  EXPECT_EQ(m.lookup(k), -1);
  EXPECT_EQ(m.stats().misses, 1u);
  EXPECT_EQ(m.stats().hits, 0u);

  const BlockId b = m.allocate();
  EXPECT_TRUE(m.publish(b, k));
  EXPECT_TRUE(m.keyed(b));
  EXPECT_EQ(m.key(b), k);
  EXPECT_EQ(m.stats().published, 1u);

  // A hit on an in-use block shares it.
  EXPECT_EQ(m.lookup(k), b);
  EXPECT_EQ(m.refcount(b), 2);
  EXPECT_EQ(m.stats().hits, 1u);
  m.release(b);
  m.release(b);
  // Unreferenced but keyed: cached, still findable, and available.
  expect_stats(m, 3, 1, 0);
  EXPECT_TRUE(m.keyed(b));
  EXPECT_EQ(m.lookup(k), b);  // leaves the LRU list
  EXPECT_EQ(m.refcount(b), 1);
  expect_stats(m, 3, 0, 1);
  EXPECT_EQ(m.stats().hits, 2u);
  EXPECT_EQ(m.stats().misses, 1u);
  EXPECT_EQ(m.lookup(BlockKey{1, 2}), -1);
  EXPECT_EQ(m.stats().misses, 2u);
}

TEST(BlockManager, PublishDuplicateKey) {
  BlockManager m(2, 4, kModelA);
  const BlockKey k{7, 8}, other{9, 10};
  const BlockId a = m.allocate(), b = m.allocate();
  EXPECT_TRUE(m.publish(a, k));
  EXPECT_FALSE(m.publish(b, k));  // a holds it: b stays private
  EXPECT_FALSE(m.keyed(b));
  EXPECT_TRUE(m.publish(a, k));  // already a's key: no change
  EXPECT_EQ(m.stats().published, 1u);
  expect_error([&] { m.publish(a, other); }, PARLEY_ERROR_INTERNAL, "KV block " + std::to_string(a));
  EXPECT_EQ(m.key(a), k);
  // Cached blocks still own their key...
  m.release(a);
  EXPECT_FALSE(m.publish(b, k));
  // ...until evicted.
  m.release(b);  // unkeyed: free, taken first
  EXPECT_EQ(m.allocate(), b);
  EXPECT_EQ(m.allocate(), a);  // evicts a
  EXPECT_EQ(m.stats().evictions, 1u);
  EXPECT_FALSE(m.keyed(a));
  EXPECT_TRUE(m.publish(b, k));
  EXPECT_EQ(m.stats().published, 2u);
}

TEST(BlockManager, MatchPrefixStopsAtFirstMissAndPartialBlocks) {
  const int64_t bs = 4;
  BlockManager m(8, bs, kModelA);
  const std::vector<int32_t> tokens = iota_tokens(3 * bs + 2, 1000);  // 3 full blocks + 2 tokens
  const std::vector<BlockKey> keys = m.chain_keys(tokens.data(), static_cast<int64_t>(tokens.size()));
  ASSERT_EQ(keys.size(), 3u);
  BlockId blk[3];
  for (auto &b : blk) b = m.allocate();
  EXPECT_TRUE(m.publish(blk[0], keys[0]));
  EXPECT_TRUE(m.publish(blk[2], keys[2]));  // block 1 missing

  std::vector<BlockId> got = m.match_prefix(tokens.data(), static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(got, (std::vector<BlockId>{blk[0]}));
  EXPECT_EQ(m.refcount(blk[0]), 2);
  EXPECT_EQ(m.refcount(blk[2]), 1);  // past the miss: not retained
  EXPECT_EQ(m.stats().hits, 1u);
  EXPECT_EQ(m.stats().misses, 1u);
  for (BlockId b : got) m.release(b);

  EXPECT_TRUE(m.publish(blk[1], keys[1]));
  got = m.match_prefix(tokens.data(), static_cast<int64_t>(tokens.size()));
  EXPECT_EQ(got, (std::vector<BlockId>{blk[0], blk[1], blk[2]}));  // partial tail ignored, no miss
  EXPECT_EQ(m.stats().misses, 1u);
  for (BlockId b : got) EXPECT_EQ(m.refcount(b), 2);
  for (BlockId b : got) m.release(b);

  // Fewer tokens: only the full blocks among them.
  got = m.match_prefix(tokens.data(), 3 * bs - 1);
  EXPECT_EQ(got, (std::vector<BlockId>{blk[0], blk[1]}));
  for (BlockId b : got) m.release(b);
  EXPECT_TRUE(m.match_prefix(tokens.data(), bs - 1).empty());
  EXPECT_TRUE(m.match_prefix(nullptr, 0).empty());

  // Another first token: nothing matches, although blocks 1 and 2 hold the same tokens.
  std::vector<int32_t> changed = tokens;
  changed[0] = 1;
  const uint64_t misses = m.stats().misses;
  EXPECT_TRUE(m.match_prefix(changed.data(), static_cast<int64_t>(changed.size())).empty());
  EXPECT_EQ(m.stats().misses, misses + 1);
  for (BlockId b : blk) EXPECT_EQ(m.refcount(b), 1);
}

TEST(BlockManager, LruEvictsLeastRecentlyUsedUnreferencedBlock) {
  BlockManager m(3, 2, kModelA);
  const BlockKey k[3] = {{1, 1}, {2, 2}, {3, 3}};
  BlockId b[3];
  for (int i = 0; i < 3; ++i) {
    b[i] = m.allocate();
    ASSERT_TRUE(m.publish(b[i], k[i]));
  }
  // Released in the order 1, 0, 2: LRU order 1, 0, 2.
  m.release(b[1]);
  m.release(b[0]);
  m.release(b[2]);
  expect_stats(m, 0, 3, 0);
  // A lookup and a release make block 1 the most recently used: 0, 2, 1.
  ASSERT_EQ(m.lookup(k[1]), b[1]);
  m.release(b[1]);
  // Block 2 is referenced: never evicted.
  ASSERT_EQ(m.lookup(k[2]), b[2]);
  expect_stats(m, 0, 2, 1);

  EXPECT_EQ(m.allocate(), b[0]);
  EXPECT_EQ(m.lookup(k[0]), -1);  // its key was dropped
  EXPECT_EQ(m.allocate(), b[1]);
  EXPECT_EQ(m.allocate(), -1);  // only the referenced block 2 is left
  EXPECT_EQ(m.stats().evictions, 2u);
  expect_stats(m, 0, 0, 3);
  EXPECT_EQ(m.lookup(k[2]), b[2]);
  EXPECT_EQ(m.refcount(b[2]), 2);
}

TEST(BlockManager, FreeBlocksAreTakenBeforeCachedOnes) {
  BlockManager m(2, 2, kModelA);
  const BlockId keyed = m.allocate(), plain = m.allocate();
  ASSERT_TRUE(m.publish(keyed, BlockKey{5, 5}));
  m.release(keyed);  // cached
  m.release(plain);  // free
  EXPECT_EQ(m.allocate(), plain);
  EXPECT_EQ(m.stats().evictions, 0u);
  EXPECT_TRUE(m.keyed(keyed));
  EXPECT_EQ(m.allocate(), keyed);
  EXPECT_EQ(m.stats().evictions, 1u);
}

TEST(BlockManager, ClearCacheFreesOnlyCachedBlocks) {
  BlockManager m(4, 2, kModelA);
  BlockId b[3];
  for (int i = 0; i < 3; ++i) {
    b[i] = m.allocate();
    ASSERT_TRUE(m.publish(b[i], BlockKey{static_cast<uint64_t>(i), 0}));
  }
  m.release(b[0]);
  m.release(b[1]);
  expect_stats(m, 1, 2, 1);
  EXPECT_EQ(m.clear_cache(), 2);
  expect_stats(m, 3, 0, 1);
  EXPECT_FALSE(m.keyed(b[0]));
  EXPECT_EQ(m.lookup(BlockKey{0, 0}), -1);
  EXPECT_TRUE(m.keyed(b[2]));  // in use: keeps its key
  EXPECT_EQ(m.lookup(BlockKey{2, 0}), b[2]);
  EXPECT_EQ(m.clear_cache(), 0);
  EXPECT_EQ(m.stats().evictions, 0u);
}

// The documented key definition (docs/serving.md), recomputed here from the bytes.
BlockKey reference_key(const BlockKey &parent, const int32_t *tokens, int64_t bs) {
  std::vector<unsigned char> bytes;
  auto put = [&](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<unsigned char>(v >> (8 * i)));
  };
  put(parent.lo, 8);
  put(parent.hi, 8);
  for (int64_t i = 0; i < bs; ++i) put(static_cast<uint32_t>(tokens[i]), 4);
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return BlockKey{h.low64, h.high64};
}

TEST(BlockManager, ChainKeysFollowTheDocumentedDefinition) {
  const int64_t bs = 3;
  BlockManager m(1, bs, kModelA);
  const std::vector<int32_t> tokens = {5, -1, 2147483647, 0, 42, -2147483647 - 1, 9};
  const std::vector<BlockKey> keys = m.chain_keys(tokens.data(), 7);
  ASSERT_EQ(keys.size(), 2u);
  const BlockKey k0 = reference_key(kModelA, tokens.data(), bs);
  EXPECT_EQ(keys[0], k0);
  EXPECT_EQ(keys[1], reference_key(k0, tokens.data() + bs, bs));
  EXPECT_EQ(m.chain_key(m.model_identity(), tokens.data()), keys[0]);
  EXPECT_EQ(m.chain_key(keys[0], tokens.data() + bs), keys[1]);
  EXPECT_TRUE(m.chain_keys(tokens.data(), bs - 1).empty());
  EXPECT_TRUE(m.chain_keys(nullptr, 0).empty());
  EXPECT_EQ(m.chain_keys(tokens.data(), 6), keys);

  // Large blocks too (hashed from the heap past 256 tokens).
  for (int64_t big : {int64_t{255}, int64_t{256}, int64_t{257}, int64_t{1000}}) {
    BlockManager mb(1, big, kModelB);
    const std::vector<int32_t> t = iota_tokens(2 * big + 1, -7);
    const std::vector<BlockKey> kb = mb.chain_keys(t.data(), 2 * big + 1);
    ASSERT_EQ(kb.size(), 2u) << "block size " << big;
    const BlockKey r0 = reference_key(kModelB, t.data(), big);
    EXPECT_EQ(kb[0], r0) << "block size " << big;
    EXPECT_EQ(kb[1], reference_key(r0, t.data() + big, big)) << "block size " << big;
  }
}

TEST(BlockManager, KeysDifferByModelOrderAndPosition) {
  const int64_t bs = 4;
  BlockManager a(1, bs, kModelA), b(1, bs, kModelB), a2(1, bs, kModelA);
  const std::vector<int32_t> t = iota_tokens(3 * bs, 7);
  const std::vector<BlockKey> ka = a.chain_keys(t.data(), 3 * bs);
  EXPECT_EQ(a2.chain_keys(t.data(), 3 * bs), ka);  // deterministic
  const std::vector<BlockKey> kb = b.chain_keys(t.data(), 3 * bs);
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(ka[i], kb[i]) << "block " << i;

  // Token order within a block.
  std::vector<int32_t> swapped = t;
  std::swap(swapped[1], swapped[2]);
  EXPECT_NE(a.chain_keys(swapped.data(), bs)[0], ka[0]);

  // Same tokens in blocks 1 and 2 after another block 0: other parents, other keys.
  std::vector<int32_t> other_start = t;
  other_start[0] += 1000;
  const std::vector<BlockKey> ko = a.chain_keys(other_start.data(), 3 * bs);
  for (size_t i = 0; i < 3; ++i) EXPECT_NE(ko[i], ka[i]) << "block " << i;

  // Block 2's tokens as the first block of a sequence: another key than at position 2.
  EXPECT_NE(a.chain_keys(t.data() + 2 * bs, bs)[0], ka[2]);
  // And the same tokens repeated: each position keyed apart.
  std::vector<int32_t> rep(3 * bs, 11);
  const std::vector<BlockKey> kr = a.chain_keys(rep.data(), 3 * bs);
  EXPECT_NE(kr[0], kr[1]);
  EXPECT_NE(kr[1], kr[2]);
}

TEST(BlockManager, ModelIdentityKey) {
  Preamble p;
  p.major = 1;
  p.preamble_size = 64;
  p.header_offset = 64;
  p.header_length = 1000;
  p.header_checksum = 0x1111;
  p.data_offset = 1088;
  p.data_length = 4096;
  p.preamble_checksum = 0x2222;
  const BlockKey base = model_identity_key(p, PARLEY_DTYPE_F32, 16);
  EXPECT_EQ(model_identity_key(p, PARLEY_DTYPE_F32, 16), base);
  EXPECT_NE(model_identity_key(p, PARLEY_DTYPE_F16, 16), base);
  EXPECT_NE(model_identity_key(p, PARLEY_DTYPE_F32, 32), base);
  EXPECT_NE(model_identity_key(p, PARLEY_DTYPE_F32, 16, "cuda:0"), base);
  EXPECT_NE(model_identity_key(p, PARLEY_DTYPE_F32, 16, "cuda:0"), model_identity_key(p, PARLEY_DTYPE_F32, 16, "cpu"));
  Preamble q = p;
  q.header_checksum ^= 1;
  EXPECT_NE(model_identity_key(q, PARLEY_DTYPE_F32, 16), base);
  q = p;
  q.data_length += 64;
  EXPECT_NE(model_identity_key(q, PARLEY_DTYPE_F32, 16), base);
  expect_error([&] { model_identity_key(p, PARLEY_DTYPE_F32, 0); }, PARLEY_ERROR_INVALID_ARGUMENT, "block size 0");
  expect_error([&] { model_identity_key(p, 12345, 16); }, PARLEY_ERROR_INVALID_ARGUMENT, "dtype 12345");
}

TEST(BlockManager, ModelIdentityKeyOfRealFiles) {
  const std::string dir = PARLEY_PARITY_MODELS_DIR;
  LoadOptions o;
  const auto f32 = ModelFile::open_file(dir + "/llama.parley", o);
  const auto f16 = ModelFile::open_file(dir + "/llama.float16.parley", o);
  const auto gpt2 = ModelFile::open_file(dir + "/gpt2.parley", o);
  const BlockKey k = model_identity_key(*f32, PARLEY_DTYPE_F32, 16);
  EXPECT_NE(model_identity_key(*f16, PARLEY_DTYPE_F32, 16), k);  // same architecture, other weights
  EXPECT_NE(model_identity_key(*gpt2, PARLEY_DTYPE_F32, 16), k);
  // The identity is the file's, however it was loaded.
  const auto again = ModelFile::open_file(dir + "/llama.parley", LoadOptions{true, true, nullptr});
  EXPECT_EQ(model_identity_key(*again, PARLEY_DTYPE_F32, 16), k);
  // So two managers over one file share keys; over two files they do not.
  const std::vector<int32_t> t = iota_tokens(16, 3);
  BlockManager m1(1, 16, k), m2(1, 16, model_identity_key(*again, PARLEY_DTYPE_F32, 16)),
      m3(1, 16, model_identity_key(*f16, PARLEY_DTYPE_F32, 16));
  EXPECT_EQ(m1.chain_keys(t.data(), 16), m2.chain_keys(t.data(), 16));
  EXPECT_NE(m1.chain_keys(t.data(), 16), m3.chain_keys(t.data(), 16));
}

TEST(BlockManager, MisuseIsAnErrorNamingTheBlock) {
  expect_error([] { BlockManager(0, 16, kModelA); }, PARLEY_ERROR_INVALID_ARGUMENT, "block count 0");
  expect_error([] { BlockManager(-3, 16, kModelA); }, PARLEY_ERROR_INVALID_ARGUMENT, "block count -3");
  expect_error([] { BlockManager(int64_t{1} << 31, 16, kModelA); }, PARLEY_ERROR_INVALID_ARGUMENT, "block count");
  expect_error([] { BlockManager(4, 0, kModelA); }, PARLEY_ERROR_INVALID_ARGUMENT, "block size 0");
  expect_error([] { BlockManager(4, int64_t{1} << 40, kModelA); }, PARLEY_ERROR_INVALID_ARGUMENT, "block size");

  BlockManager m(3, 2, kModelA);
  const BlockId a = m.allocate();
  const BlockId c = m.allocate();
  ASSERT_TRUE(m.publish(c, BlockKey{4, 4}));
  m.release(c);  // cached
  const BlockStats before = m.stats();
  // Block 2 has never been allocated: free.
  expect_error([&] { m.release(2); }, PARLEY_ERROR_INTERNAL, "KV block 2, which is not in use (free");
  expect_error([&] { m.retain(2); }, PARLEY_ERROR_INTERNAL, "retain of KV block 2");
  expect_error([&] { m.publish(2, BlockKey{9, 9}); }, PARLEY_ERROR_INTERNAL, "publish of KV block 2");
  expect_error([&] { m.release(c); }, PARLEY_ERROR_INTERNAL,
               "release of KV block " + std::to_string(c) + ", which is not in use (cached");
  expect_error([&] { m.retain(c); }, PARLEY_ERROR_INTERNAL, "retain of KV block " + std::to_string(c));
  expect_error([&] { m.key(a); }, PARLEY_ERROR_INTERNAL, "KV block " + std::to_string(a) + ", which holds no key");
  for (BlockId bad : {-1, 3, 1 << 30}) {
    const std::string name = "KV block " + std::to_string(bad) + " is out of range [0, 3)";
    expect_error([&] { m.release(bad); }, PARLEY_ERROR_INVALID_ARGUMENT, name);
    expect_error([&] { m.retain(bad); }, PARLEY_ERROR_INVALID_ARGUMENT, name);
    expect_error([&] { m.refcount(bad); }, PARLEY_ERROR_INVALID_ARGUMENT, name);
    expect_error([&] { m.keyed(bad); }, PARLEY_ERROR_INVALID_ARGUMENT, name);
    expect_error([&] { m.key(bad); }, PARLEY_ERROR_INVALID_ARGUMENT, name);
    expect_error([&] { m.publish(bad, BlockKey{1, 1}); }, PARLEY_ERROR_INVALID_ARGUMENT, name);
  }
  expect_error([&] { m.chain_keys(nullptr, 4); }, PARLEY_ERROR_INVALID_ARGUMENT, "tokens are NULL");
  const int32_t t[2] = {1, 2};
  expect_error([&] { m.chain_keys(t, -1); }, PARLEY_ERROR_INVALID_ARGUMENT, "token count -1");
  expect_error([&] { m.match_prefix(nullptr, 2); }, PARLEY_ERROR_INVALID_ARGUMENT, "tokens are NULL");
  expect_error([&] { m.match_prefix(t, -2); }, PARLEY_ERROR_INVALID_ARGUMENT, "token count -2");
  expect_error([&] { m.chain_key(kModelA, nullptr); }, PARLEY_ERROR_INVALID_ARGUMENT, "tokens are NULL");
  // Nothing changed.
  const BlockStats after = m.stats();
  EXPECT_EQ(after.free, before.free);
  EXPECT_EQ(after.cached, before.cached);
  EXPECT_EQ(after.in_use, before.in_use);
  EXPECT_EQ(after.published, before.published);
  EXPECT_EQ(m.refcount(a), 1);
  EXPECT_EQ(m.refcount(c), 0);
  EXPECT_TRUE(m.keyed(c));
  // A double release is caught on the second one.
  m.release(a);
  expect_error([&] { m.release(a); }, PARLEY_ERROR_INTERNAL, "release of KV block " + std::to_string(a));
}

// ---- randomised operations against a reference model ----

// The reference: plain containers, linear scans, the documented rules.
struct Reference {
  explicit Reference(int64_t n) : rc(static_cast<size_t>(n), 0), key(static_cast<size_t>(n)) {}
  std::vector<int32_t> rc;
  std::vector<std::optional<BlockKey>> key;
  std::unordered_map<BlockKey, BlockId, BlockKeyHash> index;
  std::vector<BlockId> lru;  // front: least recently used
  uint64_t hits = 0, misses = 0, evictions = 0, published = 0;

  bool is_free(BlockId b) const { return rc[static_cast<size_t>(b)] == 0 && !key[static_cast<size_t>(b)]; }
  int64_t count_free() const {
    int64_t n = 0;
    for (size_t b = 0; b < rc.size(); ++b) n += is_free(static_cast<BlockId>(b));
    return n;
  }
  void drop_key(BlockId b) {
    index.erase(*key[static_cast<size_t>(b)]);
    key[static_cast<size_t>(b)].reset();
  }
  void unlink(BlockId b) { lru.erase(std::find(lru.begin(), lru.end(), b)); }
  void release(BlockId b) {
    if (--rc[static_cast<size_t>(b)] == 0 && key[static_cast<size_t>(b)]) lru.push_back(b);
  }
  BlockId lookup(const BlockKey &k) {
    auto it = index.find(k);
    if (it == index.end()) {
      ++misses;
      return -1;
    }
    ++hits;
    if (rc[static_cast<size_t>(it->second)]++ == 0) unlink(it->second);
    return it->second;
  }
};

void check_against(const BlockManager &m, const Reference &r, int64_t step) {
  SCOPED_TRACE("after step " + std::to_string(step));
  const BlockStats s = m.stats();
  const int64_t free = r.count_free(), cached = static_cast<int64_t>(r.lru.size());
  const int64_t in_use = std::count_if(r.rc.begin(), r.rc.end(), [](int32_t c) { return c > 0; });
  ASSERT_EQ(s.free, free);
  ASSERT_EQ(s.cached, cached);
  ASSERT_EQ(s.in_use, in_use);
  ASSERT_EQ(s.free + s.cached + s.in_use, s.blocks);
  ASSERT_EQ(m.available(), free + cached);
  ASSERT_EQ(s.hits, r.hits);
  ASSERT_EQ(s.misses, r.misses);
  ASSERT_EQ(s.evictions, r.evictions);
  ASSERT_EQ(s.published, r.published);
  for (BlockId b = 0; b < m.num_blocks(); ++b) {
    ASSERT_EQ(m.refcount(b), r.rc[static_cast<size_t>(b)]) << "block " << b;
    ASSERT_EQ(m.keyed(b), r.key[static_cast<size_t>(b)].has_value()) << "block " << b;
    if (m.keyed(b)) {
      ASSERT_EQ(m.key(b), *r.key[static_cast<size_t>(b)]) << "block " << b;
    }
  }
}

// What the random operations reached, over all cases: each must be non-zero, or
// the test would not catch a defect on that path.
struct Coverage {
  uint64_t evictions = 0, hits = 0, misses = 0, refused_publishes = 0, multi_block_matches = 0, misuses = 0;
};

void run_random_case(uint32_t seed, int64_t num_blocks, int64_t bs, int steps, Coverage &cov) {
  SCOPED_TRACE("num_blocks " + std::to_string(num_blocks) + ", block_size " + std::to_string(bs));
  std::mt19937 rng(seed);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  BlockManager m(num_blocks, bs, kModelA);
  Reference r(num_blocks);
  std::vector<BlockId> held;  // one entry per reference the "engine" holds

  // A few token sequences from a small alphabet, sharing prefixes, and the keys of their blocks.
  std::vector<std::vector<int32_t>> seqs;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> s(static_cast<size_t>(bs * (1 + pick(4))));
    for (auto &t : s) t = static_cast<int32_t>(pick(3));
    if (i > 0 && pick(2) == 0) {  // share a prefix with an earlier sequence
      const auto &o = seqs[pick(seqs.size())];
      std::copy_n(o.begin(), std::min(o.size(), s.size()) / 2, s.begin());
    }
    seqs.push_back(std::move(s));
  }
  std::vector<BlockKey> pool;
  for (const auto &s : seqs)
    for (const BlockKey &k : m.chain_keys(s.data(), static_cast<int64_t>(s.size()))) pool.push_back(k);

  for (int step = 0; step < steps; ++step) {
    const size_t op = pick(100);
    if (op < 25) {  // allocate
      const BlockId b = m.allocate();
      std::vector<BlockId> free_blocks;
      for (BlockId i = 0; i < num_blocks; ++i)
        if (r.is_free(i)) free_blocks.push_back(i);
      if (!free_blocks.empty()) {
        ASSERT_NE(std::find(free_blocks.begin(), free_blocks.end(), b), free_blocks.end()) << "step " << step;
      } else if (!r.lru.empty()) {
        ASSERT_EQ(b, r.lru.front()) << "step " << step << ": not the least recently used block";
        r.unlink(b);
        r.drop_key(b);
        ++r.evictions;
      } else {
        ASSERT_EQ(b, -1) << "step " << step;
      }
      if (b >= 0) {
        r.rc[static_cast<size_t>(b)] = 1;
        held.push_back(b);
      }
    } else if (op < 45) {  // release
      if (held.empty()) continue;
      const size_t i = pick(held.size());
      const BlockId b = held[i];
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      m.release(b);
      r.release(b);
    } else if (op < 52) {  // retain
      if (held.empty()) continue;
      const BlockId b = held[pick(held.size())];
      m.retain(b);
      ++r.rc[static_cast<size_t>(b)];
      held.push_back(b);
    } else if (op < 67) {  // publish
      if (held.empty()) continue;
      const BlockId b = held[pick(held.size())];
      const BlockKey k = pool[pick(pool.size())];
      const auto &rk = r.key[static_cast<size_t>(b)];
      if (rk && *rk != k) {
        expect_error([&] { m.publish(b, k); }, PARLEY_ERROR_INTERNAL, "KV block " + std::to_string(b));
      } else {
        bool expected = true;
        if (!rk) {
          auto it = r.index.find(k);
          expected = it == r.index.end();
          if (expected) {
            r.index.emplace(k, b);
            r.key[static_cast<size_t>(b)] = k;
            ++r.published;
          }
        }
        ASSERT_EQ(m.publish(b, k), expected) << "step " << step;
        cov.refused_publishes += !expected;
      }
    } else if (op < 77) {  // lookup
      const BlockKey k = pick(4) == 0 ? BlockKey{rng(), rng()} : pool[pick(pool.size())];
      const BlockId b = m.lookup(k);
      ASSERT_EQ(b, r.lookup(k)) << "step " << step;
      if (b >= 0) held.push_back(b);
    } else if (op < 92) {  // match_prefix
      std::vector<int32_t> s = seqs[pick(seqs.size())];
      s.resize(pick(s.size() + 1));
      if (!s.empty() && pick(3) == 0) s[pick(s.size())] = static_cast<int32_t>(pick(3));
      const std::vector<BlockId> got = m.match_prefix(s.data(), static_cast<int64_t>(s.size()));
      std::vector<BlockId> want;
      for (const BlockKey &k : m.chain_keys(s.data(), static_cast<int64_t>(s.size()))) {
        const BlockId b = r.lookup(k);
        if (b < 0) break;
        want.push_back(b);
      }
      ASSERT_EQ(got, want) << "step " << step;
      cov.multi_block_matches += got.size() >= 2;
      held.insert(held.end(), got.begin(), got.end());
    } else if (op < 94) {  // clear_cache
      const int64_t n = static_cast<int64_t>(r.lru.size());
      for (BlockId b : r.lru) r.drop_key(b);
      r.lru.clear();
      ASSERT_EQ(m.clear_cache(), n);
    } else {  // misuse: release or retain of a block nobody holds
      const BlockId b = static_cast<BlockId>(pick(static_cast<size_t>(num_blocks)));
      if (r.rc[static_cast<size_t>(b)] != 0) continue;
      ++cov.misuses;
      if (pick(2) == 0)
        expect_error([&] { m.release(b); }, PARLEY_ERROR_INTERNAL, "KV block " + std::to_string(b));
      else
        expect_error([&] { m.retain(b); }, PARLEY_ERROR_INTERNAL, "KV block " + std::to_string(b));
    }
    check_against(m, r, step);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // The engine lets go of everything: nothing stays in use.
  for (BlockId b : held) {
    m.release(b);
    r.release(b);
  }
  check_against(m, r, steps);
  EXPECT_EQ(m.stats().in_use, 0);
  const BlockStats st = m.stats();
  cov.evictions += st.evictions;
  cov.hits += st.hits;
  cov.misses += st.misses;
}

TEST(BlockManager, RandomOperationsMatchReferenceModel) {
  PARLEY_TRACE_BASE_SEED();
  const struct { int64_t blocks, bs; } shapes[] = {{1, 1}, {2, 3}, {5, 2}, {8, 4}, {16, 1}, {32, 7}};
  Coverage cov;
  for (const auto &sh : shapes) {
    PARLEY_CASE_SEED(seed);
    run_random_case(seed, sh.blocks, sh.bs, 4000, cov);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(cov.evictions, 0u);
  EXPECT_GT(cov.hits, 0u);
  EXPECT_GT(cov.misses, 0u);
  EXPECT_GT(cov.refused_publishes, 0u);
  EXPECT_GT(cov.multi_block_matches, 0u);
  EXPECT_GT(cov.misuses, 0u);
}

}  // namespace
}  // namespace parley
