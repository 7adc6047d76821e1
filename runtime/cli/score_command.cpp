// `parley score MODEL`: the model's log-probability of given targets
// (parley_score_text; docs/scores.md), one input line per item:
// "source<TAB>target" (translation models; for dialogue models the part
// before the tab is a prompt that is not scored) or "text" (dialogue
// models: the whole line, scored from its second token). Prints, per line,
// "sum<TAB>tokens" and with --per-token the log-probabilities after a
// second tab. A line that cannot be scored is reported on stderr by its
// number and leaves an empty output line; the exit status is then 1.
#include <parley/parley.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "input_file.hpp"
#include "json_lines.hpp"
#include "text_commands.hpp"

namespace parley_cli {

int score(parley_runtime *rt, const ScoreArgs &a) {
  parley_model *m = nullptr;
  parley_status st = parley_model_load_file(rt, a.model.c_str(), nullptr, &m);
  if (st != PARLEY_OK) {
    std::fprintf(stderr, "parley: loading the model failed: %s (%s)\n", parley_last_error(), parley_status_name(st));
    return 1;
  }
  std::ifstream file;
  if ((!a.input.empty() && !open_input(a.input, "--input", file)) || (a.input.empty() && !stdin_readable())) {
    parley_model_free(m);
    return 1;
  }
  std::istream &in = a.input.empty() ? std::cin : file;
  parley_score_options so;
  parley_score_options_init(&so);
  so.source_language = a.source_language.empty() ? nullptr : a.source_language.c_str();
  so.target_language = a.target_language.empty() ? nullptr : a.target_language.c_str();
  parley_model_info info{};
  info.struct_size = sizeof info;
  const bool needs_source = parley_model_get_info(m, &info) == PARLEY_OK && info.kind == PARLEY_MODEL_ENCODER_DECODER;
  int rc = 0;
  std::string line;
  LineRead got = LineRead::kEnd;
  for (size_t number = 1; (got = read_line(in, line)) == LineRead::kLine; ++number) {
    const size_t tab = line.find('\t');
    const std::string source = tab == std::string::npos ? std::string() : line.substr(0, tab);
    const std::string target = tab == std::string::npos ? line : line.substr(tab + 1);
    const char *src[1] = {source.c_str()}, *tgt[1] = {target.c_str()};
    parley_score_result *r = nullptr;
    // An error: on stderr by line, and an empty output line (a JSON object
    // with "error" under --json), so that output lines stay aligned.
    auto line_failed = [&](parley_status status, const std::string &message) {
      std::fprintf(stderr, "parley: line %zu: %s (%s)\n", number, message.c_str(), parley_status_name(status));
      if (a.json)
        print_json_line({{"line", number}, {"error", {{"status", parley_status_name(status)}, {"message", message}}}});
      else
        std::fputc('\n', stdout);
      rc = 1;
    };
    // A NUL byte would cut the C string short: refuse it here, by line.
    if (line.find('\0') != std::string::npos) {
      line_failed(PARLEY_ERROR_INVALID_ARGUMENT, "holds a NUL byte");
      continue;
    }
    if (needs_source && tab == std::string::npos) {
      line_failed(PARLEY_ERROR_INVALID_ARGUMENT,
                  line.empty() ? "is empty: a translation model scores lines \"source<TAB>target\""
                               : "has no TAB: a translation model scores lines \"source<TAB>target\"");
      continue;
    }
    st = parley_score_text(m, tab == std::string::npos ? nullptr : src, tgt, 1, &so, &r);
    if (st != PARLEY_OK) {
      line_failed(st, parley_last_error());
      continue;
    }
    const int32_t *ids = nullptr;
    const float *lp = nullptr;
    size_t n = 0;
    double sum = 0;
    parley_score_result_item(r, 0, &ids, &lp, &n, &sum);
    if (a.json) {
      nlohmann::json j = {{"line", number}, {"score", sum}, {"tokens", std::vector<int32_t>(ids, ids + n)}};
      if (a.per_token) j["logprobs"] = std::vector<float>(lp, lp + n);
      print_json_line(j);
      parley_score_result_free(r);
      continue;
    }
    std::printf("%.6f\t%zu", sum, n);
    if (a.per_token) {
      std::fputc('\t', stdout);
      for (size_t i = 0; i < n; ++i) std::printf(i ? " %.6f" : "%.6f", static_cast<double>(lp[i]));
    }
    std::fputc('\n', stdout);
    parley_score_result_free(r);
  }
  if (got == LineRead::kTooLong || got == LineRead::kError) {
    std::fprintf(stderr, "parley: the input's next line %s; stopping there\n",
                 got == LineRead::kTooLong ? "is longer than 64 MiB" : "could not be read");
    rc = 1;
  }
  std::fflush(stdout);
  parley_model_free(m);
  return rc;
}

}  // namespace parley_cli
