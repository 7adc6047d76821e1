/* Grounding of a dialogue model's reply in the conversation (see grounding.h). */
#include "grounding.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static const char kEuro[] = "\xE2\x82\xAC"; /* U+20AC in UTF-8 */

typedef struct buffer {
  char *data;
  size_t length, cap;
} buffer;

static int append(buffer *b, const char *s, size_t n) {
  if (b->length + n + 1 > b->cap) {
    size_t cap = 2 * (b->length + n + 1);
    char *grown = (char *)realloc(b->data, cap);
    if (!grown) return -1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->length, s, n);
  b->data[b->length += n] = '\0';
  return 0;
}

static size_t digits(const char *s) {
  size_t n = 0;
  while (isdigit((unsigned char)s[n])) ++n;
  return n;
}

/* Length of a number at `s`: digits, optionally one [.,] and more digits. */
static size_t number(const char *s) {
  size_t n = digits(s);
  if (n && (s[n] == '.' || s[n] == ',') && isdigit((unsigned char)s[n + 1])) n += 1 + digits(s + n + 1);
  return n;
}

/* Length of a euro amount at `s` ("€107.49", "€ 50", "107,49 €", "9.90 EUR"), or 0. */
static size_t amount_at(const char *s) {
  size_t n;
  if (!strncmp(s, kEuro, 3)) {
    size_t space = s[3] == ' ';
    n = number(s + 3 + space);
    return n ? 3 + space + n : 0;
  }
  if (!(n = number(s))) return 0;
  if (s[n] == ' ') {
    if (!strncmp(s + n + 1, kEuro, 3)) return n + 4;
    if (!strncmp(s + n + 1, "EUR", 3)) return n + 4;
  }
  return !strncmp(s + n, kEuro, 3) ? n + 3 : 0;
}

/* Whether `known` holds the n bytes at `s`, not as part of a longer number or word. */
static int mentions(const char *known, const char *s, size_t n) {
  char needle[64];
  const char *hit;
  if (n >= sizeof needle) return 0;
  memcpy(needle, s, n);
  needle[n] = '\0';
  for (hit = known; (hit = strstr(hit, needle)) != NULL; ++hit) {
    int before = hit > known && (isalnum((unsigned char)hit[-1]) || hit[-1] == '.' || hit[-1] == ',');
    int after =
        isalnum((unsigned char)hit[n]) || ((hit[n] == '.' || hit[n] == ',') && isdigit((unsigned char)hit[n + 1]));
    if (!before && !after) return 1;
  }
  return 0;
}

/* Length of a capitalised word at `s` (letters, UTF-8 bytes, inner hyphens), or 0. */
static size_t name_word(const char *s) {
  size_t n = 0;
  if (!isupper((unsigned char)s[0])) return 0;
  while (isalpha((unsigned char)s[n]) || (unsigned char)s[n] >= 0x80 ||
         (s[n] == '-' && n && isupper((unsigned char)s[n + 1])))
    ++n;
  return n;
}

/* Length of a surname particle at `s` followed by a space ("de ", "von "), or 0. */
static size_t particle(const char *s) {
  static const char *const kParticles[] = {"de ", "van ", "von ", "der ", "den ", "zu ", "da ", "di ", "le ", "la "};
  size_t i, n;
  for (i = 0; i < sizeof kParticles / sizeof kParticles[0]; ++i)
    if (!strncmp(s, kParticles[i], n = strlen(kParticles[i]))) return n;
  return 0;
}

int introduced_name(const char *text, char *out, size_t size) {
  static const char *const kPhrases[] = {"this is ", "This is ", "my name is ", "My name is ", "I am ", "I'm "};
  size_t i;
  for (i = 0; i < sizeof kPhrases / sizeof kPhrases[0]; ++i) {
    const char *hit;
    for (hit = strstr(text, kPhrases[i]); hit; hit = strstr(hit + 1, kPhrases[i])) {
      /* Up to three capitalised words, particles between them ("Jan de Vries"). */
      const char *p = hit + strlen(kPhrases[i]), *start = NULL, *end = NULL;
      size_t n, words = 0;
      if (hit > text && isalpha((unsigned char)hit[-1])) continue;
      while (words < 3) {
        const char *q = p;
        while (words > 0 && (n = particle(q)) > 0) q += n;
        if (!(n = name_word(q))) break;
        if (!start) start = q;
        end = q + n;
        ++words;
        if (*end != ' ') break;
        p = end + 1;
      }
      if (!start) continue; /* "I am sorry", "this is urgent": no name */
      if ((size_t)(end - start) >= size) return 0;
      memcpy(out, start, (size_t)(end - start));
      out[end - start] = '\0';
      return 1;
    }
  }
  return 0;
}

