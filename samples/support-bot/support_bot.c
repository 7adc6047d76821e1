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
 *
 * Strangers' text is untrusted, so one bad message never ends the session:
 *  - lines are read with their real length (never cut at a NUL byte or a
 *    buffer size); a line the models cannot take (a NUL byte, invalid UTF-8,
 *    a sentence longer than the translation model accepts, more than
 *    kMaxMessageBytes) gets an apology on stdout and "line N: reason" on
 *    stderr, and the conversation goes on;
 *  - when the conversation no longer leaves room for a reply in the dialogue
 *    model's positions, the oldest exchanges are dropped (the system prompt
 *    stays) and the customer is told so.
 * The exit status is 0 unless the bot itself fails (models, memory...).
 */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <parley/parley.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define MAX_SENTENCES 32
/* A customer message longer than this is refused before any model sees it. */
#define MAX_MESSAGE_BYTES 8192
/* Tokens the chat template adds around a message and before the reply (an upper bound for this model's). */
#define TEMPLATE_TOKENS 16

static const char *const kScript[] = {
    "Hallo! Wo ist meine Bestellung 9019917?",
    "Wie kann ich meinen Saale-Monitor zurückschicken?",
    "Wann bekomme ich meine Erstattung über 107,49 €?",
    "Wie sind Ihre Öffnungszeiten?",
};

static const char kSorryUnreadable[] =
    "Entschuldigung, diese Nachricht kann ich nicht verarbeiten. Bitte schreiben Sie Ihre Frage noch einmal, "
    "gern in kürzeren Sätzen.";
static const char kSorryNoAnswer[] = "Entschuldigung, darauf kann ich gerade nicht antworten.";
static const char kContextNotice[] =
    "(Hinweis: Unser Gespräch ist sehr lang geworden; die ältesten Nachrichten habe ich vergessen.)";

static int check(parley_status st, const char *what) {
  if (st == PARLEY_OK) return 0;
  fprintf(stderr, "support-bot: %s: %s (%s)\n", what, parley_last_error(), parley_status_name(st));
  return 1;
}

