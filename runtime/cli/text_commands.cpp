#include "text_commands.hpp"

#include <parley/parley.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "../core/context_advice.hpp"
#include "../core/protect_names.hpp"
#include "input_file.hpp"
#include "json_lines.hpp"
#include "progress.hpp"
#ifdef PARLEY_HAVE_LIBEDIT
#include <editline/readline.h>  // libedit (BSD licence): line editing and history for `parley chat` on a terminal
#endif

namespace parley_cli {

namespace {

int fail(parley_status st, const char *what) {
  std::fprintf(stderr, "parley: %s failed: %s (%s)\n", what, parley_last_error(), parley_status_name(st));
  return 1;
}

parley_model *load(parley_runtime *rt, const std::string &path, int32_t kv_cache) {
  parley_model *m = nullptr;
  parley_model_options mo;
  parley_model_options_init(&mo);
  mo.kv_cache_dtype = kv_cache;
  parley_status st = parley_model_load_file(rt, path.c_str(), &mo, &m);
  if (st != PARLEY_OK) {
    fail(st, "loading the model");
    return nullptr;
  }
  return m;
}

// One input line: its bytes (NUL bytes included: the C API gets the real
// length and refuses a NUL, so such a line is reported, never cut short) and
// its 1-based number in the input.
struct Line {
  std::string text;
  size_t number;
};

// Reads the next line of `in` (without '\n', and without a '\r' before it);
// false at the end, and (with *failed set and a message) at a line over
// 64 MiB or a read error, where reading stops.
bool next_line(std::istream &in, std::string &line, size_t number, bool *failed) {
  switch (read_line(in, line)) {
    case LineRead::kLine:
      return true;
    case LineRead::kEnd:
      return false;
    case LineRead::kTooLong:
      std::fprintf(stderr, "parley: line %zu is longer than 64 MiB (the most a text may be); stopping there\n", number);
      break;
    case LineRead::kError:
      std::fprintf(stderr, "parley: reading line %zu failed: %s\n", number, std::strerror(errno));
      break;
  }
  *failed = true;
  return false;
}

// The progress bar of the running `parley translate`, if any: erased before
// a message goes to stderr.
Progress *g_progress = nullptr;

// Why a line failed, by its input line number (the library names only the
// text's index within one call; this maps it back).
void report_line(size_t number, parley_status st, const char *message) {
  if (g_progress) g_progress->clear();
  std::fprintf(stderr, "parley: line %zu: %s (%s)\n", number, message, parley_status_name(st));
}

// The translation options the command line asks for beyond the decoding ones.
struct Protection {
  uint32_t protect = 0;
  int32_t long_text = PARLEY_LONG_TEXT_SPLIT;
  std::vector<std::string> glossary;
  std::vector<const char *> pattern_ptrs, glossary_ptrs;
};

const char *placement_name(int32_t p) {
  return p == PARLEY_SPAN_COPIED ? "copied" : p == PARLEY_SPAN_ALIGNED ? "aligned" : "positioned";
}

// --show-protected: one stderr line per span of text `index`'s best hypothesis.
void show_protected(const parley_translation_result *r, size_t index, const char *unit, size_t number,
                    const std::string &source) {
  size_t n = 0;
  if (parley_translation_result_protected_count(r, index, 0, &n) != PARLEY_OK) return;
  const char *text = "";
  parley_translation_result_text(r, index, 0, &text, nullptr);
  std::fprintf(stderr, "parley: %s %zu: %zu protected span(s)\n", unit, number, n);
  for (size_t k = 0; k < n; ++k) {
    parley_protected_span sp;
    sp.struct_size = sizeof sp;
    if (parley_translation_result_protected_span(r, index, 0, k, &sp) != PARLEY_OK) continue;
    std::fprintf(stderr, "  %s \"%.*s\" source %zu+%zu -> target %zu (%s)\n", parley::protected_kind_name(sp.kind),
                 static_cast<int>(sp.source_length), source.c_str() + sp.source_offset, sp.source_offset,
                 sp.source_length, sp.target_offset, placement_name(sp.placement));
  }
  (void)text;
}

void apply_protection(parley_translation_options &o, const TranslateArgs &a, const Protection &p) {
  o.protect = p.protect;
  o.long_text = p.long_text;
  o.protect_patterns = p.pattern_ptrs.data();
  o.num_protect_patterns = p.pattern_ptrs.size();
  o.glossary = p.glossary_ptrs.data();
  o.num_glossary = p.glossary_ptrs.size();
  o.max_source_tokens = a.max_source_tokens;
  o.max_batch_tokens = a.max_batch_tokens;
}

// A best hypothesis that used up the token limit may be cut short: say so
// on stderr (the output stays one text per unit). Returns whether it was.
bool note_cut(const parley_translation_result *r, size_t index, const char *unit, size_t number) {
  int32_t cut = 0;
  if (parley_translation_result_cut_by_length(r, index, 0, &cut) != PARLEY_OK || !cut) return false;
  if (g_progress) g_progress->clear();
  std::fprintf(stderr, "parley: %s %zu: the translation used up its token limit (--max-length) and may be cut short\n",
               unit, number);
  return true;
}

// Translates one batch of lines. Output stays aligned with the input: every
// input line gives exactly `nbest` output lines, empty for an empty line and
// for a line that cannot be translated (reported on stderr as "line N:
// <reason>", *bad_lines counts them). Returns nonzero only when the whole
// call failed (bad options, unknown language, out of memory...).
int translate_batch(parley_model *m, const TranslateArgs &a, const Protection &p, const std::vector<Line> &lines,
                    size_t *bad_lines) {
  std::vector<const char *> texts;
  std::vector<size_t> lengths;
  for (const auto &l : lines)
    if (!l.text.empty()) {
      texts.push_back(l.text.data());
      lengths.push_back(l.text.size());
    }
  parley_translation_result *r = nullptr;
  if (!texts.empty()) {
    parley_generation_options g;
    parley_generation_options_init(m, &g);
    if (a.beam) g.num_beams = a.beam;
    g.num_return_sequences = a.nbest;
    if (g.num_beams < a.nbest) g.num_beams = a.nbest;
    if (a.max_length) g.max_new_tokens = a.max_length;
    if (a.length_penalty != 0.f) g.length_penalty = a.length_penalty;
    parley_translation_options o;
    parley_translation_options_init(&o);
    o.source_language = a.source_language.empty() ? nullptr : a.source_language.c_str();
    o.target_language = a.target_language.empty() ? nullptr : a.target_language.c_str();
    o.generation = &g;
    o.per_text_errors = 1;  // one bad line must not cost the others their translation
    apply_protection(o, a, p);
    parley_status st = parley_translate_n(m, texts.data(), lengths.data(), texts.size(), &o, &r);
    if (st != PARLEY_OK) return fail(st, "translate");
  }
  const bool with_scores = a.scores || a.nbest > 1;
  size_t next = 0;
  for (const auto &l : lines) {
    size_t n = 0;
    nlohmann::json j = {{"line", l.number}, {"hypotheses", nlohmann::json::array()}};
    if (!l.text.empty()) {
      int32_t status = PARLEY_OK;
      const char *message = "";
      parley_translation_result_error(r, next, &status, &message);
      if (status != PARLEY_OK) {
        report_line(l.number, static_cast<parley_status>(status), message);
        j["error"] = {{"status", parley_status_name(static_cast<parley_status>(status))}, {"message", message}};
        ++*bad_lines;
      } else {
        parley_translation_result_hypothesis_count(r, next, &n);
        if (a.show_protected) show_protected(r, next, "line", l.number, l.text);
        if (n > 0 && !a.json) note_cut(r, next, "line", l.number);
      }
      for (size_t h = 0; h < n && h < a.nbest; ++h) {
        const char *text = nullptr;
        float score = 0.f;
        parley_translation_result_text(r, next, h, &text, &score);
        int32_t cut = 0;
        parley_translation_result_cut_by_length(r, next, h, &cut);
        if (a.json)
          j["hypotheses"].push_back({{"text", text}, {"score", score}, {"cut_by_length", cut != 0}});
        else if (with_scores)
          std::printf("%.4f\t%s\n", static_cast<double>(score), text);
        else
          std::printf("%s\n", text);
      }
      ++next;
    }
    if (a.json)
      print_json_line(j);
    else
      for (size_t h = n; h < a.nbest; ++h) std::printf("\n");
  }
  std::fflush(stdout);
  parley_translation_result_free(r);
  return 0;
}

parley_chat_session *volatile g_session = nullptr;
void on_sigint(int) {
  if (g_session) parley_chat_cancel(g_session);  // async-safe: sets an atomic flag
}

int32_t print_delta(void *, const char *text, size_t length) {
  std::fwrite(text, 1, length, stdout);
  std::fflush(stdout);
  return 0;
}

}  // namespace

namespace {
// Paragraph / document units: each text is printed after the whitespace
// that preceded it in the input, and the input's trailing whitespace last.
int translate_units(parley_model *m, const TranslateArgs &a, const Protection &p, const std::string &all) {
  struct Unit {
    size_t begin, end;
  };
  std::vector<Unit> units;
  if (a.unit == "document") {
    units.push_back({0, all.size()});
  } else {  // paragraphs: separated by lines of only whitespace
    size_t start = 0, i = 0;
    while (i <= all.size()) {
      size_t eol = all.find('\n', i);
      if (eol == std::string::npos) eol = all.size();
      bool blank = all.find_first_not_of(" \t\r", i) >= eol;
      if (blank) {
        if (i > start) units.push_back({start, i});
        start = eol + 1;
      }
      i = eol + 1;
    }
    if (start < all.size()) units.push_back({start, all.size()});
  }
  // Trim each unit (the whitespace around it is printed as it was).
  std::vector<Unit> kept;
  for (Unit u : units) {
    while (u.begin < u.end && std::isspace(static_cast<unsigned char>(all[u.begin]))) ++u.begin;
    while (u.end > u.begin && std::isspace(static_cast<unsigned char>(all[u.end - 1]))) --u.end;
    if (u.end > u.begin) kept.push_back(u);
  }
  size_t at = 0, bad = 0;
  for (size_t first = 0; first < kept.size(); first += a.batch) {
    const size_t last = std::min(kept.size(), first + a.batch);
    std::vector<const char *> texts;
    std::vector<size_t> lengths;
    for (size_t k = first; k < last; ++k) {
      texts.push_back(all.data() + kept[k].begin);
      lengths.push_back(kept[k].end - kept[k].begin);
    }
    parley_generation_options g;
    parley_generation_options_init(m, &g);
    if (a.beam) g.num_beams = a.beam;
    if (a.max_length) g.max_new_tokens = a.max_length;
    if (a.length_penalty != 0.f) g.length_penalty = a.length_penalty;
    parley_translation_options o;
    parley_translation_options_init(&o);
    o.source_language = a.source_language.empty() ? nullptr : a.source_language.c_str();
    o.target_language = a.target_language.empty() ? nullptr : a.target_language.c_str();
    o.generation = &g;
    o.per_text_errors = 1;
    apply_protection(o, a, p);
    if (a.long_text == "split") o.long_text = PARLEY_LONG_TEXT_SPLIT_ALWAYS;  // units hold many sentences
    parley_translation_result *r = nullptr;
    parley_status st = parley_translate_n(m, texts.data(), lengths.data(), texts.size(), &o, &r);
    if (st != PARLEY_OK) return fail(st, "translate");
    for (size_t k = first; k < last; ++k) {
      // --json: one object per unit with its byte range in the input; else the
      // whitespace before the unit, as it was, then its translation.
      nlohmann::json j = {
          {a.unit, k + 1}, {"source_offset", kept[k].begin}, {"source_length", kept[k].end - kept[k].begin}};
      if (!a.json) std::fwrite(all.data() + at, 1, kept[k].begin - at, stdout);
      at = kept[k].end;
      int32_t status = PARLEY_OK;
      const char *message = "";
      parley_translation_result_error(r, k - first, &status, &message);
      if (status != PARLEY_OK) {
        if (g_progress) g_progress->clear();
        std::fprintf(stderr, "parley: %s %zu: %s (%s)\n", a.unit.c_str(), k + 1, message,
                     parley_status_name(static_cast<parley_status>(status)));
        if (a.json) {
          j["error"] = {{"status", parley_status_name(static_cast<parley_status>(status))}, {"message", message}};
          print_json_line(j);
        }
        ++bad;
        continue;
      }
      const char *text = "";
      parley_translation_result_text(r, k - first, 0, &text, nullptr);
      if (a.json) {
        int32_t cut = 0;
        parley_translation_result_cut_by_length(r, k - first, 0, &cut);
        j["text"] = text;
        j["cut_by_length"] = cut != 0;
        print_json_line(j);
      } else {
        std::fputs(text, stdout);
      }
      if (a.show_protected)
        show_protected(r, k - first, a.unit.c_str(), k + 1, all.substr(kept[k].begin, kept[k].end - kept[k].begin));
      if (!a.json) note_cut(r, k - first, a.unit.c_str(), k + 1);
    }
    parley_translation_result_free(r);
    if (g_progress) g_progress->update(last, kept[last - 1].end);
  }
  if (!a.json) std::fwrite(all.data() + at, 1, all.size() - at, stdout);
  std::fflush(stdout);
  if (bad) {
    if (g_progress) g_progress->clear();
    std::fprintf(stderr, "parley: %zu of %zu %s(s) could not be translated\n", bad, kept.size(), a.unit.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int translate(parley_runtime *rt, const TranslateArgs &a) {
  Protection p;
  {
    std::stringstream list(a.protect);
    std::string name;
    while (std::getline(list, name, ',')) {
      if (name.empty()) continue;
      if (name == "numbers")
        p.protect |= PARLEY_PROTECT_NUMBERS;
      else if (name == "emails")
        p.protect |= PARLEY_PROTECT_EMAILS;
      else if (name == "urls")
        p.protect |= PARLEY_PROTECT_URLS;
      else if (name == "placeholders")
        p.protect |= PARLEY_PROTECT_PLACEHOLDERS;
      else if (name == "markup")
        p.protect |= PARLEY_PROTECT_MARKUP;
      else if (name == "all")
        p.protect |= PARLEY_PROTECT_ALL;
      else {
        std::fprintf(stderr,
                     "parley: --protect: unknown class '%s' (numbers, emails, urls, placeholders, markup, all)\n",
                     name.c_str());
        return 2;
      }
    }
  }
  p.long_text = a.long_text == "error"       ? PARLEY_LONG_TEXT_ERROR
                : a.long_text == "sentences" ? PARLEY_LONG_TEXT_SPLIT_ALWAYS
                                             : PARLEY_LONG_TEXT_SPLIT;
  p.glossary = a.glossary;
  if (!a.glossary_file.empty()) {
    std::ifstream f;
    if (!open_input(a.glossary_file, "--glossary", f)) return 1;
    std::string term;
    bool failed = false;
    for (size_t number = 1; next_line(f, term, number, &failed); ++number) {
      if (term.find('\0') != std::string::npos) {  // the C API takes terms as C strings: it would be cut there
        std::fprintf(stderr, "parley: --glossary %s: line %zu holds a NUL byte\n", a.glossary_file.c_str(), number);
        return 2;
      }
      if (!term.empty()) p.glossary.push_back(term);
    }
    if (failed) return 1;
  }
  for (const auto &x : a.protect_patterns) p.pattern_ptrs.push_back(x.c_str());
  for (const auto &x : p.glossary) p.glossary_ptrs.push_back(x.c_str());
  if (a.unit != "line" && a.nbest > 1) {
    std::fprintf(stderr, "parley: --nbest needs --unit line\n");
    return 2;
  }
  if (a.beam && a.beam < a.nbest) {  // without --beam, the beams are raised to --nbest
    std::fprintf(stderr, "parley: --nbest %zu needs --beam %zu or more (got --beam %zu)\n", a.nbest, a.nbest, a.beam);
    return 2;
  }
  std::ifstream file;
  if (!a.input.empty() && !open_input(a.input, "--input", file)) return 1;
  if (a.input.empty() && !stdin_readable()) return 1;
  std::istream &in = a.input.empty() ? std::cin : file;
  parley_model *m = load(rt, a.model, a.kv_cache);
  if (!m) return 1;
  struct stat input_stat {};  // the input's size, when it is a file: the bar's percentage
  const bool sized_input =
      (a.input.empty() ? fstat(STDIN_FILENO, &input_stat) : stat(a.input.c_str(), &input_stat)) == 0 &&
      S_ISREG(input_stat.st_mode);
  Progress progress(sized_input ? static_cast<uint64_t>(input_stat.st_size) : 0, a.unit == "line"        ? "lines"
                                                                                 : a.unit == "paragraph" ? "paragraphs"
                                                                                                         : "documents");
  g_progress = &progress;
  struct Unset {
    ~Unset() { g_progress = nullptr; }
  } unset;
  int rc = 0;
  if (a.unit != "line") {
    std::string all;
    if (!read_all(in, all, "the input")) {
      rc = 1;
    } else {
      rc = translate_units(m, a, p, all);
    }
    parley_model_free(m);
    return rc;
  }
  std::vector<Line> lines;
  std::string text;
  size_t number = 0, bad = 0;
  uint64_t consumed = 0;
  bool read_failed = false;
  while (rc == 0 && next_line(in, text, number + 1, &read_failed)) {
    lines.push_back({text, ++number});
    consumed += text.size() + 1;
    if (lines.size() >= a.batch) {
      rc = translate_batch(m, a, p, lines, &bad);
      lines.clear();
      progress.update(number, consumed);
    }
  }
  if (rc == 0 && !lines.empty()) rc = translate_batch(m, a, p, lines, &bad);
  if (rc == 0 && read_failed) rc = 1;
  parley_model_free(m);
  progress.clear();
  if (rc == 0 && bad) {
    std::fprintf(stderr, "parley: %zu of %zu line(s) could not be translated (empty output lines)\n", bad, number);
    rc = 1;
  }
  return rc;
}

int chat(parley_runtime *rt, const ChatArgs &a) {
  if (!stdin_readable()) return 1;
  parley_model *m = load(rt, a.model, a.kv_cache);
  if (!m) return 1;
  std::string system = a.system;
  if (!a.system_file.empty()) {
    std::ifstream f;
    if (!open_input(a.system_file, "--system-file", f) || !read_all(f, system, "--system-file")) {
      parley_model_free(m);
      return 1;
    }
  }
  parley_chat_session *s = nullptr;
  bool has_system = !a.system.empty() || !a.system_file.empty();
  parley_status st = parley_chat_session_create_n(m, has_system ? system.data() : nullptr, system.size(), &s);
  if (st != PARLEY_OK) {
    parley_model_free(m);
    return fail(st, "creating the chat session");
  }
  g_session = s;
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, nullptr);

  parley_generation_options g;
  parley_generation_options_init(m, &g);
  if (a.max_tokens) g.max_new_tokens = a.max_tokens;
  if (a.sample) g.do_sample = 1;
  if (a.temperature > 0.f) g.temperature = a.temperature;
  if (a.top_p > 0.f) g.top_p = a.top_p;
  if (a.top_k) g.top_k = a.top_k;
  g.seed = a.seed;
  // Constrained replies: the grammar or schema text, read once.
  std::string constraint;
  for (const std::string *path : {&a.grammar_file, &a.json_schema_file}) {
    if (path->empty()) continue;
    const char *option = path == &a.grammar_file ? "--grammar-file" : "--json-schema-file";
    std::ifstream cf;
    if (!open_input(*path, option, cf) || !read_all(cf, constraint, option)) {
      parley_chat_session_free(s);
      parley_model_free(m);
      return 1;
    }
    if (path == &a.grammar_file)
      g.grammar = constraint.c_str();
    else
      g.json_schema = constraint.c_str();
  }
  std::vector<const char *> stops;
  for (const auto &x : a.stop) stops.push_back(x.c_str());
  parley_chat_options o;
  parley_chat_options_init(&o);
  o.context_policy = a.context == "drop-oldest" ? PARLEY_CHAT_CONTEXT_DROP_OLDEST : PARLEY_CHAT_CONTEXT_ERROR;
  o.generation = &g;
  o.stop_strings = stops.data();
  o.num_stop_strings = stops.size();
  o.on_text = a.json ? nullptr : print_delta;  // --json: the whole reply in one object

  // A person at a terminal gets a prompt, line editing and history (libedit);
  // piped input is read as it is and never echoed: stdout holds the replies only.
  const bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  if (tty) std::printf("Chatting with %s. /help lists the commands, Ctrl-D quits.\n", a.model.c_str());
  std::string line;
  size_t number = 0, bad = 0;
  int rc = 0;
  bool read_failed = false;
  auto read_input = [&]() -> bool {
#ifdef PARLEY_HAVE_LIBEDIT
    if (tty) {
      char *l = readline("> ");
      if (!l) return false;
      line = l;
      std::free(l);
      if (!line.empty()) add_history(line.c_str());
      return true;
    }
#endif
    if (tty) {
      std::printf("> ");
      std::fflush(stdout);
    }
    return next_line(std::cin, line, number + 1, &read_failed);
  };
  while (true) {
    if (!read_input()) break;
    ++number;
    if (line == "/help") {
      std::printf(
          "/reset  start the conversation over (the system prompt stays)\n"
          "/stats  the prompt and KV-cache counters of the last reply\n"
          "/help   this list\n"
          "Ctrl-C cancels a reply; Ctrl-D (end of input) quits.\n");
      std::fflush(stdout);
      continue;
    }
    if (line == "/reset") {
      parley_chat_reset(s);
      continue;
    }
    if (line == "/stats" || line.empty()) {
      if (line.empty()) {
        if (!tty && !a.json) std::printf("\n");  // piped: one output line per input line
        continue;
      }
      parley_chat_stats stats{};
      stats.struct_size = sizeof stats;
      parley_chat_stats_get(s, &stats);
      std::printf("prompt %llu tokens, %llu reused from the cache, %llu processed; reply %llu tokens; cache %llu\n",
                  static_cast<unsigned long long>(stats.prompt_tokens),
                  static_cast<unsigned long long>(stats.reused_tokens),
                  static_cast<unsigned long long>(stats.processed_tokens),
                  static_cast<unsigned long long>(stats.generated_tokens),
                  static_cast<unsigned long long>(stats.cached_tokens));
      continue;
    }
    // The message with its real length: a NUL or invalid UTF-8 is reported by
    // line number and skipped; the conversation goes on (exit status 1 at the end).
    st = parley_chat_append_n(s, PARLEY_ROLE_USER, line.data(), line.size());
    if (st != PARLEY_OK) {
      report_line(number, st, parley_last_error());
      if (a.json)
        print_json_line(
            {{"line", number}, {"error", {{"status", parley_status_name(st)}, {"message", parley_last_error()}}}});
      else if (!tty)
        std::printf("\n");  // one output line per input line, as for a reply that fails
      ++bad;
      continue;
    }
    char *reply = nullptr;
    st = parley_chat_generate(s, &o, a.json ? &reply : nullptr);
    if (a.json) {
      nlohmann::json j = {{"line", number}};
      if (st == PARLEY_OK) {
        j["reply"] = reply ? reply : "";
        parley_chat_stats cs{};
        cs.struct_size = sizeof cs;
        if (parley_chat_stats_get(s, &cs) == PARLEY_OK) {
          j["prompt_tokens"] = cs.prompt_tokens;
          j["reused_tokens"] = cs.reused_tokens;
          j["generated_tokens"] = cs.generated_tokens;
          if (g.grammar || g.json_schema) j["complete"] = cs.constraint_status != PARLEY_CONSTRAINT_INCOMPLETE;
        }
      } else {
        j["error"] = {{"status", parley_status_name(st)},
                      {"message", parley::with_context_option(parley_last_error(), "--context drop-oldest")}};
      }
      print_json_line(j);
      parley_string_free(reply);
    } else {
      std::printf("\n");
    }
    if (st == PARLEY_ERROR_CANCELLED) {
      if (!a.json) std::printf("[cancelled]\n");
      continue;
    }
    if (st == PARLEY_ERROR_INVALID_ARGUMENT) {
      // e.g. the conversation no longer fits the model: drop this message, say so, go on.
      report_line(number, st, parley::with_context_option(parley_last_error(), "--context drop-oldest").c_str());
      parley_chat_remove_last(s);
      ++bad;
      continue;
    }
    if (st != PARLEY_OK) {
      rc = fail(st, "generating the reply");
      break;
    }
    if (g.grammar || g.json_schema) {
      parley_chat_stats cs{};
      cs.struct_size = sizeof cs;
      if (parley_chat_stats_get(s, &cs) == PARLEY_OK && cs.constraint_status == PARLEY_CONSTRAINT_INCOMPLETE)
        std::fprintf(stderr,
                     "[incomplete: the reply stopped (--max-tokens or a stop string) before the %s was complete]\n",
                     g.grammar ? "grammar" : "JSON schema");
    }
    if (a.show_stats) {
      parley_chat_stats stats{};
      stats.struct_size = sizeof stats;
      parley_chat_stats_get(s, &stats);
      std::fprintf(stderr, "[prompt %llu tokens: %llu reused, %llu processed; reply %llu tokens]\n",
                   static_cast<unsigned long long>(stats.prompt_tokens),
                   static_cast<unsigned long long>(stats.reused_tokens),
                   static_cast<unsigned long long>(stats.processed_tokens),
                   static_cast<unsigned long long>(stats.generated_tokens));
    }
  }
  if (rc == 0 && (bad || read_failed)) rc = 1;
  g_session = nullptr;
  parley_chat_session_free(s);
  parley_model_free(m);
  return rc;
}

}  // namespace parley_cli
