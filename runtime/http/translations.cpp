// POST /v1/translations (Parley's own route; OpenAI has none for text):
//   {"model", "text": "..." | "texts": ["...", ...], "source_language", "target_language",
//    "beam_size", "n", "max_tokens", "protect": ["numbers", "emails", "urls", "placeholders",
//    "markup"] | "all", "protect_patterns": [...], "glossary": [...], "long_text": "split" |
//    "sentences" | "error"}
// -> {"object": "translation.list", "model", "data": [{"index", "text", "score", "finish_reason"
//    ("stop", or "length": max_tokens used up, the text may be cut short), "alternatives"?,
//    "protected"?} | {"index", "error"}], "usage"}
// One parley_translate_submit per request: concurrent requests of one model
// are batched by its serving engine as concurrent blocking calls are.
#include <httplib.h>

#include "../core/protect_names.hpp"
#include "api.hpp"
#include "endpoints.hpp"

namespace parley_http {
namespace {

struct ResultDeleter {
  void operator()(parley_translation_result *r) const { parley_translation_result_free(r); }
};

uint32_t protect_flag(const std::string &name) {
  static const std::pair<const char *, uint32_t> kClasses[] = {
      {"numbers", PARLEY_PROTECT_NUMBERS},           {"emails", PARLEY_PROTECT_EMAILS}, {"urls", PARLEY_PROTECT_URLS},
      {"placeholders", PARLEY_PROTECT_PLACEHOLDERS}, {"markup", PARLEY_PROTECT_MARKUP}, {"all", PARLEY_PROTECT_ALL}};
  for (const auto &c : kClasses)
    if (name == c.first) return c.second;
  bad_request("protect: unknown class '" + name + "' (numbers, emails, urls, placeholders, markup, all)", "protect",
              "unsupported_value");
}

std::vector<std::string> string_list(const json &body, const char *name, size_t max) {
  std::vector<std::string> out;
  const json *v = field(body, name);
  if (!v) return out;
  if (!v->is_array()) bad_request(std::string(name) + " must be an array of strings", name, "invalid_type");
  if (v->size() > max) bad_request(std::string(name) + " holds at most " + std::to_string(max) + " entries", name);
  for (const auto &s : *v) {
    if (!s.is_string()) bad_request(std::string(name) + " must be an array of strings", name, "invalid_type");
    out.push_back(s.get<std::string>());
  }
  return out;
}

}  // namespace

void handle_translations(ServerState &state, const httplib::Request &req, httplib::Response &res) {
  json body = parse_body(req);
  check_known_fields(body, {"model", "text", "texts", "source_language", "target_language", "beam_size", "n",
                            "max_tokens", "protect", "protect_patterns", "glossary", "long_text", "user"});
  auto model_name = opt_string(body, "model");
  if (!model_name) bad_request("model is required", "model", "missing_required_parameter");
  opt_string(body, "user");  // accepted and not used; a string, as in the other endpoints
  LoadedModel &model = state.find_model(*model_name);
  if (model.decoder_only)
    bad_request("the model '" + model.name + "' is not a translation model (use /v1/chat/completions)", "model",
                "model_not_supported");
  std::vector<std::string> texts;
  bool single = false;
  if (auto t = opt_string(body, "text")) {
    if (field(body, "texts")) bad_request("give text or texts, not both", "texts");
    texts.push_back(*t);
    single = true;
  } else {
    texts = string_list(body, "texts", state.limits.max_texts);
    if (texts.empty())
      bad_request("text (a string) or texts (a non-empty array) is required", "text", "missing_required_parameter");
  }
  auto source = opt_string(body, "source_language");
  auto target = opt_string(body, "target_language");
  auto beam = opt_integer(body, "beam_size", 1, 16);
  auto nbest = opt_integer(body, "n", 1, 16);
  auto max_tokens = opt_integer(body, "max_tokens", 1, static_cast<int64_t>(state.limits.max_tokens));
  uint32_t protect = 0;
  if (const json *p = field(body, "protect")) {
    if (p->is_string()) {
      protect = protect_flag(p->get<std::string>());
    } else if (p->is_array()) {
      for (const auto &c : *p) {
        if (!c.is_string()) bad_request("protect must be a class name or an array of them", "protect", "invalid_type");
        protect |= protect_flag(c.get<std::string>());
      }
    } else {
      bad_request("protect must be a class name or an array of them", "protect", "invalid_type");
    }
  }
  std::vector<std::string> patterns = string_list(body, "protect_patterns", 64);
  std::vector<std::string> glossary = string_list(body, "glossary", 10000);
  int32_t long_text = PARLEY_LONG_TEXT_SPLIT;
  if (auto lt = opt_string(body, "long_text")) {
    if (*lt == "split")
      long_text = PARLEY_LONG_TEXT_SPLIT;
    else if (*lt == "sentences")
      long_text = PARLEY_LONG_TEXT_SPLIT_ALWAYS;
    else if (*lt == "error")
      long_text = PARLEY_LONG_TEXT_ERROR;
    else
      bad_request("long_text must be split, sentences or error", "long_text", "unsupported_value");
  }

  Admission admission(state);
  model.requests++;
  parley_generation_options g;
  parley_generation_options_init(model.model, &g);
  if (beam) g.num_beams = static_cast<size_t>(*beam);
  if (nbest) {
    if (static_cast<size_t>(*nbest) > g.num_beams) bad_request("n must not exceed beam_size", "n");
    g.num_return_sequences = static_cast<size_t>(*nbest);
  } else {
    g.num_return_sequences = 1;
  }
  if (max_tokens) g.max_new_tokens = static_cast<size_t>(*max_tokens);
  g.max_new_tokens = std::min(g.max_new_tokens, state.limits.max_tokens);
  std::vector<const char *> pattern_ptrs, glossary_ptrs, text_ptrs;
  std::vector<size_t> lengths;
  for (const auto &p : patterns) pattern_ptrs.push_back(p.c_str());
  for (const auto &t : glossary) glossary_ptrs.push_back(t.c_str());
  for (const auto &t : texts) {
    text_ptrs.push_back(t.data());
    lengths.push_back(t.size());
  }
  parley_translation_options o;
  parley_translation_options_init(&o);
  o.source_language = source ? source->c_str() : nullptr;
  o.target_language = target ? target->c_str() : nullptr;
  o.generation = &g;
  o.per_text_errors = single ? 0 : 1;  // one bad text of a batch does not fail the others
  o.protect = protect;
  o.protect_patterns = pattern_ptrs.data();
  o.num_protect_patterns = pattern_ptrs.size();
  o.glossary = glossary_ptrs.data();
  o.num_glossary = glossary_ptrs.size();
  o.long_text = long_text;
  parley_request_options ro;
  parley_request_options_init(&ro);
  ro.deadline_ms = state.limits.request_timeout_ms;
  parley_request *r = nullptr;
  int32_t st = parley_translate_submit(model.model, text_ptrs.data(), lengths.data(), texts.size(), &o, &ro, &r);
  if (st != PARLEY_OK) throw error_from_status(st, parley_last_error());
  TrackedRequest request(state, r);
  std::string message;
  st = request.wait(&message);
  if (st != PARLEY_OK) {
    ApiError e = error_from_status(st, message);
    // The text's own fault (empty, invalid, too long): the field is the text.
    if (single && e.param.empty() && message.find("text #0: ") != std::string::npos) e.param = "text";
    throw e;
  }
  parley_translation_result *raw = nullptr;
  st = parley_request_take_translation_result(r, &raw);
  if (st != PARLEY_OK) throw error_from_status(st, parley_last_error());
  std::unique_ptr<parley_translation_result, ResultDeleter> result(raw);

  json data = json::array();
  uint64_t source_tokens = 0, target_tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    json item = {{"index", i}};
    int32_t text_status = PARLEY_OK;
    const char *text_message = "";
    parley_translation_result_error(raw, i, &text_status, &text_message);
    if (text_status != PARLEY_OK) {
      ApiError e = error_from_status(text_status, text_message);
      if (e.param.empty()) e.param = "texts[" + std::to_string(i) + "]";
      item["error"] = error_json(e)["error"];
      data.push_back(item);
      continue;
    }
    const int32_t *ids = nullptr;
    size_t n = 0;
    if (parley_translation_result_source_tokens(raw, i, &ids, &n) == PARLEY_OK) source_tokens += n;
    size_t hyps = 0;
    parley_translation_result_hypothesis_count(raw, i, &hyps);
    json alternatives = json::array();
    for (size_t h = 0; h < hyps; ++h) {
      const char *text = nullptr;
      float score = 0.f;
      parley_translation_result_text(raw, i, h, &text, &score);
      if (parley_translation_result_target_tokens(raw, i, h, &ids, &n) == PARLEY_OK && h == 0) target_tokens += n;
      int32_t cut = 0;
      parley_translation_result_cut_by_length(raw, i, h, &cut);
      json hyp = {{"text", text ? text : ""}, {"score", score}, {"finish_reason", cut ? "length" : "stop"}};
      size_t spans = 0;
      parley_translation_result_protected_count(raw, i, h, &spans);
      if (spans > 0) {
        json prot = json::array();
        for (size_t s = 0; s < spans; ++s) {
          parley_protected_span span{};
          span.struct_size = sizeof span;
          if (parley_translation_result_protected_span(raw, i, h, s, &span) != PARLEY_OK) continue;
          static const char *kPlacement[] = {"copied", "aligned", "positioned"};
          prot.push_back({{"kind", parley::protected_kind_name(span.kind)},
                          {"placement", span.placement >= 0 && span.placement <= 2 ? kPlacement[span.placement] : "?"},
                          {"source_offset", span.source_offset},
                          {"source_length", span.source_length},
                          {"target_offset", span.target_offset},
                          {"target_length", span.target_length}});
        }
        hyp["protected"] = prot;
      }
      alternatives.push_back(hyp);
    }
    if (alternatives.empty()) alternatives.push_back({{"text", ""}, {"score", 0.0}, {"finish_reason", "stop"}});
    item.update(alternatives[0]);
    if (alternatives.size() > 1) item["alternatives"] = alternatives;
    data.push_back(item);
  }
  model.prompt_tokens += source_tokens;
  model.completion_tokens += target_tokens;
  state.token_rate.add(target_tokens);
  send_json(res, {{"object", "translation.list"},
                  {"model", model.name},
                  {"data", data},
                  {"usage",
                   {{"source_tokens", source_tokens},
                    {"target_tokens", target_tokens},
                    {"total_tokens", source_tokens + target_tokens}}}});
}

}  // namespace parley_http
