/* Tool use through the C API (issue 13, item 5), on the demo chat model
 * (whose file holds both the reduced chat format and its Jinja template):
 *  - with tools set to "[]" every turn is rendered by the Jinja template;
 *    it gives the same prompt tokens and greedy reply as the reduced format;
 *  - tool definitions, an assistant message with tool calls and a tool
 *    result are accepted, rendered by the template (prompt tokens equal the
 *    tokens of the text the template gives, written out here), and read
 *    back with parley_chat_tool_calls;
 *  - misuse: NULL handles and messages, wrong struct_size, unknown roles,
 *    malformed JSON, tool calls on a user message, saving a conversation
 *    with tool use: each fails with its documented status, nothing added.
 * Run through ctest (PARLEY_DEMO_MODELS, PARLEY_PLUGIN_BUILD_DIR). */
#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_checks.h"

#define CHECK_OK(call) CHECK_STATUS(call, PARLEY_OK)

static parley_model *load(parley_runtime *rt, const char *name) {
  char path[4096];
  parley_model *m = NULL;
  const char *dir = getenv("PARLEY_DEMO_MODELS");
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", name);
  if (parley_model_load_file(rt, path, NULL, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

static const char *kSystem = "You are the support assistant of a small web shop.";
static const char *kUser = "Where is my order 9019917?";
static const char *kTools =
    "[{\"type\": \"function\", \"function\": {\"name\": \"order_status\", \"description\": \"Look up an order\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"order_id\": {\"type\": \"string\"}}, "
    "\"required\": [\"order_id\"]}}}]";
static const char *kCalls =
    "[{\"id\": \"call00001\", \"type\": \"function\", \"function\": {\"name\": \"order_status\", "
    "\"arguments\": {\"order_id\": \"9019917\"}}}]";
static const char *kResult = "{\"status\": \"shipped\", \"eta\": \"2026-12-08\"}";

static parley_status reply(const parley_model *llm, parley_chat_session *s, char **out, uint64_t *prompt_tokens) {
  parley_chat_options o;
  parley_generation_options g;
  parley_chat_stats st;
  parley_status status;
  parley_chat_options_init(&o);
  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 12;
  g.do_sample = 0;
  o.generation = &g;
  status = parley_chat_generate(s, &o, out);
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  if (status == PARLEY_OK && parley_chat_stats_get(s, &st) == PARLEY_OK) *prompt_tokens = st.prompt_tokens;
  return status;
}

static parley_chat_message_ex message(int32_t role, const char *content) {
  parley_chat_message_ex m;
  memset(&m, 0, sizeof m);
  m.struct_size = sizeof m;
  m.role = role;
  m.content = content;
  m.content_length = content ? strlen(content) : 0;
  return m;
}

static void template_matches_reduction(const parley_model *llm) {
  parley_chat_session *a = NULL, *b = NULL;
  char *ra = NULL, *rb = NULL;
  uint64_t pa = 0, pb = 0;
  CHECK_OK(parley_chat_session_create(llm, kSystem, &a));
  CHECK_OK(parley_chat_session_create(llm, kSystem, &b));
  CHECK_OK(parley_chat_set_tools(b, "[]"));
  CHECK_OK(parley_chat_append(a, PARLEY_ROLE_USER, "  Hello, can I return shoes?  "));
  CHECK_OK(parley_chat_append(b, PARLEY_ROLE_USER, "  Hello, can I return shoes?  "));
  CHECK_OK(reply(llm, a, &ra, &pa));
  CHECK_OK(reply(llm, b, &rb, &pb));
  CHECK(pa > 10 && pa == pb);
  CHECK(ra && rb && strcmp(ra, rb) == 0);
  parley_string_free(ra);
  parley_string_free(rb);
  /* A second turn on top of the first reply. */
  CHECK_OK(parley_chat_append(a, PARLEY_ROLE_USER, "And <|eot_id|> sandals?"));
  CHECK_OK(parley_chat_append(b, PARLEY_ROLE_USER, "And <|eot_id|> sandals?"));
  CHECK_OK(reply(llm, a, &ra, &pa));
  CHECK_OK(reply(llm, b, &rb, &pb));
  CHECK(pa > 20 && pa == pb);
  CHECK(ra && rb && strcmp(ra, rb) == 0);
  parley_string_free(ra);
  parley_string_free(rb);
  parley_chat_session_free(a);
  parley_chat_session_free(b);
}

static void tool_turn(const parley_model *llm) {
  parley_chat_session *s = NULL;
  parley_chat_message_ex m;
  char *out = NULL, *data = NULL;
  size_t size = 0, n = 0, count = 0;
  uint64_t prompt = 0;
  const char *calls = NULL, *id = NULL, *name = NULL;
  int32_t ids[512];
  /* What Llama-3's template renders for this conversation (it prints every
   * role's content and ignores tools and tool_calls). */
  const char *expected =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are the support assistant of a small web "
      "shop.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhere is my order "
      "9019917?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|><|start_header_id|>tool<|end_"
      "header_id|>\n\n{\"status\": \"shipped\", \"eta\": "
      "\"2026-12-08\"}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

  CHECK_OK(parley_chat_session_create(llm, kSystem, &s));
  CHECK_OK(parley_chat_set_tools(s, kTools));
  CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, kUser));
  m = message(PARLEY_ROLE_ASSISTANT, "");
  m.tool_calls = kCalls;
  CHECK_OK(parley_chat_append_message(s, &m));
  m = message(PARLEY_ROLE_TOOL, kResult);
  m.tool_call_id = "call00001";
  m.name = "order_status";
  CHECK_OK(parley_chat_append_message(s, &m));
  CHECK_OK(parley_chat_message_count(s, &count));
  CHECK(count == 4);
  CHECK_OK(parley_chat_tool_calls(s, 2, &calls, &id, &name));
  CHECK(calls && strcmp(calls, kCalls) == 0 && id == NULL && name == NULL);
  CHECK_OK(parley_chat_tool_calls(s, 3, &calls, &id, &name));
  CHECK(calls == NULL && id && strcmp(id, "call00001") == 0 && name && strcmp(name, "order_status") == 0);
  CHECK_OK(parley_chat_tool_calls(s, 1, NULL, NULL, NULL));
  CHECK_STATUS(parley_chat_tool_calls(s, 4, &calls, &id, &name), PARLEY_ERROR_NOT_FOUND);

  CHECK_OK(reply(llm, s, &out, &prompt));
  parley_string_free(out);
  CHECK_OK(parley_tokenize(llm, expected, PARLEY_TOKENIZE_PARSE_SPECIAL, NULL, ids, 512, &n));
  CHECK(n > 30 && prompt == n);
  if (prompt != n) fprintf(stderr, "prompt tokens %llu, expected %zu\n", (unsigned long long)prompt, n);

  /* Saving does not store tool use: refused, not silently dropped. */
  CHECK_STATUS(parley_chat_session_save(s, &data, &size), PARLEY_ERROR_UNSUPPORTED);
  CHECK(data == NULL);

  /* Misuse: nothing is added. */
  CHECK_STATUS(parley_chat_append_message(NULL, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_append_message(s, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  m = message(PARLEY_ROLE_USER, "x");
  m.struct_size = 3;
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  m = message(9, "x");
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  m = message(PARLEY_ROLE_USER, "x");
  m.tool_calls = kCalls;
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  m = message(PARLEY_ROLE_ASSISTANT, "");
  m.tool_calls = "[{\"function\": {\"name\": \"f\"}";
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "invalid JSON") != NULL);
  m.tool_calls = "[{\"type\": \"function\"}]";
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  m.tool_calls = "";
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  m = message(PARLEY_ROLE_TOOL, "bad \xC0\xAF");
  CHECK_STATUS(parley_chat_append_message(s, &m), PARLEY_ERROR_INVALID_ARGUMENT);
  /* A system message only starts a conversation, after a tool result too. */
  CHECK_STATUS(parley_chat_append(s, PARLEY_ROLE_SYSTEM, "late"), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "a system message may only start the conversation") != NULL);
  CHECK_STATUS(parley_chat_set_tools(s, "{}"), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_set_tools(s, "[1]"), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_set_tools(NULL, kTools), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_tool_calls(NULL, 0, &calls, &id, &name), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_OK(parley_chat_message_count(s, &count));
  CHECK(count == 5);
  /* Tools off again: the role order of the reduced format no longer holds
   * (a tool message), so the template keeps rendering. */
  CHECK_OK(parley_chat_set_tools(s, NULL));
  CHECK_OK(parley_chat_append(s, PARLEY_ROLE_USER, "Thanks!"));
  CHECK_OK(reply(llm, s, &out, &prompt));
  parley_string_free(out);
  parley_chat_session_free(s);
}

int main(void) {
  parley_runtime *rt = make_runtime();
  parley_model *llm = load(rt, "support-llama.parley");
  template_matches_reduction(llm);
  tool_turn(llm);
  parley_model_free(llm);
  parley_runtime_free(rt);
  printf("test_chat_tools: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