/* Why customer line `number` was not answered (stderr, for the operator). */
static void report_line(size_t number, parley_status st, const char *why) {
  fprintf(stderr, "support-bot: line %zu: %s (%s)\n", number, why, parley_status_name(st));
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

/* Prints `n` bytes of customer text; control bytes (NUL, escape sequences) as '?'. */
static void echo(const char *text, size_t n) {
  size_t i;
  for (i = 0; i < n; ++i) putchar((unsigned char)text[i] < 0x20 && text[i] != '\t' ? '?' : text[i]);
}

/* Splits the `n` bytes at `text` into sentences (after . ! ? followed by a
 * space; the translation models were trained on sentences): starts and
 * lengths, at most `max` (the rest stays in the last). Returns their number. */
static size_t split_sentences(const char *text, size_t n, const char **starts, size_t *lengths, size_t max) {
  size_t count = 0, i = 0, start;
  while (i < n && text[i] == ' ') ++i;
  start = i;
  for (; i < n; ++i) {
    if ((text[i] == '.' || text[i] == '!' || text[i] == '?') && i + 1 < n && text[i + 1] == ' ' && count + 1 < max) {
      starts[count] = text + start;
      lengths[count++] = i + 1 - start;
      start = i + 2;
      while (start < n && text[start] == ' ') ++start;
      i = start - 1;
    }
  }
  if (start < n && count < max) {
    starts[count] = text + start;
    lengths[count++] = n - start;
  }
  return count;
}

/* Translates the `n` bytes at `text` sentence by sentence (one batch) into a
 * new string *out (free it). When a sentence cannot be translated (its own
 * fault: NUL, invalid UTF-8, too long) returns 1 with *why_status and
 * *why_message set (message owned by a static buffer); a failure of the call
 * itself returns -1 (already reported). 0 on success. */
static int translate(parley_model *model, const char *text, size_t n, char **out, parley_status *why_status,
                     char *why_message, size_t why_size) {
  const char *sentences[MAX_SENTENCES];
  size_t lengths[MAX_SENTENCES], count, i, used = 0, total = 1;
  parley_translation_result *r = NULL;
  parley_translation_options o;
  int rc = 0;
  *out = NULL;
  count = split_sentences(text, n, sentences, lengths, MAX_SENTENCES);
  if (count == 0) {
    *out = (char *)calloc(1, 1);
    return *out ? 0 : -1;
  }
  parley_translation_options_init(&o);
  o.per_text_errors = 1; /* tells which sentence failed and why */
  /* Order numbers, amounts, dates, e-mail addresses and URLs come out
   * verbatim, exactly once: the model never sees them (docs/translation.md). */
  o.protect = PARLEY_PROTECT_NUMBERS | PARLEY_PROTECT_EMAILS | PARLEY_PROTECT_URLS;
  if (check(parley_translate_n(model, sentences, lengths, count, &o, &r), "translate")) return -1;
  for (i = 0; i < count && rc == 0; ++i) {
    int32_t status = PARLEY_OK;
    const char *message = "", *t = NULL;
    parley_translation_result_error(r, i, &status, &message);
    if (status != PARLEY_OK) {
      *why_status = (parley_status)status;
      snprintf(why_message, why_size, "sentence %zu: %s", i + 1, message);
      rc = 1;
    } else if (check(parley_translation_result_text(r, i, 0, &t, NULL), "translation result")) {
      rc = -1;
    } else {
      total += strlen(t) + 1;
    }
  }
  if (rc == 0 && !(*out = (char *)malloc(total))) rc = -1;
  for (i = 0; i < count && rc == 0; ++i) {
    const char *t = NULL;
    parley_translation_result_text(r, i, 0, &t, NULL);
    used += (size_t)snprintf(*out + used, total - used, "%s%s", i ? " " : "", t);
  }
  parley_translation_result_free(r);
  return rc;
}

/* Keeps the newest `keep` messages after the system prompt (starting at a
 * customer message, as the chat template wants) and drops the older ones by
 * rebuilding the session's conversation. Returns how many were dropped, or
 * -1 on failure (reported). The session's KV cache keeps the system prompt. */
static long drop_oldest(parley_chat_session *chat, size_t keep) {
  size_t count = 0, first, i, n;
  char **contents = NULL;
  int32_t *roles = NULL;
  long dropped = -1;
  if (check(parley_chat_message_count(chat, &count), "counting messages")) return -1;
  /* message 0 is the system prompt (the policy) */
  first = count - 1 > keep ? count - keep : 1;
  while (first < count) {
    int32_t role = -1;
    const char *c = NULL;
    if (parley_chat_message(chat, first, &role, &c) == PARLEY_OK && role == PARLEY_ROLE_USER) break;
    ++first;
  }
  n = count - first;
  contents = (char **)calloc(n ? n : 1, sizeof *contents);
  roles = (int32_t *)calloc(n ? n : 1, sizeof *roles);
  if (!contents || !roles) goto done;
  for (i = 0; i < n; ++i) {
    const char *c = NULL;
    if (check(parley_chat_message(chat, first + i, &roles[i], &c), "reading a message")) goto done;
    if (!(contents[i] = (char *)malloc(strlen(c) + 1))) goto done;
    memcpy(contents[i], c, strlen(c) + 1);
  }
  if (check(parley_chat_reset(chat), "resetting the conversation")) goto done;
  for (i = 0; i < n; ++i)
    if (check(parley_chat_append(chat, roles[i], contents[i]), "restoring a message")) goto done;
  dropped = (long)(first - 1);
done:
  for (i = 0; contents && i < n; ++i) free(contents[i]);
  free(contents);
  free(roles);
  return dropped;
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
  char path[1024], why[512];
  char *policy = NULL, *reply = NULL, *line = NULL, *english = NULL, *german = NULL;
  size_t line_cap = 0, line_number = 0;
  FILE *input = NULL;
  parley_runtime *rt = NULL;
  parley_model *de_en = NULL, *en_de = NULL, *dialogue = NULL;
  parley_chat_session *chat = NULL;
  parley_chat_options options;
  parley_generation_options gen;
  parley_status st;
  int64_t positions = 0;
  uint64_t used = 0;        /* tokens of the conversation after the last reply */
  size_t policy_tokens = 0; /* the system prompt's */
  char error[1024];
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
  if (check(parley_model_config_int(dialogue, "decoder.max_positions", &positions), "the dialogue model's positions"))
    goto done;
  snprintf(path, sizeof path, "%s/policy.txt", dir);
  if (!(policy = read_file(path))) {
    fprintf(stderr, "support-bot: cannot read %s\n", path);
    goto done;
  }
  if (check(parley_chat_session_create(dialogue, policy, &chat), "creating the chat session")) goto done;
  if (check(parley_tokenize(dialogue, policy, 0, NULL, NULL, 0, &policy_tokens), "tokenizing the policy")) goto done;

  parley_generation_options_init(dialogue, &gen);
  gen.max_new_tokens = 96;
  parley_chat_options_init(&options);
  options.generation = &gen;
  options.stop_strings = stops;
  options.num_stop_strings = 2;
  options.on_text = stream_english;
  options.user_data = &quiet;

  if (interactive)
    input = stdin;
  else if (script && !(input = fopen(script, "rb"))) {
    fprintf(stderr, "support-bot: cannot read --script %s\n", script);
    goto done;
  }
  printf("Nordwind Shop support bot (German <-> English translation, English dialogue model; CPU plugin).\n");
  if (interactive) printf("Schreiben Sie Ihre Frage auf Deutsch (Ctrl-D beendet).\n");
  for (;;) {
    parley_chat_stats stats;
    const char *customer = NULL;
    size_t length = 0;
    int t;
    memset(&stats, 0, sizeof stats);
    if (input) {
      ssize_t got;
      if (interactive) {
        printf("\nKunde> ");
        fflush(stdout);
      }
      if ((got = getline(&line, &line_cap, input)) < 0) break;
      ++line_number;
      length = (size_t)got;
      while (length && (line[length - 1] == '\n' || line[length - 1] == '\r')) --length;
      if (!length) continue;
      customer = line;
      if (!interactive) {
        printf("\nKunde: ");
        echo(customer, length);
        printf("\n");
      }
    } else {
      if (turn >= sizeof kScript / sizeof kScript[0]) break;
      customer = kScript[turn];
      length = strlen(customer);
      line_number = turn + 1;
      printf("\nKunde: %s\n", customer);
    }
    ++turn;
    free(english);
    free(german);
    english = german = NULL;

    /* The customer's message, in English. */
    if (length > MAX_MESSAGE_BYTES) {
      snprintf(why, sizeof why, "the message is %zu bytes, at most %d are accepted", length, MAX_MESSAGE_BYTES);
      report_line(line_number, PARLEY_ERROR_INVALID_ARGUMENT, why);
      printf("Bot: %s\n", kSorryUnreadable);
      continue;
    }
    t = translate(de_en, customer, length, &english, &st, why, sizeof why);
    if (t < 0) goto done;
    if (t > 0) {
      report_line(line_number, st, why);
      printf("Bot: %s\n", kSorryUnreadable);
      continue;
    }
    if (!quiet) printf("  [de->en] %s\n", english);

    /* Room for this message and a whole reply, or the oldest exchanges go. A
     * message that cannot fit even alone with the policy is refused. */
    if (positions > 0) {
      size_t tokens = 0;
      uint64_t need;
      if (check(parley_tokenize_n(dialogue, english, strlen(english), 0, NULL, NULL, 0, &tokens), "tokenize"))
        goto done;
      need = (uint64_t)tokens + TEMPLATE_TOKENS + (uint64_t)gen.max_new_tokens;
      if (need + policy_tokens > (uint64_t)positions) {
        snprintf(why, sizeof why,
                 "the message is %zu tokens in English; with the policy (%zu) and a reply (%d) it does not fit the "
                 "dialogue model's %lld positions",
                 tokens, policy_tokens, (int)gen.max_new_tokens, (long long)positions);
        report_line(line_number, PARLEY_ERROR_INVALID_ARGUMENT, why);
        printf("Bot: %s\n", kSorryUnreadable);
        continue;
      }
      if (used + need > (uint64_t)positions) {
        size_t count = 0;
        long dropped;
        parley_chat_message_count(chat, &count);
        dropped = drop_oldest(chat, (count - 1) / 2);
        if (dropped < 0) goto done;
        fprintf(stderr,
                "support-bot: line %zu: the conversation filled the dialogue model's %lld positions; dropped the %ld "
                "oldest message(s)\n",
                line_number, (long long)positions, dropped);
        printf("Bot: %s\n", kContextNotice);
      }
    }
    if ((st = parley_chat_append(chat, PARLEY_ROLE_USER, english)) != PARLEY_OK) {
      report_line(line_number, st, parley_last_error());
      printf("Bot: %s\n", kSorryUnreadable);
      continue;
    }
    if (!quiet) printf("  [assistant, en] ");
    st = parley_chat_generate(chat, &options, &reply);
    if (st == PARLEY_ERROR_INVALID_ARGUMENT) {
      /* Still too long (the estimate above was short): start over from this message alone. */
      long dropped;
      snprintf(error, sizeof error, "%s", parley_last_error());
      if ((dropped = drop_oldest(chat, 1)) < 0) goto done;
      if (dropped > 0) {
        fprintf(stderr, "support-bot: line %zu: %s; dropped the %ld older message(s)\n", line_number, error, dropped);
        printf("%sBot: %s\n", quiet ? "" : "\n", kContextNotice);
        if (!quiet) printf("  [assistant, en] ");
        st = parley_chat_generate(chat, &options, &reply);
        if (st == PARLEY_ERROR_INVALID_ARGUMENT) snprintf(error, sizeof error, "%s", parley_last_error());
      }
      if (st == PARLEY_ERROR_INVALID_ARGUMENT) {
        report_line(line_number, st, error);
        parley_chat_remove_last(chat); /* the message the model cannot take */
        printf("%sBot: %s\n", quiet ? "" : "\n", kSorryUnreadable);
        continue;
      }
    }
    if (check(st, "generating the reply")) goto done;
    if (!quiet) printf("\n");
    stats.struct_size = sizeof stats;
    if (parley_chat_stats_get(chat, &stats) == PARLEY_OK) used = stats.prompt_tokens + stats.generated_tokens;

    /* The reply, in German. */
    t = translate(en_de, reply, strlen(reply), &german, &st, why, sizeof why);
    parley_string_free(reply);
    reply = NULL;
    if (t < 0) goto done;
    if (t > 0) {
      report_line(line_number, st, why);
      printf("Bot: %s\n", kSorryNoAnswer);
      continue;
    }
    printf("Bot: %s\n", german);
    if (!quiet)
      printf("  [dialogue model: prompt %llu tokens, %llu reused from the KV cache, %llu processed, reply %llu]\n",
             (unsigned long long)stats.prompt_tokens, (unsigned long long)stats.reused_tokens,
             (unsigned long long)stats.processed_tokens, (unsigned long long)stats.generated_tokens);
  }
  rc = 0;
done:
  if (input && input != stdin) fclose(input);
  free(line);
  free(english);
  free(german);
  parley_string_free(reply);
  parley_chat_session_free(chat);
  parley_model_free(dialogue);
  parley_model_free(en_de);
  parley_model_free(de_en);
  parley_runtime_free(rt);
  free(policy);
  return rc;
}
