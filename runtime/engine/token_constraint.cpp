#include "engine/token_constraint.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <memory>
#include <unordered_map>

#include "core/error.hpp"

namespace parley {

TokenVocabulary::TokenVocabulary(std::vector<std::string> bytes, std::vector<char> text)
    : bytes_(std::move(bytes)), text_(std::move(text)) {
  if (text_.size() != bytes_.size()) fail(PARLEY_ERROR_INTERNAL, "token vocabulary: sizes disagree");
  // Build with per-node maps, then flatten (children sorted by byte).
  struct Build {
    std::map<uint8_t, uint32_t> next;
    std::vector<int32_t> tokens;
  };
  std::vector<Build> b(1);
  for (size_t id = 0; id < bytes_.size(); ++id) {
    if (!text_[id] || bytes_[id].empty()) continue;
    uint32_t n = 0;
    for (char ch : bytes_[id]) {
      const auto byte = static_cast<uint8_t>(ch);
      auto it = b[n].next.find(byte);
      if (it == b[n].next.end()) {
        const auto fresh = static_cast<uint32_t>(b.size());
        b[n].next.emplace(byte, fresh);
        b.emplace_back();
        n = fresh;
      } else {
        n = it->second;
      }
    }
    b[n].tokens.push_back(static_cast<int32_t>(id));
  }
  // Flatten in depth-first preorder, the order mask() walks the trie in:
  // a node's first child follows it in memory, and each subtree is contiguous.
  std::vector<uint32_t> order, renumber(b.size());
  order.reserve(b.size());
  std::vector<uint32_t> todo{0};
  while (!todo.empty()) {
    const uint32_t n = todo.back();
    todo.pop_back();
    renumber[n] = static_cast<uint32_t>(order.size());
    order.push_back(n);
    for (auto it = b[n].next.rbegin(); it != b[n].next.rend(); ++it) todo.push_back(it->second);
  }
  nodes_.resize(b.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const Build &src = b[order[i]];
    Node &node = nodes_[i];
    node.edges_begin = static_cast<uint32_t>(edges_.size());
    for (const auto &[byte, child] : src.next) edges_.emplace_back(byte, renumber[child]);
    node.edges_end = static_cast<uint32_t>(edges_.size());
    node.tokens_begin = static_cast<uint32_t>(token_ids_.size());
    token_ids_.insert(token_ids_.end(), src.tokens.begin(), src.tokens.end());
    node.tokens_end = static_cast<uint32_t>(token_ids_.size());
  }
}

std::string Constraint::text_of(const std::vector<int32_t> &tokens) const {
  std::string out;
  for (int32_t t : tokens)
    if (t >= 0 && t < vocab->size() && vocab->is_text(t)) out += vocab->bytes(t);
  return out;
}

struct ConstraintState::Cache {
  std::vector<GrammarState> states;
  std::unordered_map<std::string, int32_t> index;  // serialised state -> id
  // Per state id, its transitions by byte: kUnknown until computed, -1 rejected.
  std::vector<std::unique_ptr<std::array<int32_t, 256>>> next;
  std::unordered_map<int32_t, std::vector<int32_t>> admitted;  // id -> admitted text tokens
  size_t admitted_entries = 0;

