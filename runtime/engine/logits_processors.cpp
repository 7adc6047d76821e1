#include "engine/logits_processors.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "core/error.hpp"

// AVX-512 / AVX2 / baseline versions of the vectorised loops, chosen at load
// (ifunc). Not under sanitizers: libparley's ifunc resolvers run while the
// library is relocated, before the sanitizer runtime is up (TSan crashes).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define PARLEY_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PARLEY_VECTOR_CLONES
#endif

namespace parley::decoding {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void force_only(float *scores, int64_t vocab, const std::vector<int32_t> &ids) {
  std::fill(scores, scores + vocab, kNegInf);
  for (int32_t id : ids) scores[id] = 0.0f;
}

uint64_t fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

}  // namespace

// RepetitionPenaltyLogitsProcessor: every token seen once or more is penalised
// once (gather/scatter), negatives multiplied, others divided.
void repetition_penalty(float *scores, int64_t vocab, const RowHistory &history, double penalty) {
  std::vector<char> seen(static_cast<size_t>(vocab), 0);
  for (size_t i = 0; i < history.size(); ++i) {
    const int32_t t = history[i];
    if (t >= 0 && t < vocab) seen[static_cast<size_t>(t)] = 1;
  }
  const float p = static_cast<float>(penalty);
  for (int64_t v = 0; v < vocab; ++v)
    if (seen[static_cast<size_t>(v)]) scores[v] = scores[v] < 0 ? scores[v] * p : scores[v] / p;
}

// NoRepeatNGramLogitsProcessor: ban every token that would complete an n-gram
// already present in the history.
void no_repeat_ngram(float *scores, int64_t vocab, const RowHistory &history, int64_t n) {
  const size_t len = history.size(), un = static_cast<size_t>(n);
  if (len < un) return;
  const size_t prefix = len + 1 - un;  // start of the current (n-1)-token suffix
  for (size_t w = 0; w + un <= len; ++w) {
    bool match = true;
    for (size_t j = 0; j + 1 < un && match; ++j) match = history[w + j] == history[prefix + j];
    const int32_t banned = history[w + un - 1];
    if (match && banned >= 0 && banned < vocab) scores[banned] = kNegInf;
  }
}

void apply_processors(const DecodingOptions &o, float *scores, int64_t vocab, const RowHistory &history,
                      int64_t cur_len, int64_t padded_prompt_len) {
  // SequenceBiasLogitsProcessor (one-token sequences) comes first in transformers' order.
  for (const auto &[t, bias] : o.logit_bias) scores[t] += bias;
  if (o.repetition_penalty != 1.0) repetition_penalty(scores, vocab, history, o.repetition_penalty);
  if (o.no_repeat_ngram_size > 0) no_repeat_ngram(scores, vocab, history, o.no_repeat_ngram_size);
  // MinLengthLogitsProcessor(min_new_tokens + prompt) and
  // MinNewTokensLengthLogitsProcessor: both suppress EOS while fewer than
  // min_new_tokens were generated.
  if (o.min_new_tokens > 0 && !o.eos_token_ids.empty() && cur_len - padded_prompt_len < o.min_new_tokens)
    for (int32_t e : o.eos_token_ids) scores[e] = kNegInf;
  // ForcedBOSTokenLogitsProcessor fires when input_ids.shape[-1] == 1.
  if (o.forced_bos_token_id && cur_len == 1) force_only(scores, vocab, {*o.forced_bos_token_id});
  // ForcedEOSTokenLogitsProcessor fires at cur_len == max_length - 1.
  if (!o.forced_eos_token_ids.empty() && cur_len == padded_prompt_len + o.max_new_tokens - 1)
    force_only(scores, vocab, o.forced_eos_token_ids);
  for (int32_t t : o.suppress_tokens) scores[t] = kNegInf;
  if (!o.begin_suppress_tokens.empty()) {
    const int64_t begin_index =
        (padded_prompt_len > 1 || !o.forced_bos_token_id) ? padded_prompt_len : padded_prompt_len + 1;
    if (cur_len == begin_index)
      for (int32_t t : o.begin_suppress_tokens) scores[t] = kNegInf;
  }
}

void temperature(float *scores, int64_t vocab, double t) {
  const float tf = static_cast<float>(t);
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, scores[v]);
  if (!std::isfinite(mx) || std::isfinite(mx / tf)) {
    for (int64_t v = 0; v < vocab; ++v) scores[v] /= tf;
    return;
  }
  // A temperature so small that the best score overflows (transformers then
  // samples from NaN and fails): the distribution's limit as t -> 0, the
  // best scores' tokens alone. Scaling score - max keeps the best at 0 and
  // sends the rest to -inf, with the same ratios as score / t.
  for (int64_t v = 0; v < vocab; ++v) scores[v] = scores[v] == mx ? 0.0f : (scores[v] - mx) / tf;
}

