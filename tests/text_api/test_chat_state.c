/* Long conversations and parked chats from C (issue 12, item 5), on the
 * demo chat model (1024 positions):
 *  - context policy ERROR: a conversation that outgrows the model fails the
 *    turn, names the policy that would drop turns, and leaves the
 *    conversation as it was;
 *  - DROP_OLDEST: the same conversation goes on; the oldest turns after the
 *    system prompt leave it (counted in parley_chat_stats), the system prompt
 *    and the newest message stay, and the role order stays user/assistant;
 *  - save / restore: the restored session holds the same messages, its next
 *    greedy reply equals the original session's, and the serving engine's
 *    prefix cache gives it the K/V of the saved conversation back; damaged
 *    data (every truncation, a flipped byte, bad magic) and misuse fail with
 *    a clear error and nothing is leaked;
 *  - save with K/V (parley_chat_session_save_kv): restored into a second
 *    instance of the model file (an engine whose cache is empty, as in
 *    another process), the next turn reuses the saved K/V and replies as the
 *    original session does; the text-only save, restored the same way,
 *    reuses nothing; damaged K/V data is refused.
 * Run through ctest (PARLEY_DEMO_MODELS, PARLEY_PLUGIN_BUILD_DIR). */
#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "c_checks.h"

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

static const char *kSystem = "You are the support assistant of a small web shop. Answer briefly.";

/* A user message of roughly 300 tokens, different per turn. */
static void long_message(char *buf, size_t size, int turn) {
  size_t n = 0;
  int i;
  buf[0] = 0;
  for (i = 0; i < 40 && n + 64 < size; ++i)
    n += (size_t)snprintf(buf + n, size - n, "Order %d-%d has not arrived yet. ", turn, i);
}

static parley_status turn(const parley_model *llm, parley_chat_session *s, int policy, int t, char **reply) {
  char msg[4096];
  parley_chat_options o;
  parley_generation_options g;
  parley_status st;
  long_message(msg, sizeof msg, t);
  st = parley_chat_append(s, PARLEY_ROLE_USER, msg);
  if (st != PARLEY_OK) return st;
  parley_chat_options_init(&o);
  o.context_policy = policy;
  parley_generation_options_init(llm, &g);
  g.max_new_tokens = 16;
  g.do_sample = 0;
  o.generation = &g;
  return parley_chat_generate(s, &o, reply);
}

