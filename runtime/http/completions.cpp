// POST /v1/completions: OpenAI's (legacy) text completions: a raw prompt,
// tokenized with the model's tokenizer (BOS added as the tokenizer does),
// continued by parley_generate_submit. Stop strings and streaming work on
// the detokenized text as tokens arrive (the on_token callback).
#include <httplib.h>

#include "api.hpp"
#include "endpoints.hpp"
#include "logprobs.hpp"

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

// One choice (batch item) of a completion.
struct CompletionChoice {
  std::vector<int32_t> tokens;
  std::string text;    // the detokenized output so far, cut at a stop string
  size_t emitted = 0;  // bytes of `text` streamed
  size_t safe = 0;     // bytes of `text` that can be streamed (no partial stop string or code point)
  bool stopped = false;
  TokenScores scores;  // with logprobs, once finished
};

struct CompletionJob {
  explicit CompletionJob(ServerState &s) : state(s), admission(s) {}
  ServerState &state;
  Admission admission;
  LoadedModel *model = nullptr;
  std::string id = new_id("cmpl"), model_name;
  int64_t created = unix_now();
  std::vector<std::string> stop;
  size_t prompt_tokens = 0, prompt_bytes = 0, max_new_tokens = 0;
  bool streaming = false, include_usage = false;
  std::optional<size_t> logprobs;  // `logprobs`: alternatives per token
  LogitBias logit_bias;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<CompletionChoice> choices;
  bool finished = false;
  std::unique_ptr<TrackedRequest> request;

  // Runs on the model's engine thread (parley_token_fn): detokenize, look for stop strings.
  static int32_t on_token(void *self, size_t batch_index, size_t, int32_t token) {
    auto *job = static_cast<CompletionJob *>(self);
    std::lock_guard<std::mutex> lock(job->mu);
    if (batch_index >= job->choices.size()) return 1;
    CompletionChoice &c = job->choices[batch_index];
    c.tokens.push_back(token);
    job->update(c);
    job->cv.notify_all();
    return c.stopped ? 1 : 0;
  }
  static void on_complete(void *self, parley_request *, int32_t) {
    auto *job = static_cast<CompletionJob *>(self);
    std::lock_guard<std::mutex> lock(job->mu);
    job->finished = true;
    job->cv.notify_all();
  }
  // (mu held)
  void update(CompletionChoice &c) {
    if (c.stopped) return;
    char *out = nullptr;
    if (parley_detokenize(model->model, c.tokens.data(), c.tokens.size(), 1, &out) != PARLEY_OK) return;
    std::string full = out ? out : "";
    parley_string_free(out);
    size_t cut = std::string::npos;
    for (const auto &s : stop) cut = std::min(cut, full.find(s));
    if (cut != std::string::npos) {
      full.resize(cut);
      c.stopped = true;
    }
    c.text = std::move(full);
    size_t ok = c.text.size();
    if (!c.stopped) {
      // An unfinished UTF-8 sequence decodes as U+FFFD at the end: hold it back.
      static const std::string kReplacement = "\xEF\xBF\xBD";
      if (ok >= 3 && c.text.compare(ok - 3, 3, kReplacement) == 0) ok -= 3;
      ok -= std::min(ok, held_back(c.text.substr(0, ok), stop));
    }
    // (Detokenizing a longer prefix may in rare cases rewrite the end of a
    // shorter one; what was streamed is not taken back, the final
    // non-streamed text is exact.)
    c.safe = ok;
  }
  // (finished, mu held) Read each choice's log-probabilities from the result.
  void read_scores() {
    if (!logprobs) return;
    parley_generation_result *result = nullptr;
    if (parley_request_take_generation_result(request->get(), &result) != PARLEY_OK) return;
    for (size_t i = 0; i < choices.size(); ++i) {
      TokenScores &s = choices[i].scores;
      const int32_t *ids = nullptr;
      size_t count = 0;
      const float *lp = nullptr;
      if (parley_result_hypothesis(result, i, 0, &ids, &count, nullptr) == PARLEY_OK) s.tokens.assign(ids, ids + count);
      if (parley_result_hypothesis_logprobs(result, i, 0, &lp, &count) == PARLEY_OK) s.logprobs.assign(lp, lp + count);
      const int32_t *alt_ids = nullptr;
      const float *alt_lp = nullptr;
      size_t steps = 0, k = 0;
      if (*logprobs > 0 &&
          parley_result_hypothesis_alternatives(result, i, 0, &alt_ids, &alt_lp, &steps, &k) == PARLEY_OK) {
        s.k = k;
        s.alternative_ids.assign(alt_ids, alt_ids + steps * k);
        s.alternative_logprobs.assign(alt_lp, alt_lp + steps * k);
      }
    }
    parley_result_free(result);
  }
  // (finished, mu held) choices[i].logprobs: null unless asked for.
  json logprobs_of(size_t i) {
    if (!logprobs) return nullptr;
    TokenScores s = choices[i].scores;
    std::vector<size_t> offsets = trim_to_text(model->model, s, choices[i].text.size());
    return completion_logprobs(model->model, s, offsets, prompt_bytes, *logprobs);
  }
};

