/* Protected spans and long texts through parley_translate, from C99:
 * - on the demo models (samples/support-bot/models) and on a random-weight
 *   Marian with the demo tokenizers (random_marian.parley, from
 *   make_random_marian.py), every protected span appears exactly once in every
 *   hypothesis, verbatim at its reported target offset, the reported spans do
 *   not overlap, and the text between them is the model's;
 * - randomised texts (fixed printed seed; PARLEY_TEST_SEED overrides) mixing
 *   words with numbers, amounts, dates, e-mails, URLs, placeholders, tags,
 *   caller-pattern and glossary spans;
 * - long texts: a 20,000-character document translates (split into
 *   sentences, line breaks kept), max_batch_tokens, max_source_tokens;
 * - misuse: bad regex (offset in the message), NULL arrays and entries,
 *   empty-matching pattern, huge glossary, unknown flags, old struct_size. */
#include <parley/parley.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "c_checks.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static parley_model *load(parley_runtime *rt, const char *env, const char *rel) {
  char path[4096];
  parley_model *m = NULL;
  const char *dir = getenv(env);
  parley_model_options o;
  parley_model_options_init(&o);
  snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", rel);
  if (parley_model_load_file(rt, path, &o, &m) != PARLEY_OK) {
    fprintf(stderr, "load %s: %s\n", path, parley_last_error());
    exit(1);
  }
  return m;
}

