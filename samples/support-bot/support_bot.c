/*
 * support-bot: a German-speaking customer-service bot built on libparley.
 *
 * A customer writes German; the de->en translation model turns it into
 * English; the dialogue model answers with the shop's policy in its system
 * prompt (streamed as it is generated); the en->de model translates the
 * answer back. One chat session carries the conversation, so each turn runs
 * the dialogue model only on the new tokens (its KV cache is kept).
 *
 *   support-bot [--models DIR] [--interactive] [--script FILE] [--quiet]
 *
 * Without --interactive it plays a scripted conversation (built in, or one
 * German line per turn from --script). Everything runs on the CPU plugin.
 */
#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LINE 4096
#define MAX_SENTENCES 32

static const char *const kScript[] = {
    "Hallo! Wo ist meine Bestellung 9019917?",
    "Wie kann ich meinen Saale-Monitor zurückschicken?",
    "Wann bekomme ich meine Erstattung über 107,49 €?",
    "Wie sind Ihre Öffnungszeiten?",
};

static int check(parley_status st, const char *what) {
  if (st == PARLEY_OK) return 0;
  fprintf(stderr, "support-bot: %s: %s (%s)\n", what, parley_last_error(), parley_status_name(st));
  return 1;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  long n;
  char *buf;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return NULL;
  }
  buf = (char *)malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  fclose(f);
  return buf;
}

/* Splits `text` into sentences (after . ! ? followed by a space) in place; the
 * translation models were trained on sentences. Returns their number. */
static size_t split_sentences(char *text, const char **out, size_t max) {
  size_t n = 0;
  char *p = text, *start = text;
  while (*start == ' ') ++start;
  for (; *p; ++p) {
    if ((*p == '.' || *p == '!' || *p == '?') && p[1] == ' ' && n + 1 < max) {
      p[1] = '\0';
      if (*start) out[n++] = start;
      start = p + 2;
      while (*start == ' ') ++start;
      p = start - 1;
    }
  }
  if (*start && n < max) out[n++] = start;
  return n;
}

/* Translates `text` sentence by sentence (one batch); prints and returns the
 * joined translation in `out`. */
static int translate(parley_model *model, const char *text, char *out, size_t out_size) {
  char buf[MAX_LINE];
  const char *sentences[MAX_SENTENCES];
  size_t n, i, used = 0;
  parley_translation_result *r = NULL;
  snprintf(buf, sizeof buf, "%s", text);
  n = split_sentences(buf, sentences, MAX_SENTENCES);
  out[0] = '\0';
  if (n == 0) return 0;
  if (check(parley_translate(model, sentences, n, NULL, &r), "translate")) return 1;
  for (i = 0; i < n; ++i) {
    const char *t = NULL;
    if (check(parley_translation_result_text(r, i, 0, &t, NULL), "translation result")) break;
    used += (size_t)snprintf(out + used, used < out_size ? out_size - used : 0, "%s%s", i ? " " : "", t);
  }
  parley_translation_result_free(r);
  return i == n ? 0 : 1;
}

