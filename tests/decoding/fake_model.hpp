// A scripted StepModel for decoding tests: the logits of a row depend only on
// its last two tokens, through the same hash make_reference.py uses, so the
// reference outputs from transformers' generate() apply to it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "engine/step_model.hpp"

namespace parley::testing {

inline uint64_t fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Must match fake_logit() in make_reference.py; prev2/prev1 are -1 when absent.
inline float fake_logit(uint64_t salt, int64_t prev2, int64_t prev1, int64_t v) {
  const uint64_t key = static_cast<uint64_t>(prev2 + 1) * 1000003ULL + static_cast<uint64_t>(prev1 + 1) * 7919ULL +
                       static_cast<uint64_t>(v) * 131ULL + salt * 0x9E3779B97F4A7C15ULL;
  return static_cast<float>(static_cast<double>(fmix64(key) >> 40) / static_cast<double>(1 << 24) * 8.0 - 4.0);
}

class FakeStepModel : public StepModel {
 public:
  FakeStepModel(int64_t vocab, uint64_t salt, std::vector<std::vector<int32_t>> prompts)
      : vocab_(vocab), salt_(salt), rows_(std::move(prompts)) {}
  int64_t vocab() const override { return vocab_; }
  int64_t rows() const override { return static_cast<int64_t>(rows_.size()); }
  std::vector<float> advance(const std::vector<int32_t> &tokens) override {
    if (tokens.size() != rows_.size()) throw std::runtime_error("FakeStepModel: wrong token count");
    for (size_t r = 0; r < rows_.size(); ++r) rows_[r].push_back(tokens[r]);
    ++advances;
    rows_fed += static_cast<int64_t>(tokens.size());
    return logits();
  }
  void reorder(const std::vector<int32_t> &parents) override {
    std::vector<std::vector<int32_t>> next;
    for (int32_t p : parents) next.push_back(rows_.at(static_cast<size_t>(p)));
    rows_ = std::move(next);
  }
  // Logits of every row's last position.
  std::vector<float> logits() const {
    std::vector<float> out;
    for (const auto &h : rows_) {
      const int64_t p1 = h.empty() ? -1 : h.back();
      const int64_t p2 = h.size() < 2 ? -1 : h[h.size() - 2];
      for (int64_t v = 0; v < vocab_; ++v) out.push_back(fake_logit(salt_, p2, p1, v));
    }
    return out;
  }
  const std::vector<std::vector<int32_t>> &histories() const { return rows_; }
  int64_t advances = 0;
  int64_t rows_fed = 0;

 private:
  int64_t vocab_;
  uint64_t salt_;
  std::vector<std::vector<int32_t>> rows_;
};

}  // namespace parley::testing
