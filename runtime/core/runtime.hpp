// The objects behind the public handles. parley_runtime and parley_model are
// thin C structs holding these through shared_ptr, so a model keeps the
// plugins (and their code) it depends on alive even after parley_runtime_free.
#pragma once

#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "format/model_file.hpp"
#include "model/transformer.hpp"
#include "plugins/host_services.hpp"
#include "plugins/registry.hpp"
#include "text/text_model.hpp"

namespace parley {

struct Runtime {
  Runtime(int threads, parley_log_fn fn, void *user, parley_log_severity min)
      : host(threads, fn, user, min), registry(host) {}
  HostServices host;
  Registry registry;  // declared after host: destroyed first
};

struct Model {
  std::shared_ptr<Runtime> runtime;
  std::unique_ptr<ModelFile> file;
  std::string device;

  // The Transformer bound to the file's weights, built on first use so that
  // loading stays a pure file check (and container-only files stay
  // inspectable). Thread-safe; a binding error is kept and re-reported.
  const Transformer &transformer() const;
  // Tokenizers and chat format, built on first use the same way.
  const TextModel &text() const;

 private:
  mutable std::once_flag text_once_;
  mutable std::unique_ptr<TextModel> text_;
  mutable std::exception_ptr text_error_;
  mutable std::once_flag bind_once_;
  mutable std::unique_ptr<Transformer> transformer_;
  mutable std::exception_ptr bind_error_;
};

}  // namespace parley

struct parley_runtime {
  std::shared_ptr<parley::Runtime> impl;
};

struct parley_model {
  parley::Model impl;
};