// TopKLogitsWarper: remove scores strictly below the k-th largest (ties kept).
void top_k(float *scores, int64_t vocab, int64_t k, int64_t min_tokens_to_keep) {
  k = std::min(std::max(k, min_tokens_to_keep), vocab);
  std::vector<float> sorted(scores, scores + vocab);
  std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[static_cast<size_t>(k - 1)];
  for (int64_t v = 0; v < vocab; ++v)
    if (scores[v] < kth) scores[v] = kNegInf;
}

// TopPLogitsWarper: sort ascending, remove tokens whose cumulative probability
// is <= 1 - top_p, always keeping the min_tokens_to_keep largest.
void top_p(float *scores, int64_t vocab, double p, int64_t min_tokens_to_keep) {
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  // torch.sort is not stable; among equal scores we take index order.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return scores[a] < scores[b]; });
  std::vector<float> sorted(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) sorted[static_cast<size_t>(i)] = scores[order[static_cast<size_t>(i)]];
  std::vector<double> probs(static_cast<size_t>(vocab));
  softmax(sorted.data(), probs.data(), vocab);
  const float threshold = static_cast<float>(1.0 - p);
  double cum = 0.0;  // torch's CPU cumsum accumulates float in double
  std::vector<int64_t> remove;
  for (int64_t i = 0; i < vocab - min_tokens_to_keep; ++i) {
    cum += static_cast<double>(static_cast<float>(probs[static_cast<size_t>(i)]));
    if (static_cast<float>(cum) <= threshold) remove.push_back(order[static_cast<size_t>(i)]);
  }
  for (int64_t v : remove) scores[v] = kNegInf;
}

// MinPLogitsWarper: remove tokens whose probability is below min_p times the
// top probability, keeping the min_tokens_to_keep most probable.
void min_p(float *scores, int64_t vocab, double p, int64_t min_tokens_to_keep) {
  std::vector<double> probs(static_cast<size_t>(vocab));
  softmax(scores, probs.data(), vocab);
  std::vector<float> pf(probs.begin(), probs.end());
  const float top = *std::max_element(pf.begin(), pf.end());
  const float threshold = top * static_cast<float>(p);
  std::vector<int64_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  const int64_t keep = std::min(min_tokens_to_keep, vocab);
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), [&](int64_t a, int64_t b) {
    return pf[static_cast<size_t>(a)] > pf[static_cast<size_t>(b)] ||
           (pf[static_cast<size_t>(a)] == pf[static_cast<size_t>(b)] && a < b);
  });
  std::vector<char> kept(static_cast<size_t>(vocab), 0);
  for (int64_t i = 0; i < keep; ++i) kept[static_cast<size_t>(order[static_cast<size_t>(i)])] = 1;
  for (int64_t v = 0; v < vocab; ++v)
    if (!kept[static_cast<size_t>(v)] && pf[static_cast<size_t>(v)] < threshold) scores[v] = kNegInf;
}

void apply_warpers(const DecodingOptions &o, float *scores, int64_t vocab, int64_t min_tokens_to_keep) {
  if (o.temperature != 1.0) temperature(scores, vocab, o.temperature);
  if (o.top_k != 0) top_k(scores, vocab, o.top_k, min_tokens_to_keep);
  if (o.top_p < 1.0) top_p(scores, vocab, o.top_p, min_tokens_to_keep);
  if (o.min_p > 0.0) min_p(scores, vocab, o.min_p, min_tokens_to_keep);
}

void softmax(const float *in, double *out, int64_t vocab) {
  float mx = kNegInf;
  for (int64_t v = 0; v < vocab; ++v) mx = std::max(mx, in[v]);
  double sum = 0.0;
  for (int64_t v = 0; v < vocab; ++v) {
    out[v] = in[v] == kNegInf ? 0.0 : std::exp(static_cast<double>(in[v]) - mx);
    sum += out[v];
  }
  for (int64_t v = 0; v < vocab; ++v) out[v] /= sum;
}

namespace {

// exp(x) for x <= 0 in straight-line float code the compiler vectorises
// (std::exp is a library call per element): Cody-Waite reduction by ln 2 and
// Cephes' expf polynomial (about 1 ulp), 2^n from the exponent bits. Inputs
// below -87 give exp(-87) ~ 1.6e-38, which cannot change a double sum that
// already holds exp(0) = 1 (the row's maximum), so -inf needs no branch.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.f);
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  // t's low mantissa bits hold n (two's complement); 2^n from the exponent field.
  const int32_t e = ((std::bit_cast<int32_t>(t) - 0x4B400000) + 127) << 23;
  return p * std::bit_cast<float>(e);
}

}  // namespace

