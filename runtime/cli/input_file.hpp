// Input files and lines of the text commands, read with a bound: the C API
// refuses a text over 64 MiB, so a line (or a whole input) past that is
// reported instead of being read into memory without end (/dev/zero, a
// 50 GB file with no newline).
#pragma once

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <istream>
#include <string>

namespace parley_cli {

inline constexpr size_t kMaxInputBytes = size_t{64} << 20;

// Opens `path` (given as `option`, e.g. "--input") for reading; prints why
// not, naming a folder as such (an ifstream opens one and reads nothing).
inline bool open_input(const std::string &path, const char *option, std::ifstream &f) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "parley: cannot read %s %s: it is a folder\n", option, path.c_str());
    return false;
  }
  f.open(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "parley: cannot read %s %s: %s\n", option, path.c_str(), std::strerror(errno));
    return false;
  }
  return true;
}

// Standard input as the input: a folder there (`< /tmp`) reads as nothing at
// all, which would pass for empty input; prints why not.
inline bool stdin_readable() {
  struct stat st {};
  if (fstat(0, &st) == 0 && S_ISDIR(st.st_mode)) {
    std::fprintf(stderr, "parley: cannot read standard input: it is a folder\n");
    return false;
  }
  return true;
}

enum class LineRead { kLine, kEnd, kTooLong, kError };

// The next line of `in`, without its '\n' and a '\r' before it (NUL bytes
// kept: the C API gets the real length and names them). kTooLong: the line
// passed kMaxInputBytes; the stream is left inside it.
inline LineRead read_line(std::istream &in, std::string &line) {
  line.clear();
  char buf[1 << 16];
  bool any = false;
  for (;;) {
    in.getline(buf, sizeof buf);
    const auto n = static_cast<size_t>(in.gcount());
    if (in.bad()) return LineRead::kError;
    if (in.eof()) {  // the input ended: no '\n' in what was read
      line.append(buf, n);
      if (!any && n == 0) return LineRead::kEnd;
      break;
    }
    if (!in.fail()) {  // the line ended: gcount counts the '\n'
      line.append(buf, n - 1);
      break;
    }
    line.append(buf, n);  // the buffer filled: the line goes on
    any = true;
    in.clear();
    if (line.size() > kMaxInputBytes) return LineRead::kTooLong;
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line.size() > kMaxInputBytes ? LineRead::kTooLong : LineRead::kLine;
}

// All of `in` into `out`; false (with a message) past kMaxInputBytes or on a read error.
inline bool read_all(std::istream &in, std::string &out, const char *what) {
  out.clear();
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<size_t>(in.gcount()));
    if (out.size() > kMaxInputBytes) {
      std::fprintf(stderr, "parley: %s is longer than 64 MiB\n", what);
      return false;
    }
  }
  if (in.bad()) {
    std::fprintf(stderr, "parley: reading %s failed\n", what);
    return false;
  }
  return true;
}

}  // namespace parley_cli