static int is_alnum_byte(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Occurrences of `needle` (n bytes) in `hay` as a whole: a needle that
 * starts (ends) with a letter or digit must not continue a word there ("2"
 * is not in "20"). */
static size_t occurrences(const char *hay, const char *needle, size_t n) {
  size_t count = 0;
  const char *p = hay;
  if (!n) return 0;
  while ((p = strstr(p, needle)) != NULL) {
    const int left_ok = !is_alnum_byte(needle[0]) || p == hay || !is_alnum_byte(p[-1]);
    const int right_ok = !is_alnum_byte(needle[n - 1]) || !is_alnum_byte(p[n]);
    count += left_ok && right_ok;
    p += 1;
  }
  return count;
}

/* Checks every hypothesis of text `i`: the reported spans are `expected`
 * (source strings, in source order), each verbatim at its target offset,
 * disjoint, and each appears exactly once in the text. Returns the number of
 * spans the model copied (PARLEY_SPAN_COPIED) in hypothesis 0. */
static size_t check_spans(const parley_translation_result *r, size_t i, const char *source, const char *const *expected,
                          size_t n_expected, int verbose) {
  size_t nh = 0, h, copied = 0;
  CHECK_STATUS(parley_translation_result_hypothesis_count(r, i, &nh), PARLEY_OK);
  CHECK(nh >= 1);
  for (h = 0; h < nh; ++h) {
    const char *text = NULL;
    size_t n = 0, k, prev_end = 0;
    CHECK_STATUS(parley_translation_result_text(r, i, h, &text, NULL), PARLEY_OK);
    CHECK_STATUS(parley_translation_result_protected_count(r, i, h, &n), PARLEY_OK);
    CHECK(n == n_expected);
    if (verbose && h == 0) printf("  %s\n  -> %s\n", source, text);
    size_t offsets[16];
    for (k = 0; k < n && k < n_expected; ++k) {
      parley_protected_span sp;
      char want[512];
      memset(&sp, 0xA5, sizeof sp); /* poisoned: every field must be written */
      sp.struct_size = sizeof sp;
      CHECK_STATUS(parley_translation_result_protected_span(r, i, h, k, &sp), PARLEY_OK);
      CHECK(sp.source_length == strlen(expected[k]));
      CHECK(sp.source_offset + sp.source_length <= strlen(source));
      CHECK(memcmp(source + sp.source_offset, expected[k], strlen(expected[k])) == 0);
      CHECK(sp.target_length == sp.source_length);
      CHECK(sp.target_offset + sp.target_length <= strlen(text));
      CHECK(memcmp(text + sp.target_offset, expected[k], sp.target_length) == 0);
      CHECK(sp.placement >= PARLEY_SPAN_COPIED && sp.placement <= PARLEY_SPAN_POSITIONED);
      if (h == 0 && sp.placement == PARLEY_SPAN_COPIED) ++copied;
      if (k < 16) offsets[k] = sp.target_offset;
      /* A closing tag never comes before its opening tag ("<b>" ... "</b>"). */
      if (k < 16 && expected[k][0] == '<' && expected[k][1] == '/') {
        size_t q;
        for (q = 0; q < k; ++q)
          if (expected[q][0] == '<' && strncmp(expected[q] + 1, expected[k] + 2, strlen(expected[k] + 2)) == 0)
            CHECK(offsets[q] < offsets[k]);
      }
      /* Exactly once in the hypothesis (the expected spans are distinct and
       * none is inside another). */
      snprintf(want, sizeof want, "%s", expected[k]);
      if (occurrences(text, want, strlen(want)) != 1) {
        fprintf(stderr, "span \"%s\" occurs %zu times in \"%s\"\n", want, occurrences(text, want, strlen(want)), text);
        CHECK(0);
      }
      (void)prev_end;
    }
  }
  return copied;
}

/* ------------------------------------------------------------- demo models */

struct demo_case {
  const char *text;
  const char *spans[6];
};

static void test_demo(parley_runtime *rt) {
  static const struct demo_case de[] = {
      {"Hallo! Wo ist meine Bestellung 9019917?", {"9019917"}},
      {"Ihre Rechnung für die Bestellung 9223353 beträgt 367,90 €.", {"9223353", "367,90 €"}},
      {"Ihre Bestellung 9160336 wurde am 20. Juni versandt und sollte innerhalb von 2 bis 4 Werktagen ankommen.",
       {"9160336", "20", "2", "4"}},
      {"Schreiben Sie an <b>service@nordwind-shop.de</b> oder besuchen Sie https://nordwind-shop.de/hilfe.",
       {"<b>", "service@nordwind-shop.de", "</b>", "https://nordwind-shop.de/hilfe"}},
      {"Hallo {name}, Ihr Saale-Monitor kostet %s und kommt am 05.12.2026.",
       {"{name}", "Saale-Monitor", "%s", "05.12.2026"}},
      {"Ihre Bestellung 9770012 über 1.299,00 € ist unterwegs, {{kunde}}.", {"9770012", "1.299,00 €", "{{kunde}}"}},
  };
  static const struct demo_case en[] = {
      {"Hello! Where is my order 9019917?", {"9019917"}},
      {"Thank you for your patience. Your invoice for order 9223353 is €367.90.", {"9223353", "€367.90"}},
      {"Your Saale monitor costs €149.00, write to <i>help@nordwind.de</i>.",
       {"€149.00", "<i>", "help@nordwind.de", "</i>"}},
  };
  const char *glossary[] = {"Saale-Monitor"};
  parley_model *de_en = load(rt, "PARLEY_DEMO_MODELS", "opus-mt-de-en.parley");
  parley_model *en_de = load(rt, "PARLEY_DEMO_MODELS", "opus-mt-en-de.parley");
  size_t pass;
  printf("demo models:\n");
  for (pass = 0; pass < 2; ++pass) {
    const struct demo_case *cases = pass ? en : de;
    const size_t n = pass ? COUNT(en) : COUNT(de);
    parley_model *m = pass ? en_de : de_en;
    const char *texts[8];
    size_t i, copied = 0, total = 0;
    parley_generation_options g;
    parley_translation_options o;
    parley_translation_result *r = NULL;
    parley_generation_options_init(m, &g);
    g.num_return_sequences = 2; /* every hypothesis keeps every span */
    parley_translation_options_init(&o);
    o.generation = &g;
    o.protect = PARLEY_PROTECT_ALL;
    o.glossary = glossary;
    o.num_glossary = 1;
    for (i = 0; i < n; ++i) texts[i] = cases[i].text;
    CHECK_STATUS(parley_translate(m, texts, n, &o, &r), PARLEY_OK);
    for (i = 0; r && i < n; ++i) {
      size_t k = 0;
      while (k < 6 && cases[i].spans[k]) ++k;
      copied += check_spans(r, i, texts[i], cases[i].spans, k, 1);
      total += k;
    }
    printf("  %s: %zu of %zu spans copied by the model, the others placed by attention\n", pass ? "en-de" : "de-en",
           copied, total);
    parley_translation_result_free(r);
  }
  parley_model_free(de_en);
  parley_model_free(en_de);
}

/* ------------------------------------------------- random texts, random model */

static uint64_t g_rng;
static uint32_t next_u32(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng >> 11);
}

