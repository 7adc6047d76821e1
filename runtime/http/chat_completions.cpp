// POST /v1/chat/completions: OpenAI's chat completions over a Parley chat
// session per request, submitted as an asynchronous request so that
// concurrent requests share the model's serving engine (batched decode
// steps, a common system prompt computed once through the prefix cache).
#include <httplib.h>

#include "api.hpp"
#include "endpoints.hpp"
#include "logprobs.hpp"
#include "text_stream.hpp"

namespace parley_http {
namespace {

struct SessionDeleter {
  void operator()(parley_chat_session *s) const { parley_chat_session_free(s); }
};
using SessionPtr = std::unique_ptr<parley_chat_session, SessionDeleter>;

[[noreturn]] void throw_status(int32_t status, const std::string &context) {
  ApiError e = error_from_status(status, context + parley_last_error());
  throw e;
}

// The text of a message's content: a string, null, or an array of text parts.
std::string content_text(const json &msg, const std::string &where) {
  const json *c = field(msg, "content");
  if (!c) return "";
  if (c->is_string()) return c->get<std::string>();
  if (c->is_array()) {
    std::string out;
    for (size_t i = 0; i < c->size(); ++i) {
      const json &part = (*c)[i];
      std::string p = where + ".content[" + std::to_string(i) + "]";
      if (!part.is_object()) bad_request(p + " must be an object", p, "invalid_type");
      auto type = opt_string(part, "type", p + ".");
      if (type != "text")
        bad_request(p + ": content parts of type '" + type.value_or("") + "' are not supported (only text)",
                    p + ".type", "unsupported_value");
      check_known_fields(part, {"type", "text"}, p + ".");  // as unknown keys of a message are refused
      auto text = opt_string(part, "text", p + ".");
      if (!text) bad_request(p + ".text is required", p + ".text", "missing_required_parameter");
      out += *text;
    }
    return out;
  }
  bad_request(where + ".content must be a string or an array of text parts", where + ".content", "invalid_type");
}

// OpenAI sends a tool call's arguments as a JSON string; chat templates
// (transformers' form) take the object.
std::string tool_calls_for_parley(const json &calls, const std::string &where) {
  if (!calls.is_array()) bad_request(where + ".tool_calls must be an array", where + ".tool_calls", "invalid_type");
  json out = json::array();
  for (size_t j = 0; j < calls.size(); ++j) {
    const json &c = calls[j];
    const std::string at = where + ".tool_calls[" + std::to_string(j) + "]";
    if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
      bad_request(at + " must be {\"type\": \"function\", \"function\": {...}}", at, "invalid_type");
    json call = c;
    json &args = call["function"]["arguments"];
    if (args.is_string()) {
      json parsed = json::parse(args.get<std::string>(), nullptr, false);
      if (!parsed.is_discarded() && nested_too_deep(parsed))  // a string holds any depth; copying recurses
        bad_request(at + ".function.arguments is nested deeper than 64 levels", at + ".function.arguments",
                    "invalid_value");
      if (!parsed.is_discarded()) args = std::move(parsed);
    }
    out.push_back(call);
  }
  return out.dump();
}

// Parley's tool calls (arguments as objects) -> OpenAI's (arguments as a string).
json tool_calls_for_openai(const char *parley_calls) {
  json calls = json::parse(parley_calls, nullptr, false);
  json out = json::array();
  if (!calls.is_array()) return out;
  for (const auto &c : calls) {
    json fn = c.value("function", json::object());
    json args = fn.value("arguments", json::object());
    out.push_back(
        {{"id", c.value("id", new_id("call"))},
         {"type", "function"},
         {"function",
          {{"name", fn.value("name", "")}, {"arguments", args.is_string() ? args.get<std::string>() : args.dump()}}}});
  }
  return out;
}

// One choice: its own session (a copy of the conversation) and request.
// Members are destroyed in reverse order: the request (cancelled and waited
// for) before the session and the stream its callbacks write to.
struct ChatChoice {
  TextStream stream;
  SessionPtr session;
  parley_generation_options gen{};
  parley_chat_options chat{};
  std::unique_ptr<TrackedRequest> request;
};

// Everything a chat request needs after validation; owned by a shared
// pointer so that a streaming response keeps it alive. The choices go
// before the admission slot.
struct ChatJob {
  explicit ChatJob(ServerState &s) : state(s), admission(s) {}
  ServerState &state;
  Admission admission;
  LoadedModel *model = nullptr;
  std::string id = new_id("chatcmpl"), model_name;
  int64_t created = unix_now();
  std::string json_schema;
  std::vector<std::string> stop;
  std::vector<const char *> stop_ptrs;
  LogitBias logit_bias;
  bool tools = false, streaming = false, include_usage = false;
  std::optional<size_t> top_logprobs;  // set when logprobs were asked for
  TextSignal signal;                   // any choice's stream has news
  std::vector<std::unique_ptr<ChatChoice>> choices;
};

struct Outcome {
  std::string content;
  json tool_calls;  // null when none
  std::string finish_reason;
  json logprobs;  // null unless asked for
  uint64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

// The reply of a finished choice that succeeded.
Outcome collect(ChatJob &job, ChatChoice &choice) {
  Outcome o;
  char *reply = nullptr;
  if (parley_request_take_reply(choice.request->get(), &reply) == PARLEY_OK && reply) {
    o.content = reply;
    parley_string_free(reply);
  }
  std::string reply_text = o.content;
  parley_chat_stats stats{};
  stats.struct_size = sizeof stats;
  parley_chat_stats_get(choice.session.get(), &stats);
  size_t count = 0;
  parley_chat_message_count(choice.session.get(), &count);
  const char *calls = nullptr;
  if (count > 0) parley_chat_tool_calls(choice.session.get(), count - 1, &calls, nullptr, nullptr);
  if (calls && job.tools) {
    o.tool_calls = tool_calls_for_openai(calls);
    // The message's content is the text outside the calls.
    int32_t role = 0;
    const char *text = nullptr;
    if (parley_chat_message(choice.session.get(), count - 1, &role, &text) == PARLEY_OK) o.content = text ? text : "";
  }
  if (!o.tool_calls.is_null() && !o.tool_calls.empty())
    o.finish_reason = "tool_calls";
  else if (job.model->cut_by_length(stats.prompt_tokens, stats.generated_tokens, choice.gen.max_new_tokens))
    o.finish_reason = "length";
  else
    o.finish_reason = "stop";
  if (job.top_logprobs) {
    TokenScores s;
    const int32_t *ids = nullptr;
    const float *lp = nullptr;
    size_t n = 0;
    if (parley_request_reply_tokens(choice.request->get(), &ids, &n) == PARLEY_OK) s.tokens.assign(ids, ids + n);
    if (parley_request_reply_logprobs(choice.request->get(), &lp, &n) == PARLEY_OK) s.logprobs.assign(lp, lp + n);
    const int32_t *alt_ids = nullptr;
    const float *alt_lp = nullptr;
    size_t steps = 0, k = 0;
    if (*job.top_logprobs > 0 &&
        parley_request_reply_alternatives(choice.request->get(), &alt_ids, &alt_lp, &steps, &k) == PARLEY_OK) {
      s.k = k;
      s.alternative_ids.assign(alt_ids, alt_ids + steps * k);
      s.alternative_logprobs.assign(alt_lp, alt_lp + steps * k);
    }
    // The tokens of the reply's text: not the EOS token, nor what a stop string cut.
    trim_to_text(job.model->model, s, reply_text.size());
    o.logprobs = chat_logprobs(job.model->model, s, *job.top_logprobs);
  }
  o.prompt_tokens = stats.prompt_tokens;
  o.completion_tokens = stats.generated_tokens;
  o.cached_tokens = stats.reused_tokens;
  // Counted as usage counts them: the prompt once (every choice has it), every choice's completion.
  if (!job.choices.empty() && job.choices.front().get() == &choice) job.model->prompt_tokens += stats.prompt_tokens;
  job.model->completion_tokens += stats.generated_tokens;
  job.state.token_rate.add(stats.generated_tokens);
  return o;
}

// OpenAI counts the prompt once and the tokens of every choice; the cached
// part is the first choice's (the others find its prompt in the cache).
json usage(const std::vector<Outcome> &outcomes) {
  uint64_t prompt = outcomes.empty() ? 0 : outcomes[0].prompt_tokens, completion = 0;
  for (const auto &o : outcomes) completion += o.completion_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", outcomes.empty() ? 0 : outcomes[0].cached_tokens}}}};
}

std::shared_ptr<ChatJob> prepare(ServerState &state, const json &body) {
  check_known_fields(body, {"model",
                            "messages",
                            "stream",
                            "stream_options",
                            "max_tokens",
                            "max_completion_tokens",
                            "temperature",
                            "top_p",
                            "seed",
                            "stop",
                            "n",
                            "response_format",
                            "tools",
                            "tool_choice",
                            "parallel_tool_calls",
                            "user",
                            "logprobs",
                            "top_logprobs",
                            "presence_penalty",
                            "frequency_penalty",
                            "logit_bias"});
  auto model_name = opt_string(body, "model");
  if (!model_name) bad_request("model is required", "model", "missing_required_parameter");
  LoadedModel &model = state.find_model(*model_name);
  if (!model.chat)
    bad_request("the model '" + model.name + "' is not a chat model" +
                    (model.decoder_only ? " (it has no chat template: use /v1/completions)"
                                        : " (a translation model: use /v1/translations)"),
                "model", "model_not_supported");
  refuse_unsupported(body);
  Sampling sampling = read_sampling(body, state.limits);
  size_t n = read_n(body);
  bool logprobs = opt_bool(body, "logprobs").value_or(false);
  std::optional<int64_t> top_logprobs = opt_integer(body, "top_logprobs", 0, kMaxTopLogprobs);
  if (top_logprobs && !logprobs) bad_request("top_logprobs needs logprobs: true", "top_logprobs", "invalid_value");
  LogitBias logit_bias = read_logit_bias(body, model.vocab_size);
  bool streaming = opt_bool(body, "stream").value_or(false);
  const bool include_usage = opt_include_usage(body);

  std::string schema;
  if (const json *rf = field(body, "response_format")) {
    if (!rf->is_object()) bad_request("response_format must be an object", "response_format", "invalid_type");
    check_known_fields(*rf, {"type", "json_schema"}, "response_format.");
    auto type = opt_string(*rf, "type", "response_format.");
    if (!type) bad_request("response_format.type is required", "response_format.type", "missing_required_parameter");
    if (*type == "json_object") {
      schema = R"({"type": "object"})";
    } else if (*type == "json_schema") {
      const json *js = field(*rf, "json_schema");
      if (!js || !js->is_object())
        bad_request("response_format.json_schema must be an object", "response_format.json_schema", "invalid_type");
      check_known_fields(*js, {"name", "description", "schema", "strict"}, "response_format.json_schema.");
      opt_string(*js, "name", "response_format.json_schema.");
      opt_string(*js, "description", "response_format.json_schema.");
      const json *sc = field(*js, "schema");
      if (!sc || !sc->is_object())
        bad_request("response_format.json_schema.schema must be a JSON schema object",
                    "response_format.json_schema.schema", "invalid_type");
      schema = sc->dump();
    } else if (*type != "text") {
      bad_request("response_format.type must be text, json_object or json_schema, not '" + *type + "'",
                  "response_format.type", "unsupported_value");
    }
  }

  json tools;
  if (const json *t = field(body, "tools")) {
    if (!t->is_array()) bad_request("tools must be an array", "tools", "invalid_type");
    // OpenAI's shape, checked here: the chat template would render a
    // malformed entry as it happens to (or not at all).
    for (size_t i = 0; i < t->size(); ++i) {
      const json &tool = (*t)[i];
      const std::string where = "tools[" + std::to_string(i) + "]";
      if (!tool.is_object()) bad_request(where + " must be an object", where, "invalid_type");
      check_known_fields(tool, {"type", "function"}, where + ".");
      const auto type = opt_string(tool, "type", where + ".");
      if (type != "function")
        bad_request(where + ".type must be \"function\"", where + ".type",
                    type ? "unsupported_value" : "missing_required_parameter");
      const json *fn = field(tool, "function");
      if (!fn) bad_request(where + ".function is required", where + ".function", "missing_required_parameter");
      if (!fn->is_object()) bad_request(where + ".function must be an object", where + ".function", "invalid_type");
      check_known_fields(*fn, {"name", "description", "parameters", "strict"}, where + ".function.");
      opt_string(*fn, "description", where + ".function.");
      if (const json *params = field(*fn, "parameters"); params && !params->is_object())
        bad_request(where + ".function.parameters must be a JSON schema object", where + ".function.parameters",
                    "invalid_type");
      const auto name = opt_string(*fn, "name", where + ".function.");
      if (!name || name->empty())
        bad_request(where + ".function.name is required", where + ".function.name", "missing_required_parameter");
    }
    if (!t->empty()) tools = *t;
  }
  opt_bool(body, "parallel_tool_calls");  // accepted (several calls per reply are parsed either way); a boolean
  if (const json *tc = field(body, "tool_choice")) {
    if (tc->is_string() && *tc == "none") {
      tools = json();  // the model is not told about the tools
    } else if (!(tc->is_string() && *tc == "auto")) {
      bad_request("tool_choice: only \"auto\" and \"none\" are supported (the model decides whether to call a tool)",
                  "tool_choice", "unsupported_value");
    }
  }

  const json *messages = field(body, "messages");
  if (!messages) bad_request("messages is required", "messages", "missing_required_parameter");
  if (!messages->is_array() || messages->empty())
    bad_request("messages must be a non-empty array", "messages", "invalid_type");
  if (messages->size() > state.limits.max_messages)
    bad_request("at most " + std::to_string(state.limits.max_messages) + " messages per request", "messages");

  struct Msg {
    int32_t role;
    std::string content, tool_calls, tool_call_id, name;
  };
  std::vector<Msg> msgs;
  std::string system;
  bool has_system = false;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json &m = (*messages)[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad_request(where + " must be an object", where, "invalid_type");
    check_known_fields(m, {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}, where + ".");
    auto role = opt_string(m, "role", where + ".");
    if (!role) bad_request(where + ".role is required", where + ".role", "missing_required_parameter");
    const auto name = opt_string(m, "name", where + ".");  // a participant's name on any role: a string
    if (const json *r = field(m, "refusal"); r && !r->is_string())
      bad_request(where + ".refusal must be a string", where + ".refusal", "invalid_type");
    if (*role != "assistant" && field(m, "tool_calls"))
      bad_request(where + ".tool_calls: only assistant messages carry tool calls", where + ".tool_calls");
    Msg msg;
    msg.content = content_text(m, where);
    if (*role == "system" || *role == "developer") {
      if (msgs.empty()) {  // leading system messages form the session's system prompt
        if (has_system) system += "\n\n";
        system += msg.content;
        has_system = true;
        continue;
      }
      msg.role = PARLEY_ROLE_SYSTEM;  // refused by the session: a system message after the start
    } else if (*role == "user") {
      msg.role = PARLEY_ROLE_USER;
    } else if (*role == "assistant") {
      msg.role = PARLEY_ROLE_ASSISTANT;
      if (const json *tcs = field(m, "tool_calls")) msg.tool_calls = tool_calls_for_parley(*tcs, where);
    } else if (*role == "tool") {
      msg.role = PARLEY_ROLE_TOOL;
      msg.tool_call_id = opt_string(m, "tool_call_id", where + ".").value_or("");
      msg.name = name.value_or("");
    } else {
      bad_request(where + ".role must be system, developer, user, assistant or tool, not '" + *role + "'",
                  where + ".role", "unsupported_value");
    }
    msgs.push_back(std::move(msg));
  }
  if (msgs.empty()) bad_request("messages holds only system messages: nothing to reply to", "messages");

  auto job = std::make_shared<ChatJob>(state);  // admission: 503 when overloaded or shutting down
  job->model = &model;
  job->model_name = model.name;
  job->streaming = streaming;
  job->include_usage = include_usage;
  job->json_schema = schema;
  job->logit_bias = std::move(logit_bias);
  if (logprobs) job->top_logprobs = static_cast<size_t>(top_logprobs.value_or(0));
  job->stop = sampling.stop;
  for (const auto &s : job->stop) job->stop_ptrs.push_back(s.c_str());
  model.requests++;

  // Each choice is a session of its own with the same conversation,
  // submitted as its own request: the engine decodes them together, and the
  // sessions after the first find the prompt in its prefix cache.
  for (size_t c = 0; c < n; ++c) {
    auto choice = std::make_unique<ChatChoice>();
    choice->stream.set_signal(&job->signal);
    parley_chat_session *session = nullptr;
    int32_t st =
        parley_chat_session_create_n(model.model, has_system ? system.data() : nullptr, system.size(), &session);
    if (st != PARLEY_OK) throw_status(st, "");
    choice->session.reset(session);
    if (!tools.is_null()) {
      st = parley_chat_set_tools(session, tools.dump().c_str());
      if (st != PARLEY_OK) throw_status(st, "tools: ");
      job->tools = true;
    }
    for (size_t i = 0; i < msgs.size(); ++i) {
      const Msg &m = msgs[i];
      parley_chat_message_ex ex{};
      ex.struct_size = sizeof ex;
      ex.role = m.role;
      ex.content = m.content.data();
      ex.content_length = m.content.size();
      ex.tool_calls = m.tool_calls.empty() ? nullptr : m.tool_calls.c_str();
      ex.tool_call_id = m.tool_call_id.empty() ? nullptr : m.tool_call_id.c_str();
      ex.name = m.name.empty() ? nullptr : m.name.c_str();
      st = parley_chat_append_message(session, &ex);
      if (st != PARLEY_OK) {
        ApiError e = error_from_status(st, "messages: " + std::string(parley_last_error()));
        e.param = "messages";
        throw e;
      }
    }

    parley_generation_options &gen = choice->gen;
    gen.struct_size = sizeof gen;
    parley_generation_options_init(model.model, &gen);
    apply_sampling(sampling, state.limits.max_tokens, state.limits.max_tokens, gen);
    gen.seed = choice_seed(gen.seed, c);
    if (!job->json_schema.empty()) gen.json_schema = job->json_schema.c_str();
    job->logit_bias.apply(gen);
    parley_chat_options_init(&choice->chat);
    if (state.limits.drop_oldest) choice->chat.context_policy = PARLEY_CHAT_CONTEXT_DROP_OLDEST;
    choice->chat.generation = &gen;
    choice->chat.stop_strings = job->stop_ptrs.data();
    choice->chat.num_stop_strings = job->stop_ptrs.size();
    if (streaming && !job->tools) {  // with tools the reply is parsed for calls at the end
      choice->chat.on_text = TextStream::on_text;
      choice->chat.user_data = &choice->stream;
      if (job->top_logprobs) choice->stream.collect_scores();
    }
    parley_request_options ro;
    parley_request_options_init(&ro);
    ro.deadline_ms = state.limits.request_timeout_ms;
    ro.on_complete = TextStream::on_complete;
    ro.user_data = &choice->stream;
    if (job->top_logprobs) {
      ro.return_logprobs = 1;
      ro.num_alternatives = *job->top_logprobs;
    }
    parley_request *r = nullptr;
    st = parley_chat_submit(session, &choice->chat, &ro, &r);
    if (st != PARLEY_OK) throw_status(st, "");
    choice->request = std::make_unique<TrackedRequest>(state, r);
    job->choices.push_back(std::move(choice));
  }
  return job;
}

json chunk(const ChatJob &job, size_t index, const json &delta, const json &finish_reason,
           const json &logprobs = nullptr) {
  json choice = {{"index", index}, {"delta", delta}};
  if (!logprobs.is_null()) choice["logprobs"] = logprobs;
  choice["finish_reason"] = finish_reason;
  json c = {{"id", job.id},
            {"object", "chat.completion.chunk"},
            {"created", job.created},
            {"model", job.model_name},
            {"choices", json::array({choice})}};
  if (job.include_usage) c["usage"] = nullptr;
  return c;
}

bool write_event(httplib::DataSink &sink, const json &j) {
  std::string s = "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  return sink.write(s.data(), s.size());
}

bool write_done(httplib::DataSink &sink) {
  static const char done[] = "data: [DONE]\n\n";
  bool ok = sink.write(done, sizeof done - 1);
  sink.done();
  return ok;
}

void stream_response(std::shared_ptr<ChatJob> job, const httplib::Request &req, httplib::Response &res) {
  send_event_stream(req, res, [job](size_t, httplib::DataSink &sink) {
    auto disconnected = [&] {
      for (auto &c : job->choices) parley_request_cancel(c->request->get());
      job->state.client_disconnects++;  // the client went away
      return false;
    };
    for (size_t i = 0; i < job->choices.size(); ++i)
      if (!write_event(sink, chunk(*job, i, {{"role", "assistant"}, {"content", ""}}, nullptr))) return disconnected();
    // The choices' text pieces, interleaved as they come, each naming its index.
    std::vector<bool> done(job->choices.size(), false);
    std::vector<size_t> sent_logprobs(job->choices.size(), 0);  // entries sent with text pieces
    for (size_t left = job->choices.size(); left > 0;) {
      uint64_t seen = job->signal.count();
      bool any = false;
      for (size_t i = 0; i < job->choices.size(); ++i) {
        if (done[i]) continue;
        std::string text;
        TokenScores scores;
        bool finished = job->choices[i]->stream.take(&text, 0, &scores);
        if (!text.empty()) {
          any = true;
          // The tokens this text completes, with their log-probabilities
          // (the rest come with the choice's last chunk).
          json logprobs = nullptr;
          if (job->top_logprobs && !job->tools) {
            logprobs = chat_logprobs(job->model->model, scores, *job->top_logprobs);
            sent_logprobs[i] += logprobs["content"].size();
          }
          if (!write_event(sink, chunk(*job, i, {{"content", text}}, nullptr, logprobs))) return disconnected();
        }
        if (finished) {
          done[i] = true;
          --left;
          any = true;
        }
      }
      if (!any) job->signal.wait_past(seen, 200);
    }
    std::vector<Outcome> outcomes;
    for (size_t i = 0; i < job->choices.size(); ++i) {
      ChatChoice &choice = *job->choices[i];
      std::string message;
      int32_t st = choice.request->wait(&message);
      if (st != PARLEY_OK) {
        write_event(sink, error_json(error_from_status(st, message)));
        return write_done(sink);
      }
      outcomes.push_back(collect(*job, choice));
    }
    for (size_t i = 0; i < outcomes.size(); ++i) {
      const Outcome &o = outcomes[i];
      if (job->tools) {  // held back until the calls were parsed
        if (!o.content.empty()) write_event(sink, chunk(*job, i, {{"content", o.content}}, nullptr));
        if (!o.tool_calls.is_null() && !o.tool_calls.empty()) {
          json calls = o.tool_calls;
          for (size_t j = 0; j < calls.size(); ++j) calls[j]["index"] = j;
          write_event(sink, chunk(*job, i, {{"tool_calls", calls}}, nullptr));
        }
      }
      // What the text pieces did not carry (the tokens of a last piece held
      // back, or all of them with tools) comes with the choice's last chunk.
      json rest = o.logprobs;
      if (rest.is_object() && rest.contains("content") && sent_logprobs[i] > 0) {
        json &content = rest["content"];
        const size_t skip = std::min(sent_logprobs[i], content.size());
        content.erase(content.begin(), content.begin() + static_cast<std::ptrdiff_t>(skip));
      }
      write_event(sink, chunk(*job, i, json::object(), o.finish_reason, rest));
    }
    if (job->include_usage) {
      json u = chunk(*job, 0, json::object(), nullptr);
      u["choices"] = json::array();
      u["usage"] = usage(outcomes);
      write_event(sink, u);
    }
    return write_done(sink);
  });
}

}  // namespace

void handle_chat_completions(ServerState &state, const httplib::Request &req, httplib::Response &res) {
  json body = parse_body(req);
  std::shared_ptr<ChatJob> job = prepare(state, body);
  if (job->streaming) {
    // Answer a turn that fails before its first piece (a conversation too
    // long, a schema the grammar compiler refuses) as an HTTP error.
    for (auto &choice : job->choices) {
      choice->stream.wait_started();
      if (!choice->stream.started() || job->tools) {
        std::string message;
        int32_t st = choice->request->wait(&message);
        if (st != PARLEY_OK) throw error_from_status(st, message);
      }
    }
    stream_response(std::move(job), req, res);
    return;
  }
  std::vector<Outcome> outcomes;
  for (auto &choice : job->choices) {
    std::string message;
    int32_t st = choice->request->wait(&message);
    if (st != PARLEY_OK) throw error_from_status(st, message);
    outcomes.push_back(collect(*job, *choice));
  }
  json choices = json::array();
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome &o = outcomes[i];
    json msg = {{"role", "assistant"}, {"content", o.content}};
    if (!o.tool_calls.is_null() && !o.tool_calls.empty()) {
      msg["tool_calls"] = o.tool_calls;
      if (o.content.empty()) msg["content"] = nullptr;
    }
    json choice = {{"index", i}, {"message", msg}, {"logprobs", o.logprobs}, {"finish_reason", o.finish_reason}};
    choices.push_back(std::move(choice));
  }
  send_json(res, {{"id", job->id},
                  {"object", "chat.completion"},
                  {"created", job->created},
                  {"model", job->model_name},
                  {"choices", choices},
                  {"usage", usage(outcomes)}});
}

}  // namespace parley_http