static void context_policies(parley_model *llm) {
  parley_chat_session *s = NULL;
  parley_chat_stats st;
  size_t before = 0, n = 0, i;
  int t, failed_at = -1, dropped_seen = 0;
  char *reply = NULL;
  int32_t role;
  const char *content;

  /* ERROR: fails once the conversation outgrows the model; nothing changes. */
  CHECK_STATUS(parley_chat_session_create(llm, kSystem, &s), PARLEY_OK);
  for (t = 0; t < 12 && failed_at < 0; ++t) {
    parley_status r;
    CHECK_STATUS(parley_chat_message_count(s, &before), PARLEY_OK);
    r = turn(llm, s, PARLEY_CHAT_CONTEXT_ERROR, t, &reply);
    if (r == PARLEY_OK) {
      parley_string_free(reply);
      reply = NULL;
      continue;
    }
    failed_at = t;
    CHECK_STATUS(r, PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "DROP_OLDEST") != NULL);
    CHECK_STATUS(parley_chat_message_count(s, &n), PARLEY_OK);
    CHECK(n == before + 1); /* the user's message is there, no reply, nothing dropped */
  }
  CHECK(failed_at >= 2); /* a couple of turns fit in 1024 positions */
  printf("context ERROR: turn %d failed as it should\n", failed_at);
  parley_chat_session_free(s);

  /* DROP_OLDEST: the same turns all succeed. */
  CHECK_STATUS(parley_chat_session_create(llm, kSystem, &s), PARLEY_OK);
  for (t = 0; t < 12; ++t) {
    CHECK_STATUS(turn(llm, s, PARLEY_CHAT_CONTEXT_DROP_OLDEST, t, &reply), PARLEY_OK);
    parley_string_free(reply);
    reply = NULL;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_STATUS(parley_chat_stats_get(s, &st), PARLEY_OK);
    CHECK(st.prompt_tokens + 16 <= 1024);
    if (st.dropped_messages) ++dropped_seen;
    CHECK_STATUS(parley_chat_message_count(s, &n), PARLEY_OK);
    CHECK(n >= 3 && n % 2 == 1); /* system + (user, assistant) pairs */
    CHECK_STATUS(parley_chat_message(s, 0, &role, &content), PARLEY_OK);
    CHECK(role == PARLEY_ROLE_SYSTEM && strcmp(content, kSystem) == 0);
    for (i = 1; i < n; ++i) {
      CHECK_STATUS(parley_chat_message(s, i, &role, &content), PARLEY_OK);
      CHECK(role == (i % 2 ? PARLEY_ROLE_USER : PARLEY_ROLE_ASSISTANT));
    }
  }
  CHECK(dropped_seen > 0);
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_STATUS(parley_chat_stats_get(s, &st), PARLEY_OK);
  CHECK(st.total_dropped_messages >= 2 * (uint64_t)dropped_seen);
  CHECK(st.reused_tokens > 0); /* the system prompt's blocks at least */
  printf("context DROP_OLDEST: 12 turns, %llu messages dropped\n", (unsigned long long)st.total_dropped_messages);

  {
    parley_chat_options o;
    parley_chat_options_init(&o);
    o.context_policy = 7;
    CHECK_STATUS(parley_chat_append(s, PARLEY_ROLE_USER, "Hello?"), PARLEY_OK);
    CHECK_STATUS(parley_chat_generate(s, &o, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "context_policy") != NULL);
  }
  parley_chat_session_free(s);
}

/* A session with the system prompt, one greedy exchange and a second user
 * message; o / g: the greedy options of its turns (20 new tokens). */
/* A blob edited after its checksum (the last 8 bytes, XXH3-64 of the rest,
 * little-endian) was made, resealed: anyone can forge a saved chat, so the
 * checks past the checksum must hold on their own. */
static void reseal(char *data, size_t size) {
  unsigned long long h = (unsigned long long)XXH3_64bits(data, size - 8);
  size_t i;
  for (i = 0; i < 8; ++i) data[size - 8 + i] = (char)((h >> (8 * i)) & 0xff);
}

static parley_chat_session *two_turns(parley_model *llm, parley_chat_options *o, parley_generation_options *g) {
  parley_chat_session *s = NULL;
  CHECK_STATUS(parley_chat_session_create(llm, kSystem, &s), PARLEY_OK);
  CHECK_STATUS(parley_chat_append(s, PARLEY_ROLE_USER, "Hello, my parcel is late. Can you help me?"), PARLEY_OK);
  parley_chat_options_init(o);
  parley_generation_options_init(llm, g);
  g->max_new_tokens = 20;
  g->do_sample = 0;
  o->generation = g;
  CHECK_STATUS(parley_chat_generate(s, o, NULL), PARLEY_OK);
  CHECK_STATUS(parley_chat_append(s, PARLEY_ROLE_USER, "It is order 4711, sent on Monday."), PARLEY_OK);
  return s;
}

