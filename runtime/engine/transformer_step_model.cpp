#include "engine/transformer_step_model.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>

#include "core/error.hpp"
#include "core/runtime.hpp"

namespace parley {

namespace {

// Reorder the rows of a [rows, row_elems] buffer in place (rows may be
// duplicated, dropped or added), moving only the first `used_elems` of each
// row (the filled part of a KV cache row). The staging copy is uninitialised
// memory of the used part only: no allocation or clearing of full capacity.
void gather_rows(std::vector<float> &buf, int64_t row_elems, int64_t used_elems, const std::vector<int32_t> &parents) {
  const size_t used = static_cast<size_t>(used_elems), row = static_cast<size_t>(row_elems);
  std::unique_ptr<float[]> staging(new float[parents.size() * used + 1]);
  for (size_t r = 0; r < parents.size(); ++r)
    std::memcpy(staging.get() + r * used, buf.data() + static_cast<size_t>(parents[r]) * row, used * sizeof(float));
  buf.resize(parents.size() * row);
  for (size_t r = 0; r < parents.size(); ++r)
    std::memcpy(buf.data() + r * row, staging.get() + r * used, used * sizeof(float));
}

}  // namespace

void TransformerStepModel::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)> &fn) {
  struct Call {
    const std::function<void(int64_t, int64_t)> *fn;
    std::exception_ptr error;
    std::mutex mu;
  } call{&fn, nullptr, {}};
  model_.pool().parallel_for(
      n, 1,
      [](void *user, int64_t begin, int64_t end) {
        auto *c = static_cast<Call *>(user);
        try {
          (*c->fn)(begin, end);
        } catch (...) {
          std::lock_guard<std::mutex> lock(c->mu);
          if (!c->error) c->error = std::current_exception();
        }
      },
      &call);
  if (call.error) std::rethrow_exception(call.error);
}

void TransformerStepModel::reorder(const std::vector<int32_t> &parents) {
  DecoderState &s = state_;
  if (parents.empty()) fail(PARLEY_ERROR_INVALID_ARGUMENT, "reorder: no rows left");
  for (int32_t p : parents)
    if (p < 0 || p >= s.batch) fail(PARLEY_ERROR_INTERNAL, "reorder: parent row out of range");
  const int64_t row = s.k.empty() ? 0 : static_cast<int64_t>(s.k[0].size()) / s.batch;
  int32_t longest = 0;
  for (int32_t p : parents) longest = std::max(longest, s.lengths[static_cast<size_t>(p)]);
  const int64_t used = s.capacity ? row / s.capacity * longest : row;  // only cached positions move
  for (auto &k : s.k) gather_rows(k, row, used, parents);
  for (auto &v : s.v) gather_rows(v, row, used, parents);
  if (!s.cross_k.empty()) {
    const int64_t crow = static_cast<int64_t>(s.cross_k[0].size()) / s.batch;
    for (auto &k : s.cross_k) gather_rows(k, crow, crow, parents);
    for (auto &v : s.cross_v) gather_rows(v, crow, crow, parents);
  }
  std::vector<int32_t> lengths, src_lengths;
  for (int32_t p : parents) {
    lengths.push_back(s.lengths[static_cast<size_t>(p)]);
    if (!s.src_lengths.empty()) src_lengths.push_back(s.src_lengths[static_cast<size_t>(p)]);
  }
  s.lengths = std::move(lengths);
  s.src_lengths = std::move(src_lengths);
  s.batch = static_cast<int64_t>(parents.size());
}

}  // namespace parley
