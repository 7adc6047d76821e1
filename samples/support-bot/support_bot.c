/*
 * support-bot: a German-speaking customer-service bot built on libparley.
 *
 * A customer writes German; the de->en translation model turns it into
 * English; the dialogue model answers with the shop's policy in its system
 * prompt (streamed as it is generated); the en->de model translates the
 * answer back. One chat session carries the conversation, so each turn runs
 * the dialogue model only on the new tokens (its KV cache is kept).
 *
 * Order questions are answered from the shop's order table (order_tool.c,
 * models/orders.csv), never from the model's imagination: an order number in
 * the customer's message is looked up, the facts the customer reads come
 * from the table row word for word, and an unknown number is said to be
 * unknown. Which side makes the tool call depends on the dialogue model:
 *  - the demo model (support-llama, 3.7 M parameters, trained here without
 *    tools) cannot emit or read tool messages, so the bot calls the tool;
 *  - an instruct model (--dialogue FILE, e.g. SmolLM2-135M-Instruct from
 *    fetch_smollm2.sh) calls it itself: parley_chat_set_tools declares the
 *    tool, a JSON schema on that turn makes the call always parse (SmolLM2's
 *    chat template has no tool syntax), parley_chat_tool_calls returns it,
 *    and the result goes back as a PARLEY_ROLE_TOOL message before the model
 *    answers.
 * Either model's reply is then checked against the conversation
 * (grounding.c): an order number, amount or name it made up never reaches
 * the customer.
 *
 *   support-bot [--models DIR] [--dialogue FILE] [--orders FILE]
 *               [--interactive] [--script FILE] [--english] [--quiet]
 *
 * Without --interactive it plays a scripted conversation (built in, or one
 * German line per turn from --script). --english: the customer writes
 * English and gets English (no translation; to measure the dialogue model
 * alone, tests/bench/support_bot_quality.py). Everything runs on the CPU
 * plugin.
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

#include "grounding.h"
#include "order_tool.h"

#define MAX_SENTENCES 32
/* A customer message longer than this is refused before any model sees it. */
#define MAX_MESSAGE_BYTES 8192
/* Tokens the chat template adds around a message and before the reply (an upper bound for this model's). */
#define TEMPLATE_TOKENS 16
/* Order numbers looked up per customer message. */
#define MAX_ORDERS_PER_MESSAGE 3

static const char *const kScript[] = {
    "Hallo! Wo ist meine Bestellung 9019917?",          "Wie kann ich meinen Saale-Monitor zurückschicken?",
    "Wann bekomme ich meine Erstattung über 107,49 €?", "Wie sind Ihre Öffnungszeiten?",
    "Kann ich die Bestellung 9876543 stornieren?", /* not in models/orders.csv */
};

static const char kSorryUnreadable[] =
    "Entschuldigung, diese Nachricht kann ich nicht verarbeiten. Bitte schreiben Sie Ihre Frage noch einmal, "
    "gern in kürzeren Sätzen.";
static const char kSorryNoAnswer[] = "Entschuldigung, darauf kann ich gerade nicht antworten.";
static const char kAskOrderNumber[] =
    "Please tell me the order number or the amount you are asking about, and I will check it for you.";
static const char kAskOrderNumberGerman[] =
    "Bitte nennen Sie mir die Bestellnummer oder den Betrag, um den es geht, dann prüfe ich das für Sie.";
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

/* Terms the translation models must not touch, in both directions: the
 * product lines and carriers of the order table ("Saale", "DHL"), kept
 * verbatim like numbers (the demo models are trained to pass the
 * placeholders through, make_corpus.py mask_pair). */
typedef struct glossary {
  const char *terms[64];
  char storage[64][32];
  size_t count;
} glossary;

static void glossary_add(glossary *g, const char *term, size_t n) {
  size_t i;
  if (n == 0 || n >= sizeof g->storage[0] || g->count == sizeof g->terms / sizeof g->terms[0]) return;
  for (i = 0; i < g->count; ++i)
    if (strlen(g->terms[i]) == n && !strncmp(g->terms[i], term, n)) return;
  memcpy(g->storage[g->count], term, n);
  g->storage[g->count][n] = '\0';
  g->terms[g->count] = g->storage[g->count];
  ++g->count;
}

/* Translates the `n` bytes at `text` sentence by sentence (one batch) into a
 * new string *out (free it). When a sentence cannot be translated (its own
 * fault: NUL, invalid UTF-8, too long) returns 1 with *why_status and
 * *why_message set (message owned by a static buffer); a failure of the call
 * itself returns -1 (already reported). 0 on success. */