static void save_and_restore(parley_model *llm, parley_model *mt) {
  parley_chat_session *s = NULL, *r = NULL, *bad = NULL;
  char *data = NULL, *reply_a = NULL, *reply_b = NULL, *copy;
  size_t size = 0, n = 0, m = 0, i, cut;
  parley_chat_stats st;
  parley_chat_options o;
  parley_generation_options g;

  s = two_turns(llm, &o, &g);

  CHECK_STATUS(parley_chat_session_save(s, &data, &size), PARLEY_OK);
  CHECK(data != NULL && size > 32);
  CHECK_STATUS(parley_chat_session_restore(llm, data, size, &r), PARLEY_OK);
  CHECK_STATUS(parley_chat_message_count(s, &n), PARLEY_OK);
  CHECK_STATUS(parley_chat_message_count(r, &m), PARLEY_OK);
  CHECK(n == 4 && m == n);
  for (i = 0; i < n && i < m; ++i) {
    int32_t ra, rb;
    const char *ca, *cb;
    CHECK_STATUS(parley_chat_message(s, i, &ra, &ca), PARLEY_OK);
    CHECK_STATUS(parley_chat_message(r, i, &rb, &cb), PARLEY_OK);
    CHECK(ra == rb && strcmp(ca, cb) == 0);
  }
  /* The same next reply; the restored session reuses the parked K/V. */
  CHECK_STATUS(parley_chat_generate(s, &o, &reply_a), PARLEY_OK);
  CHECK_STATUS(parley_chat_generate(r, &o, &reply_b), PARLEY_OK);
  CHECK(reply_a && reply_b && strcmp(reply_a, reply_b) == 0);
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_STATUS(parley_chat_stats_get(r, &st), PARLEY_OK);
  CHECK(st.reused_tokens >= 16 && st.reused_tokens + st.processed_tokens == st.prompt_tokens);
  printf("restore: %llu of %llu prompt tokens reused\n", (unsigned long long)st.reused_tokens,
         (unsigned long long)st.prompt_tokens);
  parley_string_free(reply_a);
  parley_string_free(reply_b);

  /* Damaged data: every truncation, a flipped bit anywhere, bad magic. */
  copy = (char *)malloc(size);
  CHECK(copy != NULL);
  if (copy) {
    for (cut = 0; cut < size; ++cut) {
      bad = NULL;
      CHECK_STATUS(parley_chat_session_restore(llm, data, cut, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(bad == NULL);
    }
    for (i = 0; i < size; ++i) {
      memcpy(copy, data, size);
      copy[i] ^= 0x10;
      bad = NULL;
      CHECK_STATUS(parley_chat_session_restore(llm, copy, size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(bad == NULL);
    }
    memcpy(copy, data, size);
    copy[0] = 'X';
    CHECK_STATUS(parley_chat_session_restore(llm, copy, size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "magic") != NULL);
    memcpy(copy, data, size);
    copy[size - 1] ^= 1;
    CHECK_STATUS(parley_chat_session_restore(llm, copy, size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "checksum") != NULL);
    free(copy);
  }
  /* Misuse. */
  { /* A NUL byte inside a message (resealed): refused, naming the message. */
    const char *at = NULL;
    for (i = 0; i + 4 <= size && !at; ++i)
      if (memcmp(data + i, "4711", 4) == 0) at = data + i;
    CHECK(at != NULL);
    copy = (char *)malloc(size);
    CHECK(copy != NULL);
    if (copy && at) {
      memcpy(copy, data, size);
      copy[at - data] = '\0';
      reseal(copy, size);
      bad = NULL;
      CHECK_STATUS(parley_chat_session_restore(llm, copy, size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(bad == NULL && strstr(parley_last_error(), "NUL") != NULL);
    }
    free(copy);
  }
  CHECK_STATUS(parley_chat_session_restore(NULL, data, size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_restore(llm, NULL, size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_restore(llm, data, size, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_restore(mt, data, size, &bad), PARLEY_ERROR_UNSUPPORTED);
  CHECK_STATUS(parley_chat_session_save(NULL, &copy, &size), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_save(s, NULL, &size), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_save(s, &copy, NULL), PARLEY_ERROR_INVALID_ARGUMENT);

  /* A session without a system prompt round-trips too. */
  parley_string_free(data);
  data = NULL;
  parley_chat_session_free(r);
  r = NULL;
  parley_chat_session_free(s);
  CHECK_STATUS(parley_chat_session_create(llm, NULL, &s), PARLEY_OK);
  CHECK_STATUS(parley_chat_append(s, PARLEY_ROLE_USER, "Hi"), PARLEY_OK);
  CHECK_STATUS(parley_chat_session_save(s, &data, &size), PARLEY_OK);
  CHECK_STATUS(parley_chat_session_restore(llm, data, size, &r), PARLEY_OK);
  CHECK_STATUS(parley_chat_message_count(r, &m), PARLEY_OK);
  CHECK(m == 1);
  parley_string_free(data);
  parley_chat_session_free(r);
  parley_chat_session_free(s);
}

static uint64_t next_turn_reused(parley_chat_session *s, const parley_chat_options *o, char **reply) {
  parley_chat_stats st;
  CHECK_STATUS(parley_chat_generate(s, o, reply), PARLEY_OK);
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  CHECK_STATUS(parley_chat_stats_get(s, &st), PARLEY_OK);
  CHECK(st.reused_tokens + st.processed_tokens == st.prompt_tokens);
  return st.reused_tokens;
}

static void save_and_restore_kv(parley_runtime *rt, parley_model *llm) {
  parley_chat_session *s = NULL, *r = NULL, *t = NULL, *bad = NULL;
  parley_model *fresh_a = load(rt, "support-llama.parley"), *fresh_b = load(rt, "support-llama.parley");
  char *kv = NULL, *text = NULL, *reply_s = NULL, *reply_r = NULL, *reply_t = NULL, *copy;
  size_t kv_size = 0, text_size = 0, i;
  uint64_t reused_r, reused_t;
  parley_chat_options o;
  parley_generation_options g;

  s = two_turns(llm, &o, &g);
  CHECK_STATUS(parley_chat_session_save_kv(s, &kv, &kv_size), PARLEY_OK);
  CHECK_STATUS(parley_chat_session_save(s, &text, &text_size), PARLEY_OK);
  CHECK(kv != NULL && text != NULL && kv_size > text_size + 4096);
  printf("save_kv: %zu bytes (text only: %zu)\n", kv_size, text_size);

  /* Fresh engines: only the saved K/V can be reused. */
  CHECK_STATUS(parley_chat_session_restore(fresh_a, kv, kv_size, &r), PARLEY_OK);
  CHECK_STATUS(parley_chat_session_restore(fresh_b, text, text_size, &t), PARLEY_OK);
  reused_r = next_turn_reused(r, &o, &reply_r);
  reused_t = next_turn_reused(t, &o, &reply_t);
  CHECK_STATUS(parley_chat_generate(s, &o, &reply_s), PARLEY_OK);
  CHECK(reply_s && reply_r && reply_t && strcmp(reply_s, reply_r) == 0 && strcmp(reply_s, reply_t) == 0);
  CHECK(reused_r >= 32 && reused_t == 0);
  printf("restore with K/V into a fresh engine: %llu prompt tokens reused (text only: %llu)\n",
         (unsigned long long)reused_r, (unsigned long long)reused_t);

  /* K/V from a blob serve only the session restored from it: anyone can
   * forge K/V and recompute the checksum, so they must never answer another
   * session's prompt. The same conversation restored as text into the same
   * engine reuses none of them; the restored session's own save still
   * carries its K/V. */
  {
    parley_chat_session *t2 = NULL;
    char *reply_t2 = NULL, *kv2 = NULL;
    size_t kv2_size = 0;
    CHECK_STATUS(parley_chat_session_restore(fresh_a, text, text_size, &t2), PARLEY_OK);
    CHECK(next_turn_reused(t2, &o, &reply_t2) == 0);
    CHECK(reply_t2 && reply_s && strcmp(reply_t2, reply_s) == 0);
    CHECK_STATUS(parley_chat_session_save_kv(r, &kv2, &kv2_size), PARLEY_OK);
    CHECK(kv2 != NULL && kv2_size > text_size + 4096);
    parley_string_free(reply_t2);
    parley_string_free(kv2);
    parley_chat_session_free(t2);
  }

  /* Damaged K/V data: truncations across it and flipped bytes in it. */
  copy = (char *)malloc(kv_size);
  CHECK(copy != NULL);
  if (copy) {
    for (i = 1; i <= 64; ++i) {
      bad = NULL;
      CHECK_STATUS(parley_chat_session_restore(fresh_a, kv, kv_size * i / 65, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(bad == NULL);
      memcpy(copy, kv, kv_size);
      copy[text_size + (kv_size - text_size) * i / 66] ^= 0x01;
      CHECK_STATUS(parley_chat_session_restore(fresh_a, copy, kv_size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
      CHECK(bad == NULL);
    }
    free(copy);
  }
  /* Forged K/V holding a NaN (the last bytes of K/V data, before the
   * checksum: V, or V's scales for an I8 cache), resealed: refused by name,
   * nothing restored. */
  copy = (char *)malloc(kv_size);
  CHECK(copy != NULL);
  if (copy) {
    memcpy(copy, kv, kv_size);
    memset(copy + kv_size - 16, 0xff, 8);
    reseal(copy, kv_size);
    bad = NULL;
    CHECK_STATUS(parley_chat_session_restore(fresh_a, copy, kv_size, &bad), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(bad == NULL && strstr(parley_last_error(), "NaN") != NULL);
    /* The same blob resealed unchanged restores: the check is on the values. */
    memcpy(copy, kv, kv_size);
    reseal(copy, kv_size);
    CHECK_STATUS(parley_chat_session_restore(fresh_a, copy, kv_size, &bad), PARLEY_OK);
    parley_chat_session_free(bad);
    free(copy);
  }
  { /* Without the serving engine there are no K/V blocks to save. */
    parley_model_options mo;
    parley_model *plain = NULL;
    parley_chat_session *p = NULL;
    char path[4096];
    const char *dir = getenv("PARLEY_DEMO_MODELS");
    snprintf(path, sizeof path, "%s/support-llama.parley", dir ? dir : ".");
    parley_model_options_init(&mo);
    mo.serving_engine = 0;
    CHECK_STATUS(parley_model_load_file(rt, path, &mo, &plain), PARLEY_OK);
    CHECK_STATUS(parley_chat_session_create(plain, kSystem, &p), PARLEY_OK);
    copy = NULL;
    CHECK_STATUS(parley_chat_session_save_kv(p, &copy, &kv_size), PARLEY_ERROR_UNSUPPORTED);
    CHECK(copy == NULL && strstr(parley_last_error(), "serving engine") != NULL);
    /* ...and K/V data restores there as text (the K/V are skipped). */
    CHECK_STATUS(parley_chat_session_restore(plain, kv, kv_size, &bad), PARLEY_OK);
    parley_chat_session_free(bad);
    bad = NULL;
    parley_chat_session_free(p);
    parley_model_free(plain);
  }
  CHECK_STATUS(parley_chat_session_save_kv(NULL, &copy, &kv_size), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_save_kv(s, NULL, &kv_size), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK_STATUS(parley_chat_session_save_kv(s, &copy, NULL), PARLEY_ERROR_INVALID_ARGUMENT);

  parley_string_free(reply_s);
  parley_string_free(reply_r);
  parley_string_free(reply_t);
  parley_string_free(kv);
  parley_string_free(text);
  parley_chat_session_free(r);
  parley_chat_session_free(t);
  parley_chat_session_free(s);
  parley_model_free(fresh_a);
  parley_model_free(fresh_b);
}

int main(void) {
  parley_runtime *rt = make_runtime();
  parley_model *llm = load(rt, "support-llama.parley"), *mt = load(rt, "opus-mt-de-en.parley");
  context_policies(llm);
  save_and_restore(llm, mt);
  save_and_restore_kv(rt, llm);
  parley_model_free(llm);
  parley_model_free(mt);
  parley_runtime_free(rt);
  printf("test_chat_state: %d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
