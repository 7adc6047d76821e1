// The objects behind the public handles. parley_runtime and parley_model are
// thin C structs holding these through shared_ptr, so a model keeps the
// plugins (and their code) it depends on alive even after parley_runtime_free.
#pragma once

#include <memory>
#include <string>

#include "format/model_file.hpp"
#include "plugins/host_services.hpp"
#include "plugins/registry.hpp"

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
};

}  // namespace parley

struct parley_runtime {
  std::shared_ptr<parley::Runtime> impl;
};

struct parley_model {
  parley::Model impl;
};