static int32_t stream_english(void *user_data, const char *text, size_t length) {
  if (!*(int *)user_data) fwrite(text, 1, length, stdout);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  /* The models in this source tree (built in), unless --models says otherwise. */
#ifdef PARLEY_DEMO_MODELS_DIR
  const char *dir = PARLEY_DEMO_MODELS_DIR, *script = NULL;
#else
  const char *dir = "samples/support-bot/models", *script = NULL;
#endif
  int interactive = 0, quiet = 0, rc = 1, i;
  char path[1024], line[MAX_LINE], english[MAX_LINE], german[MAX_LINE * 2];
  char *policy = NULL, *script_text = NULL, *reply = NULL;
  parley_runtime *rt = NULL;
  parley_model *de_en = NULL, *en_de = NULL, *dialogue = NULL;
  parley_chat_session *chat = NULL;
  parley_chat_options options;
  parley_generation_options gen;
  size_t turn = 0;
  const char *stops[] = {"\nCustomer:", "\nUser:"};

  for (i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--models") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--script") && i + 1 < argc)
      script = argv[++i];
    else if (!strcmp(argv[i], "--interactive"))
      interactive = 1;
    else if (!strcmp(argv[i], "--quiet"))
      quiet = 1;
    else {
      fprintf(stderr, "usage: %s [--models DIR] [--interactive] [--script FILE] [--quiet]\n", argv[0]);
      return 2;
    }
  }

  if (check(parley_runtime_create(NULL, &rt), "creating the runtime")) return 1;
  snprintf(path, sizeof path, "%s/opus-mt-de-en.parley", dir);
  if (check(parley_model_load_file(rt, path, NULL, &de_en), path)) goto done;
  snprintf(path, sizeof path, "%s/opus-mt-en-de.parley", dir);
  if (check(parley_model_load_file(rt, path, NULL, &en_de), path)) goto done;
  snprintf(path, sizeof path, "%s/support-llama.parley", dir);
  if (check(parley_model_load_file(rt, path, NULL, &dialogue), path)) goto done;
  snprintf(path, sizeof path, "%s/policy.txt", dir);
  if (!(policy = read_file(path))) {
    fprintf(stderr, "support-bot: cannot read %s\n", path);
    goto done;
  }
  if (check(parley_chat_session_create(dialogue, policy, &chat), "creating the chat session")) goto done;

  parley_generation_options_init(dialogue, &gen);
  gen.max_new_tokens = 96;
  parley_chat_options_init(&options);
  options.generation = &gen;
  options.stop_strings = stops;
  options.num_stop_strings = 2;
  options.on_text = stream_english;
  options.user_data = &quiet;

  if (script && !(script_text = read_file(script))) {
    fprintf(stderr, "support-bot: cannot read --script %s\n", script);
    goto done;
  }
  printf("Nordwind Shop support bot (German <-> English translation, English dialogue model; CPU plugin).\n");
  if (interactive) printf("Schreiben Sie Ihre Frage auf Deutsch (Ctrl-D beendet).\n");
  for (;;) {
    parley_chat_stats stats;
    const char *customer = NULL;
    if (interactive) {
      printf("\nKunde> ");
      fflush(stdout);
      if (!fgets(line, sizeof line, stdin)) break;
      line[strcspn(line, "\r\n")] = '\0';
      if (!line[0]) continue;
      customer = line;
    } else if (script_text) {
      static char *cursor = NULL;
      char *nl;
      if (!cursor) cursor = script_text;
      while (*cursor == '\n' || *cursor == '\r') ++cursor;
      if (!*cursor) break;
      nl = strchr(cursor, '\n');
      if (nl) *nl = '\0';
      snprintf(line, sizeof line, "%s", cursor);
      line[strcspn(line, "\r")] = '\0';
      cursor = nl ? nl + 1 : cursor + strlen(cursor);
      customer = line;
      printf("\nKunde: %s\n", customer);
    } else {
      if (turn >= sizeof kScript / sizeof kScript[0]) break;
      customer = kScript[turn];
      printf("\nKunde: %s\n", customer);
    }
    ++turn;

    if (translate(de_en, customer, english, sizeof english)) goto done;
    if (!quiet) printf("  [de->en] %s\n  [assistant, en] ", english);
    if (check(parley_chat_append(chat, PARLEY_ROLE_USER, english), "adding the message")) goto done;
    if (check(parley_chat_generate(chat, &options, &reply), "generating the reply")) goto done;
    if (!quiet) printf("\n");
    if (translate(en_de, reply, german, sizeof german)) goto done;
    parley_string_free(reply);
    reply = NULL;
    printf("Bot: %s\n", german);
    stats.struct_size = sizeof stats;
    if (!quiet && parley_chat_stats_get(chat, &stats) == PARLEY_OK)
      printf("  [dialogue model: prompt %llu tokens, %llu reused from the KV cache, %llu processed, reply %llu]\n",
             (unsigned long long)stats.prompt_tokens, (unsigned long long)stats.reused_tokens,
             (unsigned long long)stats.processed_tokens, (unsigned long long)stats.generated_tokens);
  }
  rc = 0;
done:
  parley_string_free(reply);
  parley_chat_session_free(chat);
  parley_model_free(dialogue);
  parley_model_free(en_de);
  parley_model_free(de_en);
  parley_runtime_free(rt);
  free(policy);
  free(script_text);
  return rc;
}