PARLEY_VECTOR_CLONES void logit_block_stats(const float *in, int64_t vocab, float *block_max, float *block_sum) {
  // Reductions the compiler may reorder (omp simd; this file is built with
  // -O3 -fopenmp-simd, see runtime/CMakeLists.txt): a max is exact in any
  // order; a block's float sum of at most 64 exps in [0, 1] is within a few
  // ulps whatever the order. The max loop drops NaN (a comparison with NaN
  // is false), so NaN and +inf are flagged beside it in the same pass.
  constexpr int64_t kBlock = kLogitStatsBlock;
  float e[kBlock];
  for (int64_t b0 = 0, bi = 0; b0 < vocab; b0 += kBlock, ++bi) {
    const int64_t len = std::min(kBlock, vocab - b0);
    const float *x = in + b0;
    float mx = kNegInf;
    int bad = 0;
#pragma omp simd reduction(max : mx) reduction(| : bad)
    for (int64_t i = 0; i < len; ++i) {
      mx = x[i] > mx ? x[i] : mx;
      bad |= (x[i] != x[i]) | (x[i] == std::numeric_limits<float>::infinity());
    }
    block_max[bi] = mx;
    if (bad || mx == kNegInf) {
      block_sum[bi] = bad ? std::numeric_limits<float>::quiet_NaN() : 0.f;
      continue;
    }
    // Scalar, exp took ~13 cycles an element: it needs -fno-trapping-math
    // (runtime/CMakeLists.txt) to vectorise.
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) e[i] = exp_nonpositive(x[i] - mx);
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < len; ++i) sum += e[i];
    block_sum[bi] = sum;
  }
}

PARLEY_VECTOR_CLONES double log_sum_exp_of_blocks(const float *block_max, const float *block_sum, int64_t blocks) {
  float mx = kNegInf;
  int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
  for (int64_t b = 0; b < blocks; ++b) {
    mx = block_max[b] > mx ? block_max[b] : mx;
    nan |= block_sum[b] != block_sum[b];
  }
  if (nan) return std::numeric_limits<double>::quiet_NaN();
  if (mx == kNegInf) return -std::numeric_limits<double>::infinity();
  // Each block's sum rescaled to the row's maximum, summed in double. A
  // block of -inf has sum 0 (its exp factor, exp(-87), is finite).
  constexpr int64_t kChunk = 256;
  float e[kChunk];
  double sum = 0.0;
  for (int64_t b0 = 0; b0 < blocks; b0 += kChunk) {
    const int64_t len = std::min(kChunk, blocks - b0);
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) e[i] = exp_nonpositive(block_max[b0 + i] - mx);
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < len; ++i) sum += static_cast<double>(block_sum[b0 + i]) * static_cast<double>(e[i]);
  }
  return static_cast<double>(mx) + std::log(sum);
}

double log_sum_exp(const float *in, int64_t vocab) {
  const int64_t blocks = (vocab + kLogitStatsBlock - 1) / kLogitStatsBlock;
  thread_local std::vector<float> stats;
  stats.resize(static_cast<size_t>(2 * blocks));
  logit_block_stats(in, vocab, stats.data(), stats.data() + blocks);
  return log_sum_exp_of_blocks(stats.data(), stats.data() + blocks, blocks);
}

double log_softmax(const float *in, float *out, int64_t vocab) {
  return log_softmax_given_lse(in, out, vocab, log_sum_exp(in, vocab));
}

double log_softmax_given_lse(const float *in, float *out, int64_t vocab, double lse) {
  if (lse == -std::numeric_limits<double>::infinity()) {  // every token masked: all stay -inf
    std::fill(out, out + vocab, kNegInf);
    return lse;
  }
  for (int64_t v = 0; v < vocab; ++v)
    out[v] = in[v] == kNegInf ? kNegInf : static_cast<float>(static_cast<double>(in[v]) - lse);
  return lse;
}

// max_element's answer (the first maximal index, as torch.argmax) without its
// compare-and-branch per element: block maxima in vector code, then the first
// index of the best block that holds the maximum. For rows without NaN
// (check_logits_row refuses those before); a row of -inf gives 0, as
// max_element does.
PARLEY_VECTOR_CLONES int64_t argmax_first(const float *in, int64_t vocab) {
  constexpr int64_t kBlock = 512;
  float best = kNegInf;
  int64_t best_block = 0;
  for (int64_t b0 = 0; b0 < vocab; b0 += kBlock) {
    const int64_t len = std::min(kBlock, vocab - b0);
    float m = kNegInf;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < len; ++i) m = in[b0 + i] > m ? in[b0 + i] : m;
    if (m > best) best = m, best_block = b0;
  }
  if (!(best > kNegInf)) return 0;
  for (int64_t i = best_block;; ++i)
    if (in[i] == best) return i;
}

