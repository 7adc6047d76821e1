// POST /v1/completions: OpenAI's (legacy) text completions: a raw prompt,
// tokenized with the model's tokenizer (BOS added as the tokenizer does),
// continued by parley_generate_submit. Stop strings and streaming work on
// the detokenized text as tokens arrive (the on_token callback).
#include <httplib.h>

#include "api.hpp"
#include "endpoints.hpp"

namespace parley_http {
namespace {

// Bytes at the end of `s` that may be the start of one of `stops`.
size_t held_back(const std::string &s, const std::vector<std::string> &stops) {
  size_t hold = 0;
  for (const auto &stop : stops)
    for (size_t k = std::min(stop.size() - 1, s.size()); k > hold; --k)
      if (s.compare(s.size() - k, k, stop, 0, k) == 0) {
        hold = k;
        break;
      }
  return hold;
}

struct CompletionJob {
  explicit CompletionJob(ServerState &s) : state(s), admission(s) {}
  ServerState &state;
  Admission admission;
  LoadedModel *model = nullptr;
  std::string id = new_id("cmpl"), model_name;
  int64_t created = unix_now();
  std::vector<std::string> stop;
  size_t prompt_tokens = 0, max_new_tokens = 0;
  bool streaming = false, include_usage = false;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::string text;    // the detokenized output so far, cut at a stop string
  size_t emitted = 0;  // bytes of `text` streamed
  size_t safe = 0;     // bytes of `text` that can be streamed (no partial stop string or code point)
  bool stopped = false, finished = false;
  std::unique_ptr<TrackedRequest> request;

