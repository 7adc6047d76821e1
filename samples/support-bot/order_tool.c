/* The order-status tool of the support bot (see order_tool.h). */
#include "order_tool.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char kOrderToolJson[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"order_status\", "
    "\"description\": \"Look up the status of a Nordwind Shop order by its 7-digit order number.\", "
    "\"parameters\": {\"type\": \"object\", \"properties\": {\"order_id\": {\"type\": \"string\", "
    "\"description\": \"The order number, 7 digits.\"}}, \"required\": [\"order_id\"]}}}]";

/* Copies CSV field `index` of `line` (no quoting: the table has none) into `out`. */
static int field(const char *line, int index, char *out, size_t size) {
  const char *end;
  size_t n;
  for (; index > 0; --index)
    if (!(line = strchr(line, ',')))
      return -1;
    else
      ++line;
  end = line + strcspn(line, ",\r\n");
  n = (size_t)(end - line);
  if (n >= size) return -1;
  memcpy(out, line, n);
  out[n] = '\0';
  return 0;
}

static int is_order_id(const char *s) {
  size_t i;
  for (i = 0; i < ORDER_ID_DIGITS; ++i)
    if (!isdigit((unsigned char)s[i])) return 0;
  return s[ORDER_ID_DIGITS] == '\0';
}

int order_table_load(const char *path, order_table *table) {
  FILE *f = fopen(path, "r");
  char line[512];
  size_t number = 0, cap = 0;
  int header = 1;
  table->rows = NULL;
  table->count = 0;
  if (!f) {
    fprintf(stderr, "support-bot: cannot read the order table %s\n", path);
    return -1;
  }
  while (fgets(line, sizeof line, f)) {
    order o;
    ++number;
    if (line[0] == '#' || line[0] == '\n') continue;
    if (header) { /* the column names */
      header = 0;
      continue;
    }
    memset(&o, 0, sizeof o);
    if (field(line, 0, o.id, sizeof o.id) || field(line, 1, o.product, sizeof o.product) ||
        field(line, 2, o.amount, sizeof o.amount) || field(line, 3, o.status, sizeof o.status) ||
        field(line, 4, o.date, sizeof o.date) || field(line, 5, o.carrier, sizeof o.carrier) || !is_order_id(o.id)) {
      fprintf(stderr, "support-bot: %s:%zu: not an order row (order,product,amount,status,date,carrier)\n", path,
              number);
      order_table_free(table);
      fclose(f);
      return -1;
    }
    if (table->count == cap) {
      order *grown = (order *)realloc(table->rows, (cap = cap ? 2 * cap : 32) * sizeof *grown);
      if (!grown) {
        order_table_free(table);
        fclose(f);
        return -1;
      }
      table->rows = grown;
    }
    table->rows[table->count++] = o;
  }
  fclose(f);
  return 0;
}

void order_table_free(order_table *table) {
  free(table->rows);
  table->rows = NULL;
  table->count = 0;
}

const order *order_table_find(const order_table *table, const char *id) {
  size_t i;
  for (i = 0; i < table->count; ++i)
    if (!strcmp(table->rows[i].id, id)) return &table->rows[i];
  return NULL;
}

size_t find_order_ids(const char *text, char (*ids)[ORDER_ID_DIGITS + 1], size_t max) {
  size_t count = 0, run, k;
  const char *p = text;
  while (*p && count < max) {
    if (!isdigit((unsigned char)*p)) {
      ++p;
      continue;
    }
    for (run = 0; isdigit((unsigned char)p[run]); ++run) {
    }
    if (run == ORDER_ID_DIGITS) {
      for (k = 0; k < count && strncmp(ids[k], p, ORDER_ID_DIGITS); ++k) {
      }
      if (k == count) {
        memcpy(ids[count], p, ORDER_ID_DIGITS);
        ids[count++][ORDER_ID_DIGITS] = '\0';
      }
    }
    p += run;
  }
  return count;
}

void order_result_json(const char *id, const order *row, char *out, size_t size) {
  if (!row)
    snprintf(out, size, "{\"order_id\": \"%s\", \"error\": \"no such order\"}", id);
  else
    snprintf(out, size,
             "{\"order_id\": \"%s\", \"product\": \"%s\", \"amount\": \"€%s\", \"status\": \"%s\", \"date\": \"%s\", "
             "\"carrier\": \"%s\"}",
             row->id, row->product, row->amount, row->status, row->date, row->carrier);
}

/* "2026-12-02" as "2 December" or "2. Dezember". */
static void format_date(const char *iso, facts_language language, char *out, size_t size) {
  static const char *const en[] = {"January", "February", "March",     "April",   "May",      "June",
                                   "July",    "August",   "September", "October", "November", "December"};
  static const char *const de[] = {"Januar", "Februar", "März",      "April",   "Mai",      "Juni",
                                   "Juli",   "August",  "September", "Oktober", "November", "Dezember"};
  int year, month, day;
  if (sscanf(iso, "%4d-%2d-%2d", &year, &month, &day) != 3 || month < 1 || month > 12)
    snprintf(out, size, "%s", iso);
  else if (language == FACTS_GERMAN)
    snprintf(out, size, "%d. %s", day, de[month - 1]);
  else
    snprintf(out, size, "%d %s", day, en[month - 1]);
}

void order_facts(const char *id, const order *row, facts_language language, char *out, size_t size) {
  int de = language == FACTS_GERMAN;
  char date[32];
  if (!row) {
    snprintf(out, size,
             de ? "Ich kann keine Bestellung %s finden. Bitte prüfen Sie die Bestellnummer."
                : "I cannot find an order %s. Please check the order number.",
             id);
    return;
  }
  format_date(row->date, language, date, sizeof date);
  if (!strcmp(row->status, "processing"))
    snprintf(
        out, size,
        de ? "Ihre Bestellung %s vom %s wurde noch nicht versandt." : "Your order %s from %s has not been shipped yet.",
        row->id, date);
  else if (!strcmp(row->status, "shipped"))
    snprintf(out, size,
             de ? "Ihre Bestellung %s wurde am %s mit %s versandt und sollte innerhalb von 2 bis 4 Werktagen ankommen."
                : "Your order %s was shipped on %s with %s and should arrive within 2 to 4 business days.",
             row->id, date, row->carrier);
  else if (!strcmp(row->status, "delivered"))
    snprintf(out, size,
             de ? "Ihre Bestellung %s wurde am %s von %s geliefert." : "Your order %s was delivered on %s by %s.",
             row->id, date, row->carrier);
  else if (!strcmp(row->status, "cancelled"))
    snprintf(out, size, de ? "Ihre Bestellung %s wurde am %s storniert." : "Your order %s was cancelled on %s.",
             row->id, date);
  else if (!strcmp(row->status, "returned"))
    snprintf(out, size,
             de ? "Die Rücksendung der Bestellung %s ist am %s in unserem Lager angekommen."
                : "The return of order %s arrived at our warehouse on %s.",
             row->id, date);
  else
    snprintf(out, size, de ? "Der Status der Bestellung %s: %s." : "The status of order %s is: %s.", row->id,
             row->status);
}