float token_log_softmax(const float *in, int64_t vocab, int64_t token) {
  const double lse = log_sum_exp(in, vocab);
  if (lse == -std::numeric_limits<double>::infinity() || in[token] == kNegInf) return kNegInf;
  return static_cast<float>(static_cast<double>(in[token]) - lse);
}

PARLEY_VECTOR_CLONES float copy_row_max(const float *in, float *out, int64_t vocab) {
  float mx = kNegInf;
  int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
  for (int64_t v = 0; v < vocab; ++v) {
    const float x = in[v];
    out[v] = x;
    mx = x > mx ? x : mx;
    nan |= x != x;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : mx;
}

void check_logits_row(double row_max, const float *row, int64_t vocab, int64_t step, const std::string &source) {
  if (std::isfinite(row_max)) return;
  // The error path: describe the row exactly (NaN, +inf or all -inf).
  int64_t nans = 0, pos_inf = 0;
  for (int64_t v = 0; v < vocab; ++v) {
    nans += std::isnan(row[v]) ? 1 : 0;
    pos_inf += row[v] == std::numeric_limits<float>::infinity() ? 1 : 0;
  }
  std::string what;
  if (nans) what = "NaN at " + std::to_string(nans) + " of " + std::to_string(vocab) + " tokens";
  if (pos_inf)
    what += (what.empty() ? "" : ", ") + std::string("+inf at ") + std::to_string(pos_inf) + " of " +
            std::to_string(vocab) + " tokens";
  if (what.empty()) what = "every one of the " + std::to_string(vocab) + " logits is -inf";
  fail(PARLEY_ERROR_DEVICE, "decoding: non-finite logits (" + what + ") at step " + std::to_string(step) + " from " +
                                (source.empty() ? std::string("the model") : source));
}

bool processed_overrides(const DecodingOptions &o, const float *raw, double lse, int64_t vocab,
                         const RowHistory &history, int64_t cur_len, int64_t padded_prompt_len,
                         std::vector<std::pair<int32_t, float>> *overrides) {
  overrides->clear();
  if (o.forced_bos_token_id && cur_len == 1) return false;
  if (!o.forced_eos_token_ids.empty() && cur_len == padded_prompt_len + o.max_new_tokens - 1) return false;
  // Same order and arithmetic as apply_processors on the dense row.
  auto value = [&](int32_t t) -> float & {
    for (auto &ov : *overrides)
      if (ov.first == t) return ov.second;
    const float x = raw[t];
    overrides->emplace_back(t, x == kNegInf ? kNegInf : static_cast<float>(static_cast<double>(x) - lse));
    return overrides->back().second;
  };
  for (const auto &[t, bias] : o.logit_bias) value(t) += bias;
  if (o.repetition_penalty != 1.0) {
    const float pen = static_cast<float>(o.repetition_penalty);
    std::vector<int32_t> seen;
    for (size_t i = 0; i < history.size(); ++i) {
      const int32_t t = history[i];
      if (t >= 0 && t < vocab && std::find(seen.begin(), seen.end(), t) == seen.end()) seen.push_back(t);
    }
    for (int32_t t : seen) {
      float &v = value(t);
      v = v < 0 ? v * pen : v / pen;
    }
  }
  if (o.no_repeat_ngram_size > 0) {
    const size_t len = history.size(), un = static_cast<size_t>(o.no_repeat_ngram_size);
    if (len >= un) {
      const size_t prefix = len + 1 - un;
      for (size_t w = 0; w + un <= len; ++w) {
        bool match = true;
        for (size_t j = 0; j + 1 < un && match; ++j) match = history[w + j] == history[prefix + j];
        const int32_t banned = history[w + un - 1];
        if (match && banned >= 0 && banned < vocab) value(banned) = kNegInf;
      }
    }
  }
  if (o.min_new_tokens > 0 && !o.eos_token_ids.empty() && cur_len - padded_prompt_len < o.min_new_tokens)
    for (int32_t e : o.eos_token_ids) value(e) = kNegInf;
  for (int32_t t : o.suppress_tokens) value(t) = kNegInf;
  if (!o.begin_suppress_tokens.empty()) {
    const int64_t begin_index =
        (padded_prompt_len > 1 || !o.forced_bos_token_id) ? padded_prompt_len : padded_prompt_len + 1;
    if (cur_len == begin_index)
      for (int32_t t : o.begin_suppress_tokens) value(t) = kNegInf;
  }
  return true;
}

double uniform01(uint64_t seed, uint64_t stream, uint64_t counter) {
  const uint64_t x = fmix64(fmix64(seed ^ 0x9e3779b97f4a7c15ULL) ^ fmix64(stream + 0x632be59bd9b4e019ULL) ^
                            (counter * 0xd1b54a32d192ed03ULL));
  return static_cast<double>(x >> 11) * 0x1.0p-53;
}

}  // namespace parley::decoding
