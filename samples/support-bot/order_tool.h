/*
 * The support bot's one tool: the status of an order, looked up in a small
 * local table (models/orders.csv) instead of letting a dialogue model invent
 * order data. Plain C, no libparley: it is the shop's side of a tool call.
 */
#ifndef SUPPORT_BOT_ORDER_TOOL_H
#define SUPPORT_BOT_ORDER_TOOL_H

#include <stddef.h>

/* Order numbers are 7 digits (the shop's format and the demo corpus'). */
#define ORDER_ID_DIGITS 7

typedef struct order {
  char id[ORDER_ID_DIGITS + 1];
  char product[64];
  char amount[16]; /* EUR, "107.49" */
  char status[16]; /* processing | shipped | delivered | cancelled | returned */
  char date[16];   /* of that status, ISO: "2026-12-02" */
  char carrier[16];
} order;

typedef struct order_table {
  order *rows;
  size_t count;
} order_table;

/* The tool's definition as the chat template takes it (a JSON array). */
extern const char kOrderToolJson[];

/* Reads a CSV table (header "order,product,amount,status,date,carrier"; '#'
 * lines are comments). Returns 0, or -1 with the file and line on stderr. */
int order_table_load(const char *path, order_table *table);
void order_table_free(order_table *table);
const order *order_table_find(const order_table *table, const char *id);

/* Order numbers in `text`: runs of exactly ORDER_ID_DIGITS digits, in order,
 * without repeats, at most `max`. Returns their number. */
size_t find_order_ids(const char *text, char (*ids)[ORDER_ID_DIGITS + 1], size_t max);

/* The tool's result for order `id` (`row` NULL: not in the table) as JSON,
 * the form a tool message carries. Truncated to `size`. */
void order_result_json(const char *id, const order *row, char *out, size_t size);

/* The same facts as a sentence for the customer, in English or German: the
 * shop's own words, written in both languages rather than machine-translated. */
typedef enum facts_language { FACTS_ENGLISH, FACTS_GERMAN } facts_language;
void order_facts(const char *id, const order *row, facts_language language, char *out, size_t size);

#endif