json choice_json(size_t index, const std::string &text, const json &logprobs, const json &finish) {
  return {{"index", index}, {"text", text}, {"logprobs", logprobs}, {"finish_reason", finish}};
}

json envelope(const CompletionJob &job, json choices) {
  return {{"id", job.id},
          {"object", "text_completion"},
          {"created", job.created},
          {"model", job.model_name},
          {"choices", std::move(choices)}};
}

std::string finish_reason(const CompletionJob &job, const CompletionChoice &c) {
  return !c.stopped && job.model->cut_by_length(job.prompt_tokens, c.tokens.size(), job.max_new_tokens) ? "length"
                                                                                                        : "stop";
}

size_t completion_tokens(const CompletionJob &job) {
  size_t n = 0;
  for (const auto &c : job.choices) n += c.tokens.size();
  return n;
}

// OpenAI counts the prompt once and the tokens of every choice.
json usage(const CompletionJob &job) {
  size_t completion = completion_tokens(job);
  return {{"prompt_tokens", job.prompt_tokens},
          {"completion_tokens", completion},
          {"total_tokens", job.prompt_tokens + completion}};
}

void account(CompletionJob &job) {
  size_t completion = completion_tokens(job);
  job.model->prompt_tokens += job.prompt_tokens;
  job.model->completion_tokens += completion;
  job.state.token_rate.add(completion);
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
  size_t n = read_n(body);
  if (auto b = opt_integer(body, "best_of", 1, INT64_MAX); b && static_cast<size_t>(*b) != n)
    bad_request("best_of: only best_of = n is supported (every sampled choice is returned)", "best_of",
                "unsupported_value");
  if (opt_bool(body, "echo").value_or(false)) bad_request("echo is not supported", "echo", "unsupported_value");
  if (opt_string(body, "suffix")) bad_request("suffix is not supported", "suffix", "unsupported_value");
  // Legacy completions: `logprobs` is the number of alternatives per token (0 = the chosen token's only).
  std::optional<int64_t> logprobs = opt_integer(body, "logprobs", 0, kMaxTopLogprobs);
  refuse_unsupported(body);
  Sampling sampling = read_sampling(body, state.limits);
  LogitBias logit_bias = read_logit_bias(body, model.vocab_size);

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
  job->choices.resize(n);
  job->prompt_bytes = prompt.size();
  if (logprobs) job->logprobs = static_cast<size_t>(*logprobs);
  job->logit_bias = std::move(logit_bias);
  job->streaming = opt_bool(body, "stream").value_or(false);
  job->include_usage = opt_include_usage(body);
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
  if (model.max_positions > 0 && ids.size() >= static_cast<uint64_t>(model.max_positions))
    bad_request("prompt: the prompt is " + std::to_string(ids.size()) + " tokens; the model has " +
                    std::to_string(model.max_positions) + " positions, and a completion needs at least one more",
                "prompt", "context_length_exceeded");
  job->prompt_tokens = ids.size();

  parley_generation_options g;
  parley_generation_options_init(model.model, &g);
  apply_sampling(sampling, 16, state.limits.max_tokens, g);  // OpenAI's default max_tokens is 16
  job->max_new_tokens = g.max_new_tokens;
  job->logit_bias.apply(g);
  if (job->logprobs) {
    g.return_logprobs = 1;
    g.num_alternatives = *job->logprobs;
  }
  g.on_token = CompletionJob::on_token;
  g.user_data = job.get();
  parley_request_options ro;
  parley_request_options_init(&ro);
  ro.deadline_ms = state.limits.request_timeout_ms;
  ro.on_complete = CompletionJob::on_complete;
  ro.user_data = job.get();
  // The n choices are the rows of one batch: the engine decodes them
  // together, and sampled rows draw from their own random streams.
  std::vector<const int32_t *> prompts(n, ids.data());
  std::vector<size_t> lengths(n, ids.size());
  parley_request *r = nullptr;
  st = parley_generate_submit(model.model, prompts.data(), lengths.data(), n, &g, &ro, &r);
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
    job->read_scores();
    json choices = json::array();
    for (size_t i = 0; i < job->choices.size(); ++i)
      choices.push_back(
          choice_json(i, job->choices[i].text, job->logprobs_of(i), finish_reason(*job, job->choices[i])));
    json out = envelope(*job, std::move(choices));
    out["usage"] = usage(*job);
    send_json(res, out);
    return;
  }
  {  // an early failure (prompt too long for the model, ...) is an HTTP error
    std::unique_lock<std::mutex> lock(job->mu);
    auto started = [&] {
      for (const auto &c : job->choices)
        if (!c.tokens.empty()) return true;
      return false;
    };
    job->cv.wait(lock, [&] { return job->finished || started(); });
    if (!started()) {
      lock.unlock();
      std::string message;
      int32_t st = job->request->wait(&message);
      if (st != PARLEY_OK) throw error_from_status(st, message);
    }
  }
  send_event_stream(req, res, [job](size_t, httplib::DataSink &sink) {
    // Choices stream interleaved, each chunk naming its index; the
    // log-probabilities of a choice come with its last chunk (they are read
    // from the finished request).
    for (;;) {
      std::vector<std::pair<size_t, std::string>> pieces;
      bool finished;
      {
        std::unique_lock<std::mutex> lock(job->mu);
        auto ready = [&] {
          for (const auto &c : job->choices)
            if (c.safe > c.emitted) return true;
          return false;
        };
        job->cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return job->finished || ready(); });
        finished = job->finished;
        if (!finished)
          for (size_t i = 0; i < job->choices.size(); ++i) {
            CompletionChoice &c = job->choices[i];
            if (c.safe > c.emitted) {
              pieces.emplace_back(i, c.text.substr(c.emitted, c.safe - c.emitted));
              c.emitted = c.safe;
            }
          }
      }
      for (const auto &[i, piece] : pieces)
        if (!write_event(sink, envelope(*job, json::array({choice_json(i, piece, nullptr, nullptr)})))) {
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
      job->read_scores();
      for (size_t i = 0; i < job->choices.size(); ++i) {
        const CompletionChoice &c = job->choices[i];
        std::string rest = c.text.size() > c.emitted ? c.text.substr(c.emitted) : "";
        write_event(sink,
                    envelope(*job, json::array({choice_json(i, rest, job->logprobs_of(i), finish_reason(*job, c))})));
      }
      if (job->include_usage) {
        json u = envelope(*job, json::array());
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