  // Runs on the worker thread (parley_token_fn): detokenize, look for stop strings.
  static int32_t on_token(void *self, size_t, size_t, int32_t token) {
    auto *job = static_cast<CompletionJob *>(self);
    std::lock_guard<std::mutex> lock(job->mu);
    job->tokens.push_back(token);
    job->update();
    job->cv.notify_all();
    return job->stopped ? 1 : 0;
  }
  static void on_complete(void *self, parley_request *, int32_t) {
    auto *job = static_cast<CompletionJob *>(self);
    std::lock_guard<std::mutex> lock(job->mu);
    job->finished = true;
    job->cv.notify_all();
  }
  // (mu held)
  void update() {
    if (stopped) return;
    char *out = nullptr;
    if (parley_detokenize(model->model, tokens.data(), tokens.size(), 1, &out) != PARLEY_OK) return;
    std::string full = out ? out : "";
    parley_string_free(out);
    size_t cut = std::string::npos;
    for (const auto &s : stop) cut = std::min(cut, full.find(s));
    if (cut != std::string::npos) {
      full.resize(cut);
      stopped = true;
    }
    text = std::move(full);
    size_t ok = text.size();
    if (!stopped) {
      // An unfinished UTF-8 sequence decodes as U+FFFD at the end: hold it back.
      static const std::string kReplacement = "\xEF\xBF\xBD";
      if (ok >= 3 && text.compare(ok - 3, 3, kReplacement) == 0) ok -= 3;
      ok -= std::min(ok, held_back(text.substr(0, ok), stop));
    }
    // (Detokenizing a longer prefix may in rare cases rewrite the end of a
    // shorter one; what was streamed is not taken back, the final
    // non-streamed text is exact.)
    safe = ok;
  }
};

json choice_chunk(const CompletionJob &job, const std::string &text, const json &finish) {
  json c = {
      {"id", job.id},
      {"object", "text_completion"},
      {"created", job.created},
      {"model", job.model_name},
      {"choices", json::array({{{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish}}})}};
  return c;
}

std::string finish_reason(const CompletionJob &job) {
  return job.stopped || job.tokens.size() < job.max_new_tokens ? "stop" : "length";
}

json usage(const CompletionJob &job) {
  return {{"prompt_tokens", job.prompt_tokens},
          {"completion_tokens", job.tokens.size()},
          {"total_tokens", job.prompt_tokens + job.tokens.size()}};
}

void account(CompletionJob &job) {
  job.model->prompt_tokens += job.prompt_tokens;
  job.model->completion_tokens += job.tokens.size();
  job.state.token_rate.add(job.tokens.size());
}

std::shared_ptr<CompletionJob> prepare(ServerState &state, const json &body) {
  check_known_fields(
      body, {"model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "seed", "stop", "n",
             "best_of", "echo", "suffix", "user", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias"});
  auto model_name = opt_string(body, "model");
  if (!model_name) bad_request("model is required", "model", "missing_required_parameter");
  LoadedModel &model = state.find_model(*model_name);
  if (!model.decoder_only)
    bad_request("the model '" + model.name + "' is a translation model: use /v1/translations", "model",
                "model_not_supported");
  if (auto n = opt_integer(body, "n", 1, INT64_MAX); n && *n != 1)
    bad_request("n: only 1 choice per request is supported, not " + std::to_string(*n), "n", "unsupported_value");
  if (auto b = opt_integer(body, "best_of", 1, INT64_MAX); b && *b != 1)
    bad_request("best_of: only 1 is supported", "best_of", "unsupported_value");
  if (opt_bool(body, "echo").value_or(false)) bad_request("echo is not supported", "echo", "unsupported_value");
  if (opt_string(body, "suffix")) bad_request("suffix is not supported", "suffix", "unsupported_value");
  if (field(body, "logprobs"))
    bad_request("logprobs are not supported by this server", "logprobs", "unsupported_value");
  json rest = body;
  rest.erase("n");
  rest.erase("logprobs");
  refuse_unsupported(rest);
  Sampling sampling = read_sampling(body, state.limits);

  const json *p = field(body, "prompt");
  if (!p) bad_request("prompt is required", "prompt", "missing_required_parameter");
  std::string prompt;
  if (p->is_string()) {
    prompt = p->get<std::string>();
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    prompt = (*p)[0].get<std::string>();
  } else {
    bad_request("prompt must be a string (or an array of one string): batches and token arrays are not supported",
                "prompt", "unsupported_value");
  }
  if (prompt.empty()) bad_request("prompt must not be empty", "prompt");

  auto job = std::make_shared<CompletionJob>(state);
  job->model = &model;
  job->model_name = model.name;
  job->stop = sampling.stop;
  job->streaming = opt_bool(body, "stream").value_or(false);
  if (const json *so = field(body, "stream_options")) {
    if (!so->is_object()) bad_request("stream_options must be an object", "stream_options", "invalid_type");
    check_known_fields(*so, {"include_usage"}, "stream_options.");
    job->include_usage = opt_bool(*so, "include_usage").value_or(false);
  }
  model.requests++;

  size_t count = 0;
  int32_t st = parley_tokenize_n(model.model, prompt.data(), prompt.size(), PARLEY_TOKENIZE_ADD_SPECIAL, nullptr,
                                 nullptr, 0, &count);
  if (st != PARLEY_OK) throw error_from_status(st, std::string("prompt: ") + parley_last_error());
  std::vector<int32_t> ids(count);
  st = parley_tokenize_n(model.model, prompt.data(), prompt.size(), PARLEY_TOKENIZE_ADD_SPECIAL, nullptr, ids.data(),
                         ids.size(), &count);
  if (st != PARLEY_OK) throw error_from_status(st, std::string("prompt: ") + parley_last_error());
  if (ids.empty()) bad_request("prompt: the prompt has no tokens", "prompt");
  job->prompt_tokens = ids.size();

  parley_generation_options g;
  parley_generation_options_init(model.model, &g);
  apply_sampling(sampling, 16, state.limits.max_tokens, g);  // OpenAI's default max_tokens is 16
  job->max_new_tokens = g.max_new_tokens;
  g.on_token = CompletionJob::on_token;
  g.user_data = job.get();
  parley_request_options ro;
  parley_request_options_init(&ro);
  ro.deadline_ms = state.limits.request_timeout_ms;
  ro.on_complete = CompletionJob::on_complete;
  ro.user_data = job.get();
  const int32_t *prompts[1] = {ids.data()};
  size_t lengths[1] = {ids.size()};
  parley_request *r = nullptr;
  st = parley_generate_submit(model.model, prompts, lengths, 1, &g, &ro, &r);
  if (st != PARLEY_OK) throw error_from_status(st, parley_last_error());
  job->request = std::make_unique<TrackedRequest>(state, r);
  return job;
}

bool write_event(httplib::DataSink &sink, const json &j) {
  std::string s = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  return sink.write(s.data(), s.size());
}

}  // namespace

void handle_completions(ServerState &state, const httplib::Request &req, httplib::Response &res) {
  json body = parse_body(req);
  std::shared_ptr<CompletionJob> job = prepare(state, body);
  if (!job->streaming) {
    std::string message;
    int32_t st = job->request->wait(&message);
    if (st != PARLEY_OK) throw error_from_status(st, message);
    std::lock_guard<std::mutex> lock(job->mu);
    account(*job);
    json out = choice_chunk(*job, job->text, finish_reason(*job));
    out["usage"] = usage(*job);
    send_json(res, out);
    return;
  }
  {  // an early failure (prompt too long for the model, ...) is an HTTP error
    std::unique_lock<std::mutex> lock(job->mu);
    job->cv.wait(lock, [&] { return job->finished || !job->tokens.empty(); });
    if (job->tokens.empty()) {
      lock.unlock();
      std::string message;
      int32_t st = job->request->wait(&message);
      if (st != PARLEY_OK) throw error_from_status(st, message);
    }
  }
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [job](size_t, httplib::DataSink &sink) {
    for (;;) {
      std::string piece;
      bool finished;
      {
        std::unique_lock<std::mutex> lock(job->mu);
        job->cv.wait_for(lock, std::chrono::milliseconds(200),
                         [&] { return job->finished || job->safe > job->emitted; });
        finished = job->finished;
        if (!finished && job->safe > job->emitted) {
          piece = job->text.substr(job->emitted, job->safe - job->emitted);
          job->emitted = job->safe;
        }
      }
      if (!piece.empty() && !write_event(sink, choice_chunk(*job, piece, nullptr))) {
        parley_request_cancel(job->request->get());
        job->state.client_disconnects++;
        return false;
      }
      if (finished) break;
    }
    std::string message;
    int32_t st = job->request->wait(&message);
    if (st != PARLEY_OK) {
      write_event(sink, error_json(error_from_status(st, message)));
    } else {
      std::lock_guard<std::mutex> lock(job->mu);
      account(*job);
      std::string rest = job->text.size() > job->emitted ? job->text.substr(job->emitted) : "";
      write_event(sink, choice_chunk(*job, rest, finish_reason(*job)));
      if (job->include_usage) {
        json u = choice_chunk(*job, "", nullptr);
        u["choices"] = json::array();
        u["usage"] = usage(*job);
        write_event(sink, u);
      }
    }
    static const char done[] = "data: [DONE]\n\n";
    sink.write(done, sizeof done - 1);
    sink.done();
    return true;
  });
}

}  // namespace parley_http