/* A random text of words and distinct spans of every class; the spans are
 * written to spans[] (storage in `store`), in order. */
static size_t random_text(char *out, size_t cap, char store[][64], const char **spans, size_t max_spans) {
  static const char *words[] = {"Hallo",    "Bestellung", "Ihre",  "wurde", "versandt", "und", "kostet", "am",
                                "Rechnung", "Kunde",      "bitte", "Paket", "heute",    "mit", "der",    "die"};
  size_t len = 0, n = 0, w, count = 6 + next_u32() % 14;
  out[0] = 0;
  for (w = 0; w < count && len + 80 < cap; ++w) {
    const char *piece;
    char buf[64];
    if (n < max_spans && next_u32() % 3 == 0) {
      /* Each span is unique in the text (a serial number n in it) and holds
       * no other span. */
      switch (next_u32() % 9) {
        case 0:
          snprintf(buf, sizeof buf, "%u%u", (unsigned)(9 - n % 9), 100000u + next_u32() % 899999u);
          break;
        case 1:
          snprintf(buf, sizeof buf, "%u,%02u €", 10u + (unsigned)n * 100u + next_u32() % 90u, next_u32() % 100u);
          break;
        case 2:
          snprintf(buf, sizeof buf, "%02u.%02u.20%02u", 1u + (unsigned)n, 1 + next_u32() % 12, next_u32() % 100);
          break;
        case 3:
          snprintf(buf, sizeof buf, "k%zu@shop%u.de", n, next_u32() % 100);
          break;
        case 4:
          snprintf(buf, sizeof buf, "https://shop.de/p%zu/%u", n, next_u32() % 1000);
          break;
        case 5:
          snprintf(buf, sizeof buf, "{slot%zu}", n);
          break;
        case 6:
          snprintf(buf, sizeof buf, "<span id=\"a%zu\">", n);
          break;
        case 7:
          snprintf(buf, sizeof buf, "REF-%zu-X", n);
          break; /* the caller's pattern */
        default:
          snprintf(buf, sizeof buf, "Nordwind%c%c", (char)('A' + n % 26), (char)('a' + n / 26));
          break;
      }
      snprintf(store[n], 64, "%s", buf);
      spans[n] = store[n];
      ++n;
      piece = buf;
    } else {
      piece = words[next_u32() % COUNT(words)];
    }
    len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? " " : "", piece);
  }
  return n;
}

static void test_random_model(parley_runtime *rt) {
  const char *seed_env = getenv("PARLEY_TEST_SEED");
  const uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 20261205u;
  parley_model *m = load(rt, "PARLEY_TEXT_API_DIR", "random_marian.parley");
  const char *patterns[] = {"REF-\\d+-X"};
  static const char *glossary_terms[] = {"NordwindAa", "NordwindBa", "NordwindCa", "NordwindDa", "NordwindEa",
                                         "NordwindFa", "NordwindGa", "NordwindHa", "NordwindIa", "NordwindJa",
                                         "NordwindKa", "NordwindLa", "NordwindMa", "NordwindNa", "NordwindOa",
                                         "NordwindPa", "NordwindQa", "NordwindRa", "NordwindSa", "NordwindTa"};
  int round;
  size_t texts_checked = 0, spans_checked = 0;
  g_rng = seed * 2654435761u + 1;
  printf("random-weight model, seed %llu (PARLEY_TEST_SEED overrides)\n", (unsigned long long)seed);
  for (round = 0; round < 8; ++round) {
    char text[6][512];
    char store[6][12][64];
    const char *spans[6][12];
    size_t nspans[6], i;
    const char *texts[6];
    parley_generation_options g;
    parley_translation_options o;
    parley_translation_result *r = NULL;
    for (i = 0; i < 6; ++i) {
      nspans[i] = random_text(text[i], sizeof text[i], store[i], spans[i], 12);
      texts[i] = text[i];
    }
    parley_generation_options_init(m, &g);
    /* Greedy, beam and sampling: different outputs, same guarantee. */
    if (round % 3 == 1) {
      g.num_beams = 3;
      g.num_return_sequences = 3;
    } else if (round % 3 == 2) {
      g.num_beams = 1;
      g.do_sample = 1;
      g.seed = seed + (uint64_t)round;
      g.num_return_sequences = 2;
    } else {
      g.num_beams = 1;
    }
    parley_translation_options_init(&o);
    o.generation = &g;
    o.protect = PARLEY_PROTECT_ALL;
    o.protect_patterns = patterns;
    o.num_protect_patterns = 1;
    o.glossary = glossary_terms;
    o.num_glossary = COUNT(glossary_terms);
    o.long_text = PARLEY_LONG_TEXT_SPLIT; /* 48 positions: longer texts are split */
    CHECK_STATUS(parley_translate(m, texts, 6, &o, &r), PARLEY_OK);
    for (i = 0; r && i < 6; ++i) {
      check_spans(r, i, texts[i], spans[i], nspans[i], round == 0 && i == 0);
      spans_checked += nspans[i];
      ++texts_checked;
    }
    parley_translation_result_free(r);
  }
  printf("  %zu texts, %zu spans: each exactly once in every hypothesis\n", texts_checked, spans_checked);
  parley_model_free(m);
}