/* What the demo models cannot copy reliably: a customer's name ("Ida
 * Brandt" -> "Jda Brandt") and a product line not in the order table
 * ("Weser-Regenjacke" -> "Wei rain jacket"). German: the name a customer
 * introduces themselves with, and the first part of a "Line-Noun" compound
 * (not of "E-Mail-Adresse"); English: a surname after a title. Kept verbatim
 * by the runtime's caller patterns (PCRE2, UTF/UCP). */
static const char *const kNamePatternsGerman[] = {
    "(?<=\\b[Hh]ier ist |\\b[Mm]ein Name ist |\\b[Ii]ch hei\u00dfe )\\p{Lu}[\\p{L}'-]*(?: \\p{Lu}[\\p{L}'-]*)?",
    "(?<![\\p{L}-])\\p{Lu}\\p{Ll}+(?=-\\p{Lu}\\p{Ll})"};
static const char *const kNamePatternsEnglish[] = {"(?<=\\bMr |\\bMs |\\bMrs )\\p{Lu}[\\p{L}'-]*"};

static int translate(parley_model *model, const glossary *terms, const char *const *patterns, size_t num_patterns,
                     glossary *learn, const char *text, size_t n, char **out, parley_status *why_status,
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
  if (terms) {
    o.glossary = terms->terms;
    o.num_glossary = terms->count;
  }
  o.protect_patterns = patterns;
  o.num_protect_patterns = num_patterns;
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
      size_t spans = 0, k;
      total += strlen(t) + 1;
      /* A name a pattern found goes into `learn`: kept in later turns and in the reply too. */
      if (learn && parley_translation_result_protected_count(r, i, 0, &spans) == PARLEY_OK)
        for (k = 0; k < spans; ++k) {
          parley_protected_span sp;
          memset(&sp, 0, sizeof sp);
          sp.struct_size = sizeof sp;
          if (parley_translation_result_protected_span(r, i, 0, k, &sp) == PARLEY_OK &&
              sp.kind == PARLEY_PROTECT_PATTERN && sp.source_offset + sp.source_length <= lengths[i])
            glossary_add(learn, sentences[i] + sp.source_offset, sp.source_length);
        }
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

static char *copy(const char *s) {
  char *c = s ? (char *)malloc(strlen(s) + 1) : NULL;
  if (c) memcpy(c, s, strlen(s) + 1);
  return c;
}

/* A message as the session holds it, tool-use fields included. */
typedef struct saved_message {
  int32_t role;
  char *content, *tool_calls, *tool_call_id, *name;
} saved_message;

/* Keeps the newest `keep` messages after the system prompt (starting at a
 * customer message, as the chat template wants) and drops the older ones by
 * rebuilding the session's conversation. Returns how many were dropped, or
 * -1 on failure (reported). The session's KV cache keeps the system prompt. */
static long drop_oldest(parley_chat_session *chat, size_t keep) {
  size_t count = 0, first, i, n;
  saved_message *saved = NULL;
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
  if (!(saved = (saved_message *)calloc(n ? n : 1, sizeof *saved))) return -1;
  for (i = 0; i < n; ++i) {
    const char *content = NULL, *calls = NULL, *call_id = NULL, *name = NULL;
    if (check(parley_chat_message(chat, first + i, &saved[i].role, &content), "reading a message") ||
        check(parley_chat_tool_calls(chat, first + i, &calls, &call_id, &name), "reading a message"))
      goto done;
    if (!(saved[i].content = copy(content)) || (calls && !(saved[i].tool_calls = copy(calls))) ||
        (call_id && !(saved[i].tool_call_id = copy(call_id))) || (name && !(saved[i].name = copy(name))))
      goto done;
  }
  if (check(parley_chat_reset(chat), "resetting the conversation")) goto done;
  for (i = 0; i < n; ++i) {
    parley_chat_message_ex m = {sizeof m,
                                saved[i].role,
                                saved[i].content,
                                strlen(saved[i].content),
                                saved[i].tool_calls,
                                saved[i].tool_call_id,
                                saved[i].name};
    if (check(parley_chat_append_message(chat, &m), "restoring a message")) goto done;
  }
  dropped = (long)(first - 1);
done:
  for (i = 0; i < n; ++i) {
    free(saved[i].content);
    free(saved[i].tool_calls);
    free(saved[i].tool_call_id);
    free(saved[i].name);
  }
  free(saved);
  return dropped;
}

/* What the conversation knows (the policy, the customer's messages, the
 * order tool's results) and the order and amount it is about: what a reply
 * is checked against (grounding.h). */
typedef struct conversation {
  char *known;
  size_t length;
  char order[ORDER_ID_DIGITS + 1];
  char status[16]; /* that order's, from the table */
  char amount[32];
  char name[96]; /* from the customer's introduction (introduced_name) */
} conversation;

static int remember(conversation *c, const char *text) {
  size_t n = strlen(text);
  char *grown = (char *)realloc(c->known, c->length + n + 2);
  if (!grown) return -1;
  c->known = grown;
  memcpy(c->known + c->length, text, n);
  c->length += n;
  c->known[c->length++] = '\n';
  c->known[c->length] = '\0';
  return 0;
}

/* The dialogue model calls the order tool for one of the `count` order
 * numbers of the customer's message: the tool is declared for this turn
 * only, and a JSON schema admits exactly a call {"name": "order_status",
 * "arguments": {"order_id": one of them}}, so the call always parses.
 * parley stores it as the assistant's tool call; the bot runs it and
 * appends the result as a tool message. Writes the number asked for to
 * `called` and the result to `result`. Returns 0, 1 when the reply held no
 * call (cut short; reported), -1 on failure (reported). */
static int model_calls_order_tool(parley_chat_session *chat, const parley_generation_options *base,
                                  char (*ids)[ORDER_ID_DIGITS + 1], size_t count, const order_table *orders,
                                  char *called, char *result, size_t result_size) {
  char schema[768], list[128], call_id[32] = "";
  const char *calls = NULL, *p;
  char *reply = NULL;
  size_t i, used = 0, messages = 0;
  parley_generation_options gen = *base;
  parley_chat_options o;
  parley_chat_message_ex tool;
  parley_status st;
  for (i = 0; i < count; ++i)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", ids[i]);
  snprintf(
      schema, sizeof schema,
      "{\"type\": \"object\", \"properties\": {\"name\": {\"const\": \"order_status\"}, \"arguments\": "
      "{\"type\": \"object\", \"properties\": {\"order_id\": {\"enum\": [%s]}}, \"required\": [\"order_id\"], "
      "\"additionalProperties\": false}}, \"required\": [\"name\", \"arguments\"], \"additionalProperties\": false}",
      list);
  gen.json_schema = schema;
  gen.max_new_tokens = 64;
  parley_chat_options_init(&o);
  o.generation = &gen;
  if (check(parley_chat_set_tools(chat, kOrderToolJson), "declaring the order tool")) return -1;
  st = parley_chat_generate(chat, &o, &reply);
  parley_string_free(reply);
  parley_chat_set_tools(chat, NULL); /* the answer that follows is text for the customer */
  if (check(st, "the order tool call")) return -1;
  if (check(parley_chat_message_count(chat, &messages), "counting messages") ||
      check(parley_chat_tool_calls(chat, messages - 1, &calls, NULL, NULL), "reading the tool call"))
    return -1;
  for (i = 0; calls && i < count && !strstr(calls, ids[i]); ++i) {
  }
  if (!calls || i == count) {
    fprintf(stderr, "support-bot: the dialogue model's tool call was cut short\n");
    parley_chat_remove_last(chat);
    return 1;
  }
  memcpy(called, ids[i], ORDER_ID_DIGITS + 1);
  /* the call's id ("call00001"), which the result names */
  if ((p = strstr(calls, "\"id\"")) && (p = strchr(p + 4, '"'))) {
    size_t n = strcspn(p + 1, "\"");
    if (n < sizeof call_id) {
      memcpy(call_id, p + 1, n);
      call_id[n] = '\0';
    }
  }
  order_result_json(called, order_table_find(orders, called), result, result_size);
  memset(&tool, 0, sizeof tool);
  tool.struct_size = sizeof tool;
  tool.role = PARLEY_ROLE_TOOL;
  tool.content = result;
  tool.content_length = strlen(result);
  tool.tool_call_id = call_id[0] ? call_id : NULL;
  tool.name = "order_status";
  return check(parley_chat_append_message(chat, &tool), "the order tool's result") ? -1 : 0;
}

static int32_t stream_english(void *user_data, const char *text, size_t length) {
  if (!*(int *)user_data) fwrite(text, 1, length, stdout);
  fflush(stdout);
  return 0;
}

/* The facts the order tool gave for one customer message, as the customer
 * reads them (the shop's own sentences, in English and German). */
typedef struct order_answer {
  char english[1024], german[1024];
  size_t english_length, german_length;
  int unknown; /* numbers not in the table */
} order_answer;

static void add_sentence(char *buffer, size_t size, size_t *length, const char *sentence) {
  *length += (size_t)snprintf(buffer + *length, size - *length, "%s%s", *length ? " " : "", sentence);
  if (*length >= size) *length = size - 1;
}

/* Looks up the order numbers of the customer's message: the model calls the
 * tool (`model_calls_tool`) or the bot does. Fills `answer`, remembers the
 * results in the conversation. Returns 0, or -1 on failure (reported). */
static int look_up_orders(parley_chat_session *chat, int model_calls_tool, const parley_generation_options *gen,
                          const order_table *orders, const char *english, conversation *c, int quiet,
                          order_answer *answer) {
  char ids[MAX_ORDERS_PER_MESSAGE][ORDER_ID_DIGITS + 1], result[512], sentence[256];
  size_t count = find_order_ids(english, ids, MAX_ORDERS_PER_MESSAGE);
  memset(answer, 0, sizeof *answer);
  while (count > 0) {
    char id[ORDER_ID_DIGITS + 1];
    const order *row;
    size_t k;
    int by_model = 0;
    if (model_calls_tool) {
      int t = model_calls_order_tool(chat, gen, ids, count, orders, id, result, sizeof result);
      if (t < 0) return -1;
      by_model = t == 0;
    }
    if (!by_model) { /* the bot's own call: the first number left */
      memcpy(id, ids[0], sizeof id);
      order_result_json(id, order_table_find(orders, id), result, sizeof result);
    }
    row = order_table_find(orders, id);
    if (!quiet) printf("  [order_status(%s), called by the %s] %s\n", id, by_model ? "model" : "bot", result);
    order_facts(id, row, FACTS_ENGLISH, sentence, sizeof sentence);
    add_sentence(answer->english, sizeof answer->english, &answer->english_length, sentence);
    order_facts(id, row, FACTS_GERMAN, sentence, sizeof sentence);
    add_sentence(answer->german, sizeof answer->german, &answer->german_length, sentence);
    if (remember(c, result)) return -1;
    if (row) {
      memcpy(c->order, id, sizeof c->order);
      memcpy(c->status, row->status, sizeof c->status);
    } else
      ++answer->unknown;
    for (k = 0; k < count && strcmp(ids[k], id); ++k) {
    }
    for (--count; k < count; ++k) memcpy(ids[k], ids[k + 1], sizeof ids[k]);
  }
  return 0;
}

/* Replaces the session's last message (the model's reply) with `text`. */
static int replace_reply(parley_chat_session *chat, const char *text) {
  return check(parley_chat_remove_last(chat), "replacing the reply") ||
         check(parley_chat_append(chat, PARLEY_ROLE_ASSISTANT, text), "replacing the reply");
}

int main(int argc, char **argv) {
  /* The models in this source tree (built in), unless --models says otherwise. */
#ifdef PARLEY_DEMO_MODELS_DIR
  const char *dir = PARLEY_DEMO_MODELS_DIR, *script = NULL;
#else
  const char *dir = "samples/support-bot/models", *script = NULL;
#endif
  const char *dialogue_path = NULL, *orders_path = NULL;
  int interactive = 0, quiet = 0, english_only = 0, rc = 1, i;
  char path[1024], why[512];
  char *policy = NULL, *reply = NULL, *line = NULL, *english = NULL, *german = NULL;
  char *answer = NULL;     /* the English reply, the table's facts first */
  char *model_text = NULL; /* the dialogue model's part of it, checked */
  int asking = 0;          /* the model's part was replaced by a question for the missing number */
  order_answer said;       /* the order tool's facts */
  size_t line_cap = 0, line_number = 0;
  FILE *input = NULL;
  parley_runtime *rt = NULL;
  parley_model *de_en = NULL, *en_de = NULL, *dialogue = NULL;
  parley_chat_session *chat = NULL;
  parley_chat_options options;
  parley_generation_options gen;
  parley_status st;
  order_table orders = {NULL, 0};
  glossary terms;
  conversation talk;
  int64_t positions = 0;
  uint64_t used = 0;        /* tokens of the conversation after the last reply */
  size_t policy_tokens = 0; /* the system prompt's */
  char error[1024];
  size_t turn = 0, k;
  const char *stops[] = {"\nCustomer:", "\nUser:"};

  memset(&terms, 0, sizeof terms);
  memset(&talk, 0, sizeof talk);
  for (i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--models") && i + 1 < argc)
      dir = argv[++i];
    else if (!strcmp(argv[i], "--dialogue") && i + 1 < argc)
      dialogue_path = argv[++i];
    else if (!strcmp(argv[i], "--orders") && i + 1 < argc)
      orders_path = argv[++i];
    else if (!strcmp(argv[i], "--script") && i + 1 < argc)
      script = argv[++i];
    else if (!strcmp(argv[i], "--interactive"))
      interactive = 1;
    else if (!strcmp(argv[i], "--english"))
      english_only = 1;
    else if (!strcmp(argv[i], "--quiet"))
      quiet = 1;
    else {
      fprintf(stderr,
              "usage: %s [--models DIR] [--dialogue FILE] [--orders FILE] [--interactive] [--script FILE] "
              "[--english] [--quiet]\n",
              argv[0]);
      return 2;
    }
  }

  if (check(parley_runtime_create(NULL, &rt), "creating the runtime")) return 1;
  if (!english_only) {
    snprintf(path, sizeof path, "%s/opus-mt-de-en.parley", dir);
    if (check(parley_model_load_file(rt, path, NULL, &de_en), path)) goto done;
    snprintf(path, sizeof path, "%s/opus-mt-en-de.parley", dir);
    if (check(parley_model_load_file(rt, path, NULL, &en_de), path)) goto done;
  }
  snprintf(path, sizeof path, "%s/support-llama.parley", dir);
  if (check(parley_model_load_file(rt, dialogue_path ? dialogue_path : path, NULL, &dialogue),
            dialogue_path ? dialogue_path : path))
    goto done;
  if (check(parley_model_config_int(dialogue, "decoder.max_positions", &positions), "the dialogue model's positions"))
    goto done;
  snprintf(path, sizeof path, "%s/policy.txt", dir);
  if (!(policy = read_file(path))) {
    fprintf(stderr, "support-bot: cannot read %s\n", path);
    goto done;
  }
  snprintf(path, sizeof path, "%s/orders.csv", dir);
  if (order_table_load(orders_path ? orders_path : path, &orders)) goto done;
  for (k = 0; k < orders.count; ++k) { /* "Saale monitor": the product line; the carrier */
    glossary_add(&terms, orders.rows[k].product, strcspn(orders.rows[k].product, " "));
    glossary_add(&terms, orders.rows[k].carrier, strlen(orders.rows[k].carrier));
  }
  if (remember(&talk, policy)) goto done;
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
  if (english_only)
    printf("Nordwind Shop support bot (English dialogue model, no translation; CPU plugin).\n");
  else
    printf("Nordwind Shop support bot (German <-> English translation, English dialogue model; CPU plugin).\n");
  if (interactive)
    printf("%s\n", english_only ? "Type your question (Ctrl-D ends)."
                                : "Schreiben Sie Ihre Frage auf Deutsch (Ctrl-D beendet).");
  for (;;) {
    parley_chat_stats stats;
    const char *customer = NULL;
    size_t length = 0;
    int t;
    memset(&stats, 0, sizeof stats);
    if (input) {
      ssize_t got;
      if (interactive) {
        printf("\n%s> ", english_only ? "Customer" : "Kunde");
        fflush(stdout);
      }
      if ((got = getline(&line, &line_cap, input)) < 0) break;
      ++line_number;
      length = (size_t)got;
      while (length && (line[length - 1] == '\n' || line[length - 1] == '\r')) --length;
      if (!length) continue;
      customer = line;
      if (!interactive) {
        printf("\n%s: ", english_only ? "Customer" : "Kunde");
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
    free(answer);
    free(model_text);
    english = german = answer = model_text = NULL;
    asking = 0;

    /* The customer's message, in English. */
    if (length > MAX_MESSAGE_BYTES) {
      snprintf(why, sizeof why, "the message is %zu bytes, at most %d are accepted", length, MAX_MESSAGE_BYTES);
      report_line(line_number, PARLEY_ERROR_INVALID_ARGUMENT, why);
      printf("Bot: %s\n", kSorryUnreadable);
      continue;
    }
    if (english_only) {
      if (!(english = (char *)malloc(length + 1))) goto done;
      memcpy(english, customer, length);
      english[length] = '\0';
      if (memchr(english, '\0', length)) {
        report_line(line_number, PARLEY_ERROR_INVALID_ARGUMENT, "a NUL byte in the message");
        printf("Bot: %s\n", kSorryUnreadable);
        continue;
      }
    } else {
      t = translate(de_en, &terms, kNamePatternsGerman, 2, &terms, customer, length, &english, &st, why, sizeof why);
      if (t < 0) goto done;
      if (t > 0) {
        report_line(line_number, st, why);
        printf("Bot: %s\n", kSorryUnreadable);
        continue;
      }
      if (!quiet) printf("  [de->en] %s\n", english);
    }

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
    if (remember(&talk, english)) goto done;
    last_amount(english, talk.amount, sizeof talk.amount);
    introduced_name(english, talk.name, sizeof talk.name);

    /* Orders the message names, from the shop's table. An order that is not
     * there is said to be unknown, and the model is not asked about it. */
    if (look_up_orders(chat, dialogue_path != NULL, &gen, &orders, english, &talk, quiet, &said)) goto done;
    if (said.unknown) {
      if (check(parley_chat_append(chat, PARLEY_ROLE_ASSISTANT, said.english), "the order tool's answer")) goto done;
      if (!(answer = copy(said.english))) goto done;
    } else {
      grounding_slots slots;
      char *grounded = NULL;
      int g;
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

      /* The model's answer with every order number, amount and name checked
       * against the conversation. */
      slots.known = talk.known;
      slots.order = talk.order[0] ? talk.order : NULL;
      slots.amount = talk.amount[0] ? talk.amount : NULL;
      slots.status = talk.status[0] ? talk.status : NULL;
      slots.name = talk.name[0] ? talk.name : NULL;
      g = ground_reply(reply, &slots, &grounded);
      if (g < 0) goto done;
      if (g == GROUNDING_UNANSWERABLE) {
        if (!quiet) printf("  [grounding: a number or amount the customer never gave; asking for it]\n");
        asking = 1;
      } else if (g == GROUNDING_CHANGED && !quiet) {
        printf("  [grounded] %s\n", grounded);
      }
      model_text = asking ? NULL : g == GROUNDING_CHANGED ? grounded : copy(reply);
      if (g == GROUNDING_CHANGED) grounded = NULL;
      free(grounded);
      if (!asking && !model_text) goto done;
      /* The conversation goes on from the checked answer (the demo model was
       * trained on conversations without the table's sentences, so they stay
       * out of its history); the customer reads the table's facts first. */
      if (strcmp(asking ? kAskOrderNumber : model_text, reply) &&
          replace_reply(chat, asking ? kAskOrderNumber : model_text))
        goto done;
      parley_string_free(reply);
      reply = NULL;
      {
        const char *body = asking ? kAskOrderNumber : model_text;
        size_t n = said.english_length + strlen(body) + 2;
        if (!(answer = (char *)malloc(n))) goto done;
        snprintf(answer, n, "%s%s%s", said.english, said.english_length && body[0] ? " " : "", body);
      }
    }
    if (english_only) {
      printf("Bot: %s\n", answer);
      continue;
    }

    /* The reply in German: the shop's own sentences as written, the model's
     * answer through the en->de model (numbers and product lines protected). */
    if (model_text) {
      t = translate(en_de, &terms, kNamePatternsEnglish, 1, NULL, model_text, strlen(model_text), &german, &st, why,
                    sizeof why);
      if (t < 0) goto done;
      if (t > 0) {
        report_line(line_number, st, why);
        printf("Bot: %s\n", kSorryNoAnswer);
        continue;
      }
      if (!quiet && said.german_length) printf("  [en->de] %s\n", german); /* the model's part alone */
    }
    printf("Bot: %s%s%s\n", said.german, said.german_length && ((german && german[0]) || asking) ? " " : "",
           german   ? german
           : asking ? kAskOrderNumberGerman
                    : "");
    if (!quiet && stats.struct_size)
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
  free(answer);
  free(model_text);
  free(talk.known);
  parley_string_free(reply);
  parley_chat_session_free(chat);
  parley_model_free(dialogue);
  parley_model_free(en_de);
  parley_model_free(de_en);
  parley_runtime_free(rt);
  order_table_free(&orders);
  free(policy);
  return rc;
}