int last_amount(const char *text, char *out, size_t size) {
  const char *p, *last = NULL;
  size_t n, last_n = 0;
  for (p = text; *p; ++p) {
    int starts = !strncmp(p, kEuro, 3) || (isdigit((unsigned char)*p) && (p == text || !isdigit((unsigned char)p[-1])));
    if (starts && (n = amount_at(p)) > 0) {
      last = p;
      last_n = n;
      p += n - 1;
    }
  }
  if (!last || last_n >= size) return 0;
  memcpy(out, last, last_n);
  out[last_n] = '\0';
  return 1;
}

/* Phrases that state an order's status, and the status they state. */
static const struct {
  const char *phrase, *status;
} kStatusPhrases[] = {
    {"is on its way", "shipped"},        {"has been shipped", "shipped"}, {"was shipped", "shipped"},
    {"has been delivered", "delivered"}, {"was delivered", "delivered"},  {"has been cancelled", "cancelled"},
    {"was cancelled", "cancelled"},
};

/* Whether the n bytes at `sentence` state a status other than `status`. */
static int contradicts(const char *sentence, size_t n, const char *status) {
  size_t i, k, len;
  for (i = 0; i < sizeof kStatusPhrases / sizeof kStatusPhrases[0]; ++i) {
    len = strlen(kStatusPhrases[i].phrase);
    for (k = 0; k + len <= n; ++k)
      if (!strncmp(sentence + k, kStatusPhrases[i].phrase, len) && strcmp(kStatusPhrases[i].status, status)) return 1;
  }
  return 0;
}

/* Drops the sentences of `b` that contradict `status`; returns whether any was. */
static int drop_contradictions(buffer *b, const char *status) {
  size_t start = 0, end, kept = 0;
  int dropped = 0;
  while (start < b->length) {
    for (end = start; end < b->length; ++end)
      if ((b->data[end] == '.' || b->data[end] == '!' || b->data[end] == '?') &&
          (end + 1 == b->length || b->data[end + 1] == ' '))
        break;
    end = end < b->length ? end + 1 : end; /* the sentence with its final mark */
    if (contradicts(b->data + start, end - start, status)) {
      dropped = 1;
    } else {
      memmove(b->data + kept, b->data + start, end - start);
      kept += end - start;
    }
    start = end;
  }
  while (kept && b->data[kept - 1] == ' ') --kept;
  b->length = kept;
  b->data[kept] = '\0';
  if (kept && b->data[0] == ' ') memmove(b->data, b->data + 1, kept--);
  return dropped;
}

int ground_reply(const char *reply, const grounding_slots *slots, char **out) {
  buffer b = {NULL, 0, 0};
  const char *p = reply;
  int changed = 0;
  *out = NULL;
  while (*p) {
    size_t n = 0;
    const char *fill = NULL;
    int at_number = isdigit((unsigned char)*p) && (p == reply || !isdigit((unsigned char)p[-1]));
    if ((at_number || !strncmp(p, kEuro, 3)) && (n = amount_at(p)) > 0) {
      /* a euro amount */
      if (!mentions(slots->known, p, n)) {
        if (!slots->amount) goto unanswerable;
        fill = slots->amount;
      }
    } else if (at_number && (n = digits(p)) >= 4 && n <= 9 && !(p[n] == ':' && isdigit((unsigned char)p[n + 1]))) {
      /* an order number: the shop's have 7 digits, a model may write any long number in their place */
      if (!mentions(slots->known, p, n)) {
        if (!slots->order) goto unanswerable;
        fill = slots->order;
      }
    } else if ((!strncmp(p, "Mr ", 3) || !strncmp(p, "Ms ", 3)) && (p == reply || !isalpha((unsigned char)p[-1])) &&
               isupper((unsigned char)p[3])) {
      /* a customer's name: "Mr Lange" */
      n = 3;
      while (isalpha((unsigned char)p[n]) || (unsigned char)p[n] >= 0x80) ++n;
      if (!mentions(slots->known, p + 3, n - 3)) {
        if (slots->name && *slots->name) {
          fill = slots->name; /* title and name both invented: the customer's own name instead */
        } else {
          if (b.length && b.data[b.length - 1] == ' ') b.data[--b.length] = '\0';
          fill = "";
        }
      }
    } else {
      n = at_number ? digits(p) : 1;
    }
    if (fill) changed = 1;
    if (append(&b, fill ? fill : p, fill ? strlen(fill) : n)) goto oom;
    p += n;
  }
  if (b.data && slots->status && drop_contradictions(&b, slots->status)) changed = 1;
  if (!changed) {
    free(b.data);
    return GROUNDING_UNCHANGED;
  }
  *out = b.data;
  return GROUNDING_CHANGED;
unanswerable:
  free(b.data);
  return GROUNDING_UNANSWERABLE;
oom:
  free(b.data);
  return -1;
}