  static std::string key(const GrammarState &st) {
    std::string k;
    k.push_back(static_cast<char>(st.remaining));
    k.push_back(static_cast<char>(st.seq_length));
    k.append(reinterpret_cast<const char *>(&st.partial), sizeof st.partial);
    for (const auto &stack : st.stacks) {
      const auto n = static_cast<uint32_t>(stack.size());
      k.append(reinterpret_cast<const char *>(&n), sizeof n);
      k.append(reinterpret_cast<const char *>(stack.data()), stack.size() * sizeof(uint32_t));
    }
    return k;
  }
  int32_t intern(GrammarState st) {
    std::string k = key(st);
    auto it = index.find(k);
    if (it != index.end()) return it->second;
    const auto id = static_cast<int32_t>(states.size());
    states.push_back(std::move(st));
    index.emplace(std::move(k), id);
    return id;
  }
};

namespace {
// Past these the cache starts over (at the next step), bounding its memory.
constexpr size_t kMaxCachedStates = 16384;  // each with 1 KiB of transitions
constexpr int32_t kUnknown = -2;
constexpr size_t kMaxCachedAdmitted = size_t{1} << 22;  // token ids over all cached masks (16 MiB)
}  // namespace

ConstraintState::ConstraintState(std::shared_ptr<const Constraint> c)
    : c_(std::move(c)), cache_(std::make_shared<Cache>()) {
  GrammarState start;
  start.stacks = c_->grammar->initial_stacks();
  current_ = cache_->intern(std::move(start));
}

bool ConstraintState::complete() const {
  return current_ >= 0 && cache_->states[static_cast<size_t>(current_)].complete();
}

bool ConstraintState::finished() const {
  return current_ >= 0 && cache_->states[static_cast<size_t>(current_)].finished();
}

int32_t ConstraintState::transition(int32_t from, uint8_t byte) {
  Cache &c = *cache_;
  if (c.next.size() <= static_cast<size_t>(from)) c.next.resize(static_cast<size_t>(from) + 1);
  auto &row = c.next[static_cast<size_t>(from)];
  if (!row) {
    row = std::make_unique<std::array<int32_t, 256>>();
    row->fill(kUnknown);
  }
  int32_t &slot = (*row)[byte];
  if (slot != kUnknown) return slot;
  GrammarState out;
  // intern() may grow c.states: advance from a copy of the reference's target.
  const int32_t to =
      advance_byte(*c_->grammar, c.states[static_cast<size_t>(from)], byte, out) ? c.intern(std::move(out)) : -1;
  (*c.next[static_cast<size_t>(from)])[byte] = to;
  return to;
}

void ConstraintState::walk(uint32_t node, int32_t state, std::vector<int32_t> &admitted) {
  const auto &nodes = c_->vocab->nodes();
  const auto &edges = c_->vocab->edges();
  const auto &ids = c_->vocab->token_ids();
  const TokenVocabulary::Node &n = nodes[node];
  for (uint32_t e = n.edges_begin; e < n.edges_end; ++e) {
    const auto [byte, child] = edges[e];
    const int32_t next = transition(state, byte);
    if (next < 0) continue;
    const TokenVocabulary::Node &cn = nodes[child];
    admitted.insert(admitted.end(), ids.begin() + cn.tokens_begin, ids.begin() + cn.tokens_end);
    if (cn.edges_begin != cn.edges_end) walk(child, next, admitted);
  }
}

int64_t ConstraintState::mask(float *scores, const std::vector<int32_t> &eos_ids) {
  const int64_t vocab = c_->vocab->size();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (current_ < 0) {
    for (int64_t v = 0; v < vocab; ++v) scores[v] = kNegInf;
    return 0;
  }
  if (cache_->states.size() > kMaxCachedStates || cache_->admitted_entries > kMaxCachedAdmitted) {
    // Start over, keeping only the current state.
    GrammarState cur = cache_->states[static_cast<size_t>(current_)];
    cache_ = std::make_shared<Cache>();
    current_ = cache_->intern(std::move(cur));
  }
  auto it = cache_->admitted.find(current_);
  if (it == cache_->admitted.end()) {
    std::vector<int32_t> admitted;
    walk(0, current_, admitted);
    std::sort(admitted.begin(), admitted.end());
    cache_->admitted_entries += admitted.size();
    it = cache_->admitted.emplace(current_, std::move(admitted)).first;
  }
  const std::vector<int32_t> &admitted = it->second;
  // EOS ids: admitted exactly when the output is complete.
  std::vector<std::pair<int32_t, float>> eos_scores;
  for (int32_t e : eos_ids)
    if (e >= 0 && e < vocab) eos_scores.emplace_back(e, scores[e]);
  std::sort(eos_scores.begin(), eos_scores.end());
  eos_scores.erase(std::unique(eos_scores.begin(), eos_scores.end(),
                               [](const auto &a, const auto &b) { return a.first == b.first; }),
                   eos_scores.end());
  // Every token not admitted gets -inf: walk the sorted admitted ids.
  int64_t v = 0;
  for (int32_t t : admitted) {
    for (; v < t; ++v) scores[v] = kNegInf;
    v = t + 1;
  }
  for (; v < vocab; ++v) scores[v] = kNegInf;
  int64_t count = static_cast<int64_t>(admitted.size());
  const bool done = complete();
  for (const auto &[e, score] : eos_scores) {
    const bool was = std::binary_search(admitted.begin(), admitted.end(), e);
    if (done && !was) {
      scores[e] = score;
      ++count;
    } else if (!done && was) {
      scores[e] = kNegInf;
      --count;
    }
  }
  return count;
}

bool ConstraintState::accept(int32_t token, const std::vector<int32_t> &eos_ids) {
  if (std::find(eos_ids.begin(), eos_ids.end(), token) != eos_ids.end()) return complete();
  if (current_ < 0 || token < 0 || token >= c_->vocab->size() || !c_->vocab->is_text(token)) return false;
  const std::string &bytes = c_->vocab->bytes(token);
  if (bytes.empty()) return false;
  int32_t st = current_;
  for (char ch : bytes) {
    st = transition(st, static_cast<uint8_t>(ch));
    if (st < 0) return false;
  }
  current_ = st;
  return true;
}

}  // namespace parley
