// Paths that are not regular files (issue 10 item 8): a FIFO, a device, a
// directory, or a symlink to one, given as a model path or found in a plugin
// folder. Each must be refused promptly with PARLEY_ERROR_IO naming the path
// and what it is; a blocking open() of a FIFO used to hang forever (model
// loading, and dlopen() inside parley_runtime_create).
//
// Every call runs under a watchdog so that a regression fails instead of
// hanging CI: when the call has not returned after kWatchdog, the test fails
// and the watchdog opens each FIFO once for writing, which releases a
// blocked reader's open() (it then reads end-of-file and fails).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <parley/parley.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "../common/build_tree_runtime.hpp"
#include "model_bytes.hpp"

namespace {

namespace fs = std::filesystem;
using parley::test::plugin_dir;

constexpr auto kWatchdog = std::chrono::seconds(10);

struct Outcome {
  parley_status status = PARLEY_OK;
  std::string message;
};

// Runs `body` (which returns a status; parley_last_error() is read on the
// same thread) under the watchdog described above.
template <typename F>
Outcome guarded(const std::vector<std::string> &fifos, F body) {
  auto future = std::async(std::launch::async, [&] {
    Outcome o;
    o.status = body();
    o.message = parley_last_error();
    return o;
  });
  if (future.wait_for(kWatchdog) == std::future_status::timeout) {
    ADD_FAILURE() << "the call blocked for more than " << kWatchdog.count() << " s (a blocking open of a FIFO?)";
    while (future.wait_for(std::chrono::milliseconds(100)) == std::future_status::timeout)
      for (const auto &f : fifos) {
        int fd = ::open(f.c_str(), O_RDWR | O_NONBLOCK);  // O_RDWR never blocks on Linux
        if (fd >= 0) ::close(fd);
      }
  }
  return future.get();
}

class SpecialFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/parley_special_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fifo_ = dir_ + "/model.parley";
    ASSERT_EQ(mkfifo(fifo_.c_str(), 0600), 0);
    fs::create_symlink(fifo_, dir_ + "/link_to_fifo.parley");
    fs::create_directory(dir_ + "/a_directory.parley");
    fs::create_directory_symlink(dir_ + "/a_directory.parley", dir_ + "/link_to_directory.parley");
  }
  void TearDown() override { fs::remove_all(dir_); }

  parley_runtime *cpu_runtime() {
    parley_runtime *rt = nullptr;
    EXPECT_EQ(parley::test::create_build_tree_runtime(1, &rt), PARLEY_OK) << parley_last_error();
    return rt;
  }

  void expect_model_refused(parley_runtime *rt, const std::string &path, const char *what) {
    parley_model *m = nullptr;
    Outcome o = guarded({fifo_}, [&] { return parley_model_load_file(rt, path.c_str(), nullptr, &m); });
    EXPECT_EQ(o.status, PARLEY_ERROR_IO) << path << ": " << o.message;
    EXPECT_EQ(m, nullptr);
    EXPECT_NE(o.message.find(path), std::string::npos) << "the message names the path: " << o.message;
    EXPECT_NE(o.message.find(what), std::string::npos) << "the message says what it is: " << o.message;
    parley_model_free(m);
  }

  std::string dir_, fifo_;
};

TEST_F(SpecialFiles, ModelPathThatIsNotARegularFileIsRefusedPromptly) {
  parley_runtime *rt = cpu_runtime();
  ASSERT_NE(rt, nullptr);
  expect_model_refused(rt, fifo_, "is a FIFO, not a regular file");
  expect_model_refused(rt, dir_ + "/link_to_fifo.parley", "is a FIFO, not a regular file");
  expect_model_refused(rt, "/dev/zero", "is a character device, not a regular file");
  expect_model_refused(rt, dir_ + "/a_directory.parley", "is a directory, not a regular file");
  expect_model_refused(rt, dir_ + "/link_to_directory.parley", "is a directory, not a regular file");
  parley_runtime_free(rt);
}

// A plugin folder holding a FIFO, a directory and a symlink to /dev/zero under
// plugin names: each is skipped with a warning naming it (as the registry
// treats every plugin it cannot load), the real plugins still load.
class SpecialPluginFiles : public SpecialFiles {
 protected:
  void SetUp() override {
    SpecialFiles::SetUp();
    plugins_ = dir_ + "/plugins";
    fs::create_directory(plugins_);
    plugin_fifo_ = plugins_ + "/libparley_x.so";
    ASSERT_EQ(mkfifo(plugin_fifo_.c_str(), 0600), 0);
    fs::create_directory(plugins_ + "/libparley_dir.so");
    fs::create_symlink("/dev/zero", plugins_ + "/libparley_zero.so");
  }

