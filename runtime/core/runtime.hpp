// The objects behind the public handles. parley_runtime and parley_model are
// thin C structs holding these through shared_ptr, so a model keeps the
// plugins (and their code) it depends on alive even after parley_runtime_free.
#pragma once

#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "core/unwinder.hpp"
#include "engine/token_constraint.hpp"
#include "format/model_file.hpp"
#include "model/transformer.hpp"
#include "plugins/host_services.hpp"
#include "plugins/registry.hpp"
#include "serve/engine.hpp"
#include "text/text_model.hpp"

namespace parley {

struct Runtime {
  Runtime(int threads, parley_log_fn fn, void *user, parley_log_severity min)
      : host(threads, fn, user, min), registry(host) {}
  // Before anything that may throw through glibc (core/unwinder.hpp).
  bool unwinder_ready = (preload_unwinder(), true);
  HostServices host;
  Registry registry;  // declared after host: destroyed first
};

struct Model {
  std::shared_ptr<Runtime> runtime;
  std::unique_ptr<ModelFile> file;
  std::string device;
  // parley_model_options.kv_cache_dtype: the Transformer's self-attention KV cache type.
  parley_dtype kv_dtype = PARLEY_DTYPE_F32;
  // parley_model_options.activation_dtype: the Transformer's activations.
  parley_dtype act_dtype = PARLEY_DTYPE_F32;
  // parley_model_options.serving_engine and the engine's options.
  bool use_engine = true;
  EngineOptions engine_options;

  // The Transformer bound to the file's weights, built on first use so that
  // loading stays a pure file check (and container-only files stay
  // inspectable). Thread-safe; a binding error is kept and re-reported,
  // except running out of memory, which the next call retries.
  const Transformer &transformer() const;
  // The Transformer if it has been bound already, else nullptr (never binds).
  const Transformer *bound() const { return bound_.load(std::memory_order_acquire); }
  // The serving engine (built with the Transformer on first use), or
  // nullptr when the options turn it off or the model / device cannot page
  // its KV cache (encoder-decoder, a plugin without KV_PAGED).
  Engine *engine() const;
  // The engine if it has started, else nullptr (never starts it).
  Engine *engine_if_started() const {
    return engine_checked_.load(std::memory_order_acquire) ? engine_.get() : nullptr;
  }
  // Tokenizers and chat format, built on first use the same way.
  const TextModel &text() const;
  // The decoder's vocabulary as bytes in a trie, for constrained decoding
  // (engine/token_constraint.hpp); built on first use, then shared.
  std::shared_ptr<const TokenVocabulary> token_vocabulary() const;

 private:
  mutable std::mutex text_mutex_;
  mutable std::atomic<const TextModel *> text_ready_{nullptr};
  mutable std::unique_ptr<TextModel> text_;
  mutable std::exception_ptr text_error_;
  mutable std::mutex bind_mutex_;
  mutable std::atomic<const Transformer *> bound_{nullptr};
  mutable std::unique_ptr<Transformer> transformer_;
  mutable std::exception_ptr bind_error_;
  mutable std::mutex engine_mutex_;
  mutable std::atomic<bool> engine_checked_{false};
  mutable std::unique_ptr<Engine> engine_;
  mutable std::mutex vocab_mutex_;
  mutable std::shared_ptr<const TokenVocabulary> vocab_;
};

}  // namespace parley

struct parley_runtime {
  std::shared_ptr<parley::Runtime> impl;
};

struct parley_model {
  parley::Model impl;
  // Held by the host's handle, by every chat session of the model and by
  // every unfreed request that names it: parley_model_free drops the
  // host's, and the model goes with the last (finalizers of garbage-collected
  // bindings run in no particular order). parley::capi::retain / release.
  mutable std::atomic<int64_t> refs{1};
};