/* -------------------------------------------------------------- long texts */

static char *long_document(size_t min_chars, size_t *out_len, size_t *out_lines, size_t *orders) {
  static const char *tpl[] = {
      "Vielen Dank für Ihre Geduld. Ihre Rechnung für die Bestellung %u beträgt %u,90 €.",
      "Ihre Bestellung %u wurde am 20. Juni versandt und sollte innerhalb von 2 bis 4 Werktagen ankommen.",
      "Die Saale-Wanduhr aus Bestellung %u, die ich erhalten habe, funktioniert nicht.",
      "Hallo! Wo ist meine Bestellung %u?",
      "Wir haben Ihre Rücksendung zur Bestellung %u erhalten und erstatten %u,00 € innerhalb von 14 Tagen.",
  };
  size_t cap = min_chars + 1024, len = 0, lines = 0, k = 0;
  char *doc = (char *)malloc(cap);
  if (!doc) exit(1);
  doc[0] = 0;
  while (len < min_chars) {
    const unsigned order = 9000000u + (unsigned)k * 7919u;
    len += (size_t)snprintf(doc + len, cap - len, tpl[k % COUNT(tpl)], order, 10u + (unsigned)k % 300u);
    ++k;
    /* Sentences, line breaks and blank lines between paragraphs. */
    if (k % 7 == 0) {
      len += (size_t)snprintf(doc + len, cap - len, "\n\n");
      lines += 2;
    } else if (k % 3 == 0) {
      len += (size_t)snprintf(doc + len, cap - len, "\n");
      ++lines;
    } else {
      len += (size_t)snprintf(doc + len, cap - len, " ");
    }
  }
  *out_len = len;
  *out_lines = lines;
  *orders = k;
  return doc;
}

static size_t count_char(const char *s, char c) {
  size_t n = 0;
  for (; *s; ++s) n += *s == c;
  return n;
}

