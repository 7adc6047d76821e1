/*
 * Checks a dialogue model's reply against what the conversation knows (the
 * policy, the customer's messages, the order tool's results) before a
 * customer sees it. A small model writes an order number, an amount or a
 * customer's name where one belongs, but not always the right one (the demo
 * model, 3.7 M parameters, copies the customer's order number in under half
 * of its held-out replies and writes one from its training data instead):
 *  - an order number (4 to 9 digits) or euro amount the conversation never mentioned is
 *    replaced by the one the conversation is about (the customer's latest);
 *    with none to take, the reply is not sent (the bot asks instead);
 *  - "Mr X" / "Ms X" with a name the customer never gave becomes the name the
 *    customer introduced themselves with ("Ida Brandt": the model's title
 *    was as invented as its name, and nothing here guesses one), else it is
 *    dropped;
 *  - a sentence that gives the order a status the table does not ("is on
 *    its way" for an order not shipped yet) is dropped.
 * Nothing is ever made up here: every value written comes from the
 * conversation. Plain C, no libparley.
 */
#ifndef SUPPORT_BOT_GROUNDING_H
#define SUPPORT_BOT_GROUNDING_H

#include <stddef.h>

typedef struct grounding_slots {
  const char *known;  /* everything the conversation knows, as text */
  const char *order;  /* the order number it is about, or NULL */
  const char *amount; /* the customer's latest euro amount as written ("107,49 €"), or NULL */
  const char *status; /* that order's status in the table ("shipped"), or NULL */
  const char *name;   /* the name the customer introduced themselves with (introduced_name), or NULL */
} grounding_slots;

typedef enum grounding_result {
  GROUNDING_UNCHANGED = 0,
  GROUNDING_CHANGED = 1,     /* *out holds the corrected reply (free it) */
  GROUNDING_UNANSWERABLE = 2 /* a slot with nothing to fill it: ask the customer */
} grounding_result;

/* Returns GROUNDING_*, or -1 when out of memory. */
int ground_reply(const char *reply, const grounding_slots *slots, char **out);

/* The name in a customer's introduction in `text` ("this is Ida Brandt",
 * "my name is Brandt", "I am Jan de Vries", "I'm ..."): up to three
 * capitalised words after the phrase, with surname particles between them.
 * Copies it into `out` and returns 1, or returns 0. */
int introduced_name(const char *text, char *out, size_t size);

/* The last euro amount in `text` ("€107.49", "107,49 €", "107.49 EUR"):
 * copies it into `out` and returns 1, or returns 0. */
int last_amount(const char *text, char *out, size_t size);

#endif
