// `parley convert`: runs the Python converter (parley_format, console script
// parley-convert) with the interpreter of the install this program belongs to.
// Its own file: the build tree's paths it is compiled with (runtime/cli/
// CMakeLists.txt) then touch no other source.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "text_commands.hpp"

namespace parley_cli {

namespace {

std::string shell_quote(const std::string &s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Can `python` import the converter? If not, *why is the last line it printed
// (e.g. "ModuleNotFoundError: No module named 'numpy'").
bool has_converter(const std::string &python, std::string *why) {
  std::string cmd = shell_quote(python) + " -c 'import parley_format.convert.cli' 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) {
    *why = std::strerror(errno);
    return false;
  }
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = pclose(p);
  if (status == 0) return true;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  size_t nl = out.rfind('\n');
  *why = out.empty() ? "it cannot be run" : out.substr(nl == std::string::npos ? 0 : nl + 1);
  return false;
}

std::string exe_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

std::string on_path(const char *name) {
  const char *path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

[[noreturn]] void exec_or_die(const std::string &program, std::vector<std::string> argv) {
  std::vector<char *> ptrs;
  for (auto &a : argv) ptrs.push_back(a.data());
  ptrs.push_back(nullptr);
  execv(program.c_str(), ptrs.data());
  std::fprintf(stderr, "parley: convert: running %s failed: %s\n", program.c_str(), std::strerror(errno));
  std::exit(1);
}

}  // namespace

int convert(const std::vector<std::string> &args) {
  // The converter is Python (parley_format; console script parley-convert).
  // The first of these runs it:
  //  1. $PARLEY_PYTHON -m parley_format.convert (the `parley` command of the
  //     Python package sets it to its own interpreter);
  //  2. parley-convert beside this program (the same install or virtualenv);
  //  3. a build tree's program: the interpreter the build was configured with
  //     (else python3), with this source tree's formats/python on PYTHONPATH;
  //  4. parley-convert on PATH.
  // An interpreter is asked first whether it can import the converter, so a
  // missing package is one clear line, not a traceback.
  static const char kInstall[] =
      "install the converter: pip install 'parley-runtime[convert]' (or, in a source tree, pip install "
      "'formats/python[convert]'), or set PARLEY_PYTHON to a Python that has it";
  auto run_module = [&](const std::string &python) {
    std::vector<std::string> argv = {python, "-m", "parley_format.convert"};
    argv.insert(argv.end(), args.begin(), args.end());
    if (python.find('/') == std::string::npos) {  // a bare name: look it up on PATH, as a shell would
      std::string found = on_path(python.c_str());
      if (found.empty()) {
        std::fprintf(stderr, "parley: convert: %s is not on PATH; %s\n", python.c_str(), kInstall);
        std::exit(1);
      }
      exec_or_die(found, argv);
    }
    exec_or_die(python, argv);
  };
  std::string why;
#ifdef PARLEY_FORMATS_PYTHON_DIR
  bool in_source_tree = false;
  // A build tree's program: this source tree's converter comes first on PYTHONPATH.
  if (access(PARLEY_FORMATS_PYTHON_DIR "/parley_format", R_OK) == 0) {
    in_source_tree = true;
    std::string path = PARLEY_FORMATS_PYTHON_DIR;
    if (const char *old = std::getenv("PYTHONPATH"); old && *old) path += std::string(":") + old;
    setenv("PYTHONPATH", path.c_str(), 1);
  }
#endif
  if (const char *python = std::getenv("PARLEY_PYTHON"); python && *python) {
    if (!has_converter(python, &why)) {
      std::fprintf(stderr, "parley: convert: PARLEY_PYTHON=%s cannot import the converter (%s); %s\n", python,
                   why.c_str(), kInstall);
      return 1;
    }
    run_module(python);
  }
  const std::string dir = exe_dir();
  if (!dir.empty() && access((dir + "/parley-convert").c_str(), X_OK) == 0) {
    std::vector<std::string> argv = {dir + "/parley-convert"};
    argv.insert(argv.end(), args.begin(), args.end());
    exec_or_die(argv[0], argv);
  }
#ifdef PARLEY_FORMATS_PYTHON_DIR
  if (in_source_tree) {
#ifdef PARLEY_BUILD_PYTHON
    const std::string python = PARLEY_BUILD_PYTHON;
#else
    const std::string python = "python3";
#endif
    if (has_converter(python, &why)) run_module(python);
    std::fprintf(stderr, "parley: convert: %s cannot import the converter of this source tree (%s); %s\n",
                 python.c_str(), why.c_str(), kInstall);
    return 1;
  }
#endif
  if (std::string found = on_path("parley-convert"); !found.empty()) {
    std::vector<std::string> argv = {found};
    argv.insert(argv.end(), args.begin(), args.end());
    exec_or_die(found, argv);
  }
  std::fprintf(stderr,
               "parley: convert: no converter found (no PARLEY_PYTHON, no parley-convert beside %s or on PATH); %s\n",
               dir.empty() ? "this program" : dir.c_str(), kInstall);
  return 1;
}

}  // namespace parley_cli