static void test_long_text(parley_runtime *rt) {
  parley_model *m = load(rt, "PARLEY_DEMO_MODELS", "opus-mt-de-en.parley");
  size_t len = 0, lines = 0, orders = 0, segments = 0, n = 0, k, preserved = 0;
  char *doc = long_document(20000, &len, &lines, &orders);
  const char *texts[1];
  const char *text = NULL;
  parley_generation_options g;
  parley_translation_options o;
  parley_translation_result *r = NULL;
  texts[0] = doc;
  parley_generation_options_init(m, &g);
  g.num_beams = 1; /* greedy keeps the test quick */
  parley_translation_options_init(&o);
  o.generation = &g;
  /* As before: one text over the model's 256 positions is refused. */
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "too long") != NULL);
  o.long_text = PARLEY_LONG_TEXT_SPLIT;
  o.protect = PARLEY_PROTECT_NUMBERS;
  o.max_batch_tokens = 2048;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_OK);
  if (r) {
    CHECK_STATUS(parley_translation_result_segments(r, 0, &segments), PARLEY_OK);
    CHECK_STATUS(parley_translation_result_text(r, 0, 0, &text, NULL), PARLEY_OK);
    CHECK(segments > 100);
    CHECK(count_char(text, '\n') == lines); /* line breaks kept */
    CHECK(strlen(text) > len / 2);
    CHECK_STATUS(parley_translation_result_protected_count(r, 0, 0, &n), PARLEY_OK);
    for (k = 0; k < orders; ++k) {
      char order[16];
      snprintf(order, sizeof order, "%u", 9000000u + (unsigned)k * 7919u);
      preserved += occurrences(text, order, strlen(order)) == 1;
    }
    CHECK(preserved == orders);
    printf(
        "long text: %zu characters, %zu sentences (pieces), %zu protected spans, %zu of %zu order numbers "
        "exactly once\n",
        len, segments, n, preserved, orders);
    {
      const float *w;
      size_t tl, sl;
      CHECK_STATUS(parley_translation_result_attention(r, 0, 0, &w, &tl, &sl), PARLEY_ERROR_NOT_FOUND);
    }
    parley_translation_result_free(r);
  }
  /* A document of many short lines (a list), beam 4, no max_batch_tokens:
     3,000 sentences x 4 beams are more than the KV pool holds at once, so
     they go in batches that fit instead of being refused with
     OUT_OF_MEMORY (as they were). */
  {
    const char line[] = "Hallo!\n";
    const size_t count = 3000, line_len = sizeof line - 1;
    char *list = (char *)malloc(count * line_len + 1);
    const char *t1[1];
    size_t segs = 0, i;
    if (!list) exit(1);
    for (i = 0; i < count; ++i) memcpy(list + i * line_len, line, line_len);
    list[count * line_len] = 0;
    t1[0] = list;
    g.num_beams = 4;
    o.protect = 0;
    o.max_batch_tokens = 0;
    CHECK_STATUS(parley_translate(m, t1, 1, &o, &r), PARLEY_OK);
    if (r) {
      CHECK_STATUS(parley_translation_result_segments(r, 0, &segs), PARLEY_OK);
      CHECK(segs == count);
      CHECK_STATUS(parley_translation_result_text(r, 0, 0, &text, NULL), PARLEY_OK);
      CHECK(count_char(text, '\n') == count);
      parley_translation_result_free(r);
    }
    free(list);
    g.num_beams = 1;
    o.protect = PARLEY_PROTECT_NUMBERS;
  }
  /* A tiny source limit splits sentences at whitespace too. */
  {
    const char *t2[] = {
        "Ihre Bestellung 9160336 wurde am 20. Juni versandt und sollte innerhalb von 2 bis 4 "
        "Werktagen ankommen.\nHallo! Wo ist meine Bestellung 9019917?"};
    size_t segs = 0;
    o.max_source_tokens = 12;
    o.max_batch_tokens = 0;
    CHECK_STATUS(parley_translate(m, t2, 1, &o, &r), PARLEY_OK);
    if (r) {
      CHECK_STATUS(parley_translation_result_segments(r, 0, &segs), PARLEY_OK);
      CHECK(segs >= 4);
      CHECK_STATUS(parley_translation_result_text(r, 0, 0, &text, NULL), PARLEY_OK);
      CHECK(count_char(text, '\n') == 1);
      CHECK(occurrences(text, "9160336", 7) == 1 && occurrences(text, "9019917", 7) == 1);
      parley_translation_result_free(r);
    }
    /* Sentence by sentence always; a text of whitespace only is its own translation. */
    o.max_source_tokens = 0;
    o.long_text = PARLEY_LONG_TEXT_SPLIT_ALWAYS;
    {
      const char *t3[] = {"Hallo! Wo ist meine Bestellung 9019917?  Danke.\n", " \n "};
      CHECK_STATUS(parley_translate(m, t3, 2, &o, &r), PARLEY_OK);
      if (r) {
        CHECK_STATUS(parley_translation_result_segments(r, 0, &segs), PARLEY_OK);
        CHECK(segs == 3);
        CHECK_STATUS(parley_translation_result_text(r, 0, 0, &text, NULL), PARLEY_OK);
        CHECK(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
        CHECK_STATUS(parley_translation_result_segments(r, 1, &segs), PARLEY_OK);
        CHECK(segs == 0);
        CHECK_STATUS(parley_translation_result_text(r, 1, 0, &text, NULL), PARLEY_OK);
        CHECK(text && strcmp(text, " \n ") == 0);
        parley_translation_result_free(r);
      }
    }
  }
  free(doc);
  parley_model_free(m);
}

/* ------------------------------------------------------------------ misuse */

