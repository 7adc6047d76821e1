#include "engine/transformer_step_model.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>

#include "core/error.hpp"
#include "core/runtime.hpp"

namespace parley {

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

// The logits come out of the output projection: the kernel a NaN or +inf
// was last seen in (an upstream kernel may have produced it).
std::string TransformerStepModel::logits_source() const {
  return logits_source_of(model_);
}

std::string logits_source_of(const Transformer &model) {
  const LinearPlan &k = model.output_projection();
  return std::string("the output projection (") + op_name(k.op) + " kernel '" + k.kernel + "') served by plugin '" +
         k.plugin + "'";
}

void TransformerStepModel::reorder(const std::vector<int32_t> &parents) {
  model_.reorder(state_, parents);
}

}  // namespace parley
