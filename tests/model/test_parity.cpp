// Parity of the config-driven Transformer and the decoding engine with
// Hugging Face transformers, for every tiny model in tests/parity/goldens:
// logits (per sequence, as a right-padded batch and token by token through
// the KV cache; see parity::worst_logit_diff), greedy tokens, and beam
// tokens with their sequences_scores.
#include <gtest/gtest.h>

#include <filesystem>

#include "parity_util.hpp"

namespace {

using parity::json;
namespace fs = std::filesystem;

constexpr double kTolerance = 1e-4;

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, LogitsMatchTransformers) {
  auto l = parity::load(GetParam());
  ASSERT_EQ(l->transformer->vocab(), l->golden["vocab_size"].get<int64_t>());
  double worst = parity::worst_logit_diff(*l);
  std::printf("%s: worst |logit - transformers| = %.3g\n", GetParam().c_str(), worst);
  EXPECT_LE(worst, kTolerance) << GetParam();
}

TEST_P(Parity, GreedyTokensMatchTransformers) {
  auto l = parity::load(GetParam());
  const json &g = l->golden["greedy"];
  parley::DecodingOptions o = parity::options_from(g["settings"]);
  size_t width = 0;
  auto hyps = parity::run_generate(*l, o, &width);
  ASSERT_EQ(hyps.size(), g["sequences"].size());
  for (size_t b = 0; b < hyps.size(); ++b) {
    ASSERT_EQ(hyps[b].size(), 1u);
    EXPECT_EQ(hyps[b][0].tokens, parity::generated_part(g["sequences"][b], width, o.eos_token_ids))
        << GetParam() << " row " << b;
  }
}

// The decoder's first token is the one transformers' generate() started
// from (its sequences begin with it), including its fallback to
// bos_token_id when the config has no decoder_start_token_id
// (mbart_no_start), for every encoder-decoder golden.
TEST(ParityDecoderStart, MatchesTransformers) {
  int checked = 0;
  for (const std::string &name : parity::golden_names()) {
    auto l = parity::load(name);
    if (!l->transformer->encoder_decoder()) continue;
    const int32_t start = l->model->impl.file->decoder_start_token_id();
    for (const auto &seq : l->golden["greedy"]["sequences"]) EXPECT_EQ(seq[0].get<int32_t>(), start) << name;
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

TEST_P(Parity, BeamTokensAndScoresMatchTransformers) {
  auto l = parity::load(GetParam());
  const json &g = l->golden["beam"];
  parley::DecodingOptions o = parity::options_from(g["settings"]);
  size_t width = 0;
  auto hyps = parity::run_generate(*l, o, &width);
  const size_t R = static_cast<size_t>(o.num_return_sequences);
  ASSERT_EQ(hyps.size() * R, g["sequences"].size());
  for (size_t b = 0; b < hyps.size(); ++b) {
    ASSERT_EQ(hyps[b].size(), R);
    for (size_t r = 0; r < R; ++r) {
      EXPECT_EQ(hyps[b][r].tokens, parity::generated_part(g["sequences"][b * R + r], width, o.eos_token_ids))
          << GetParam() << " item " << b << " hypothesis " << r;
      EXPECT_NEAR(hyps[b][r].score, g["sequences_scores"][b * R + r].get<double>(), kTolerance)
          << GetParam() << " item " << b << " hypothesis " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, Parity, ::testing::ValuesIn(parity::golden_names()),
                         [](const ::testing::TestParamInfo<std::string> &i) { return i.param; });

}  // namespace