static void test_misuse(parley_runtime *rt) {
  parley_model *m = load(rt, "PARLEY_TEXT_API_DIR", "random_marian.parley");
  const char *texts[] = {"Bestellung 9019917"}, *welt[] = {"Hallo Welt"};
  parley_translation_options o;
  parley_translation_result *r = NULL;
  const char *bad[] = {"ab(c"};
  const char *empty_match[] = {"x*"};
  const char *empty_in_context[] = {"(?=Welt)", "\\b", "(?<=\\d)", "Welt|"};
  const char *null_entry[] = {NULL};
  const char *empty_term[] = {""};
  char *long_term = (char *)malloc(2000);
  const char **huge = (const char **)malloc(10001 * sizeof *huge);
  size_t i;
  if (!long_term || !huge) exit(1);
  parley_translation_options_init(&o);
  o.protect_patterns = bad;
  o.num_protect_patterns = 1;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "protect_patterns[0]") && strstr(parley_last_error(), "offset 4"));
  o.protect_patterns = empty_match;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "empty string") != NULL);
  /* Empty only in context: refused too (they protected nothing), when the
   * pattern shows it or else (a lookahead alone) where it matches. */
  for (i = 0; i < sizeof empty_in_context / sizeof *empty_in_context; ++i) {
    o.protect_patterns = empty_in_context + i;
    CHECK_STATUS(parley_translate(m, welt, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "protect_patterns[0]") && strstr(parley_last_error(), "empty string"));
  }
  o.protect_patterns = null_entry;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "protect_patterns[0] is NULL") != NULL);
  o.protect_patterns = NULL;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "protect_patterns is NULL") != NULL);
  o.num_protect_patterns = 65;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "at most 64") != NULL);
  o.num_protect_patterns = 0;
  o.glossary = empty_term;
  o.num_glossary = 1;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "glossary[0] is empty") != NULL);
  {
    const char *bad_terms[] = {"Saale-Monitor", "\xff"}, *space_terms[] = {" \t"};
    o.glossary = bad_terms;
    o.num_glossary = 2;
    CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "glossary[1] is not valid UTF-8") != NULL);
    o.glossary = space_terms;
    o.num_glossary = 1;
    CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "glossary[0] is only whitespace") != NULL);
  }
  memset(long_term, 'a', 1999);
  long_term[1999] = 0;
  huge[0] = long_term;
  o.glossary = huge;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "at most 1024") != NULL);
  for (i = 0; i < 10001; ++i) huge[i] = "Saale";
  o.num_glossary = 10001;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "at most 10000") != NULL);
  /* 10000 terms (duplicates) are fine. */
  o.num_glossary = 10000;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_OK);
  parley_translation_result_free(r);
  r = NULL;
  o.glossary = NULL;
  o.num_glossary = 3;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  o.num_glossary = 0;
  o.protect = 1u << 7;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "PARLEY_PROTECT_ALL") != NULL);
  o.protect = PARLEY_PROTECT_ALL;
  o.long_text = 3;
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(parley_last_error(), "long_text") != NULL);
  o.long_text = 0;
  /* A pattern that backtracks catastrophically fails on its match limit instead of hanging. */
  {
    const char *evil[] = {"(a+)+$"};
    char hostile[4096];
    const char *ht[1];
    memset(hostile, 'a', 4000);
    hostile[4000] = 'b';
    hostile[4001] = 0;
    ht[0] = hostile;
    o.protect_patterns = evil;
    o.num_protect_patterns = 1;
    CHECK_STATUS(parley_translate(m, ht, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "protect pattern") != NULL);
    o.protect_patterns = NULL;
    o.num_protect_patterns = 0;
  }
  /* Invalid UTF-8 with protection: a clear per-text error. */
  {
    const char *bad_utf8[] = {"Bestellung \xC3\x28 9019917"};
    CHECK_STATUS(parley_translate(m, bad_utf8, 1, &o, &r), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(parley_last_error(), "text #0") && strstr(parley_last_error(), "UTF-8"));
  }
  /* An options struct of the first release (no protection fields) still works. */
  o.struct_size = offsetof(parley_translation_options, attention_layer) + sizeof(int32_t);
  CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_OK);
  if (r) {
    size_t n = 99;
    parley_protected_span sp;
    CHECK_STATUS(parley_translation_result_protected_count(r, 0, 0, &n), PARLEY_OK);
    CHECK(n == 0);
    CHECK_STATUS(parley_translation_result_protected_count(r, 0, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_translation_result_protected_count(r, 1, 0, &n), PARLEY_ERROR_NOT_FOUND);
    CHECK_STATUS(parley_translation_result_protected_count(r, 0, 9, &n), PARLEY_ERROR_NOT_FOUND);
    sp.struct_size = sizeof sp;
    CHECK_STATUS(parley_translation_result_protected_span(r, 0, 0, 0, &sp), PARLEY_ERROR_NOT_FOUND);
    sp.struct_size = 3;
    CHECK_STATUS(parley_translation_result_protected_span(r, 0, 0, 0, &sp), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_translation_result_protected_span(r, 0, 0, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_translation_result_protected_span(NULL, 0, 0, 0, &sp), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_translation_result_segments(NULL, 0, &n), PARLEY_ERROR_INVALID_ARGUMENT);
    parley_translation_result_free(r);
  }
  free(huge);
  free(long_term);
  parley_model_free(m);
}

/* parley_translate_submit copies the pattern and glossary arrays: the
 * caller may free and overwrite them before the request runs. */
static void test_submit_copies_protection(parley_runtime *rt) {
  parley_model *m = load(rt, "PARLEY_TEXT_API_DIR", "random_marian.parley");
  const char *texts[] = {"Ticket REF-12-X und NordwindZz, Bestellung 9019917"};
  char *pattern = (char *)malloc(16), *term = (char *)malloc(16);
  const char **patterns = (const char **)malloc(sizeof *patterns), **glossary = (const char **)malloc(sizeof *glossary);
  const char *bad[] = {NULL};
  parley_translation_options o;
  parley_request *req = NULL;
  parley_translation_result *r = NULL;
  static const char *const want[] = {"REF-12-X", "NordwindZz", "9019917"};
  if (!pattern || !term || !patterns || !glossary) exit(1);
  strcpy(pattern, "REF-\\d+-X");
  strcpy(term, "NordwindZz");
  patterns[0] = pattern;
  glossary[0] = term;
  parley_translation_options_init(&o);
  o.protect = PARLEY_PROTECT_NUMBERS;
  o.protect_patterns = patterns;
  o.num_protect_patterns = 1;
  o.glossary = glossary;
  o.num_glossary = 1;
  CHECK_STATUS(parley_translate_submit(m, texts, NULL, 1, &o, NULL, &req), PARLEY_OK);
  memset(pattern, 'x', 15);
  memset(term, 'y', 15);
  free(pattern);
  free(term);
  free(patterns);
  free(glossary);
  if (req) {
    CHECK_STATUS(parley_request_wait(req, -1), PARLEY_OK);
    CHECK_STATUS(parley_request_take_translation_result(req, &r), PARLEY_OK);
    if (r) check_spans(r, 0, texts[0], want, 3, 0);
    parley_translation_result_free(r);
    parley_request_free(req);
  }
  /* Misuse is refused at submission. */
  req = NULL;
  o.protect_patterns = bad;
  o.num_protect_patterns = 1;
  o.num_glossary = 0;
  CHECK_STATUS(parley_translate_submit(m, texts, NULL, 1, &o, NULL, &req), PARLEY_ERROR_INVALID_ARGUMENT);
  CHECK(req == NULL && strstr(parley_last_error(), "protect_patterns[0] is NULL") != NULL);
  parley_model_free(m);
}

/* A hypothesis that used up max_new_tokens says so; one that ended on EOS
 * before it does not. */
static void test_cut_by_length(parley_runtime *rt) {
  parley_model *m = load(rt, "PARLEY_DEMO_MODELS", "opus-mt-de-en.parley");
  const char *texts[] = {"Hallo! Wo ist meine Bestellung 9019917?"};
  size_t limit;
  printf("cut by length:\n");
  for (limit = 0; limit < 2; ++limit) {
    parley_generation_options g;
    parley_translation_options o;
    parley_translation_result *r = NULL;
    size_t h, n = 0;
    parley_generation_options_init(m, &g);
    g.num_beams = 4;
    g.num_return_sequences = 2;
    if (limit) g.max_new_tokens = 3;
    parley_translation_options_init(&o);
    o.generation = &g;
    CHECK_STATUS(parley_translate(m, texts, 1, &o, &r), PARLEY_OK);
    if (!r) continue;
    CHECK_STATUS(parley_translation_result_hypothesis_count(r, 0, &n), PARLEY_OK);
    CHECK(n == 2);
    for (h = 0; h < n; ++h) {
      int32_t cut = -1;
      const int32_t *ids = NULL;
      size_t count = 0;
      const char *text = NULL;
      CHECK_STATUS(parley_translation_result_cut_by_length(r, 0, h, &cut), PARLEY_OK);
      CHECK_STATUS(parley_translation_result_target_tokens(r, 0, h, &ids, &count), PARLEY_OK);
      CHECK_STATUS(parley_translation_result_text(r, 0, h, &text, NULL), PARLEY_OK);
      printf("  max_new_tokens %s: hypothesis %zu, %zu tokens, cut %d: %s\n", limit ? "3" : "default", h, count,
             (int)cut, text ? text : "");
      CHECK(cut == (limit ? 1 : 0));
      if (limit) CHECK(count == 3);
    }
    CHECK_STATUS(parley_translation_result_cut_by_length(r, 0, 0, NULL), PARLEY_ERROR_INVALID_ARGUMENT);
    CHECK_STATUS(parley_translation_result_cut_by_length(r, 1, 0, &(int32_t){0}), PARLEY_ERROR_NOT_FOUND);
    CHECK_STATUS(parley_translation_result_cut_by_length(r, 0, 2, &(int32_t){0}), PARLEY_ERROR_NOT_FOUND);
    CHECK_STATUS(parley_translation_result_cut_by_length(NULL, 0, 0, &(int32_t){0}), PARLEY_ERROR_INVALID_ARGUMENT);
    parley_translation_result_free(r);
  }
  parley_model_free(m);
}

/* A caller pattern that costs millions of backtracking steps per match, in a
 * text where it matches thousands of times, stays within each call's limit:
 * the request's deadline (and cancellation) still stop it. */
static void test_costly_pattern_stops_at_the_deadline(parley_runtime *rt) {
  parley_model *m = load(rt, "PARLEY_TEXT_API_DIR", "random_marian.parley");
  /* The first branch fails after trying every split of the a's into ones and
   * twos (~1.3M ways for 28), the second then matches: ~40 ms a match, 4000
   * matches, minutes in all. */
  const char *patterns[] = {"(a|aa)+b|(a|aa)+c"};
  const size_t unit = 29, units = 4000;
  char *text = (char *)malloc(unit * units + 1);
  const char *texts[1];
  parley_translation_options o;
  parley_request_options ro;
  parley_request *req = NULL;
  size_t i;
  struct timespec t0, t1;
  double seconds;
  if (!text) exit(1);
  for (i = 0; i < units; ++i) {
    memset(text + i * unit, 'a', unit - 1);
    text[i * unit + unit - 1] = 'c';
  }
  text[unit * units] = 0;
  texts[0] = text;
  parley_translation_options_init(&o);
  o.protect_patterns = patterns;
  o.num_protect_patterns = 1;
  o.long_text = PARLEY_LONG_TEXT_SPLIT;
  parley_request_options_init(&ro);
  ro.deadline_ms = 300;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK_STATUS(parley_translate_submit(m, texts, NULL, 1, &o, &ro, &req), PARLEY_OK);
  if (req) {
    int32_t st = PARLEY_OK;
    const char *message = NULL;
    CHECK_STATUS(parley_request_wait(req, -1), PARLEY_OK);
    CHECK_STATUS(parley_request_status(req, &st, &message), PARLEY_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("costly pattern: %s after %.2f s: %s\n", parley_status_name((parley_status)st), seconds,
           message ? message : "");
    CHECK(st == PARLEY_ERROR_TIMEOUT && message && strstr(message, "protect_patterns"));
    /* The whole text would take minutes; a deadline is checked every match. */
    CHECK(seconds < 30.0);
    parley_request_free(req);
  }
  free(text);
  parley_model_free(m);
}

int main(void) {
  parley_runtime *rt = make_runtime();
  test_costly_pattern_stops_at_the_deadline(rt);
  test_cut_by_length(rt);
  test_misuse(rt);
  test_submit_copies_protection(rt);
  test_demo(rt);
  test_random_model(rt);
  test_long_text(rt);
  parley_runtime_free(rt);
  printf("%d checks, %d failures\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