  // Creates a runtime searching `plugin_dirs` and/or PARLEY_PLUGIN_PATH,
  // collecting its log lines.
  Outcome create(std::vector<std::string> plugin_dirs, uint32_t sources, parley_runtime **rt) {
    std::vector<const char *> dirs;
    for (const auto &d : plugin_dirs) dirs.push_back(d.c_str());
    parley_runtime_options o;
    parley_runtime_options_init(&o);
    o.plugin_sources = sources;
    o.plugin_dirs = dirs.data();
    o.num_plugin_dirs = dirs.size();
    o.num_threads = 1;
    o.min_severity = PARLEY_SEVERITY_DEBUG;
    o.log_user_data = this;
    o.log_fn = [](void *user, parley_log_severity, const char *msg) {
      auto *self = static_cast<SpecialPluginFiles *>(user);
      std::lock_guard<std::mutex> lock(self->log_mutex_);
      self->log_.push_back(msg);
    };
    return guarded({plugin_fifo_}, [&] { return parley_runtime_create(&o, rt); });
  }

  void expect_skipped_and_cpu_loaded(parley_runtime *rt) {
    const std::pair<std::string, const char *> skipped[] = {
        {plugin_fifo_, "cannot load: a FIFO, not a regular file"},
        {plugins_ + "/libparley_dir.so", "cannot load: a directory, not a regular file"},
        {plugins_ + "/libparley_zero.so", "cannot load: a character device, not a regular file"}};
    std::lock_guard<std::mutex> lock(log_mutex_);
    for (const auto &[path, why] : skipped) {
      bool found = false;
      for (const auto &line : log_)
        found = found || (line.find("skipping plugin") != std::string::npos && line.find(path) != std::string::npos &&
                          line.find(why) != std::string::npos);
      EXPECT_TRUE(found) << "no warning naming " << path << " with '" << why << "'";
    }
    size_t n = 0;
    ASSERT_EQ(parley_runtime_plugin_count(rt, &n), PARLEY_OK);
    bool cpu = false;
    for (size_t i = 0; i < n; ++i) {
      parley_plugin_info p{};
      p.struct_size = sizeof p;
      ASSERT_EQ(parley_runtime_plugin_info(rt, i, &p), PARLEY_OK);
      cpu = cpu || std::string(p.name) == "cpu";
    }
    EXPECT_TRUE(cpu) << "the real plugins still load";
  }

  std::string plugins_, plugin_fifo_;
  std::mutex log_mutex_;
  std::vector<std::string> log_;
};

TEST_F(SpecialPluginFiles, PluginFolderEntriesAreSkippedPromptly) {
  parley_runtime *rt = nullptr;
  Outcome o = create({plugins_, plugin_dir()}, PARLEY_PLUGINS_NONE, &rt);
  ASSERT_EQ(o.status, PARLEY_OK) << o.message;
  expect_skipped_and_cpu_loaded(rt);
  parley_runtime_free(rt);
}

TEST_F(SpecialPluginFiles, PluginPathEnvironmentEntriesAreSkippedPromptly) {
  ASSERT_EQ(setenv("PARLEY_PLUGIN_PATH", (plugins_ + ":" + plugin_dir()).c_str(), 1), 0);
  parley_runtime *rt = nullptr;
  Outcome o = create({}, PARLEY_PLUGINS_ENV_PATH, &rt);
  setenv("PARLEY_PLUGIN_PATH", "", 1);
  ASSERT_EQ(o.status, PARLEY_OK) << o.message;
  expect_skipped_and_cpu_loaded(rt);
  parley_runtime_free(rt);
}

TEST_F(SpecialPluginFiles, ExplicitLoadIsRefusedPromptlyNamingTheFile) {
  parley_runtime *rt = nullptr;
  ASSERT_EQ(create({plugin_dir()}, PARLEY_PLUGINS_NONE, &rt).status, PARLEY_OK);
  size_t before = 0;
  parley_runtime_plugin_count(rt, &before);
  const std::pair<std::string, const char *> cases[] = {
      {plugin_fifo_, "a FIFO, not a regular file"},
      {dir_ + "/link_to_fifo.parley", "a FIFO, not a regular file"},
      {"/dev/zero", "a character device, not a regular file"},
      {plugins_ + "/libparley_zero.so", "a character device, not a regular file"},
      {plugins_ + "/libparley_dir.so", "a directory, not a regular file"}};
  for (const auto &[path, why] : cases) {
    Outcome o = guarded({plugin_fifo_, fifo_}, [&] { return parley_runtime_load_plugin(rt, path.c_str()); });
    EXPECT_EQ(o.status, PARLEY_ERROR_IO) << path << ": " << o.message;
    EXPECT_NE(o.message.find(path), std::string::npos) << o.message;
    EXPECT_NE(o.message.find(why), std::string::npos) << o.message;
  }
  size_t after = 0;
  parley_runtime_plugin_count(rt, &after);
  EXPECT_EQ(after, before) << "nothing was registered";
  parley_runtime_free(rt);
}

}  // namespace
