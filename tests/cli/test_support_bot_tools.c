/* The support bot's order tool and reply grounding (samples/support-bot/
 * order_tool.c, grounding.c), from C: what a model reply may and may not
 * carry to the customer, and the order table's parsing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grounding.h"
#include "order_tool.h"

static int failures = 0;

#define EXPECT(cond)                                                      \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                         \
    }                                                                     \
  } while (0)

/* ground_reply's result, and its text when changed (else the reply). */
static int ground_named(const char *reply, const char *known, const char *order, const char *amount, const char *status,
                        const char *name, char *text, size_t size) {
  grounding_slots slots;
  char *out = NULL;
  int g;
  slots.known = known;
  slots.order = order;
  slots.amount = amount;
  slots.status = status;
  slots.name = name;
  g = ground_reply(reply, &slots, &out);
  snprintf(text, size, "%s", g == GROUNDING_CHANGED ? out : reply);
  free(out);
  return g;
}

static int ground(const char *reply, const char *known, const char *order, const char *amount, const char *status,
                  char *text, size_t size) {
  return ground_named(reply, known, order, amount, status, NULL, text, size);
}

static void test_grounding(void) {
  const char *policy = "Standard shipping costs €4.90. It is free for orders from €50. Express costs €9.90.";
  char known[512], text[512], amount[32];
  snprintf(known, sizeof known, "%s\nWhere is my order 9019917? Hi, this is Ida Brandt.", policy);

  /* an order number nobody gave becomes the conversation's */
  EXPECT(ground("Your order 4564714 is on its way.", known, "9019917", NULL, NULL, text, sizeof text) ==
         GROUNDING_CHANGED);
  EXPECT(!strcmp(text, "Your order 9019917 is on its way."));
  EXPECT(ground("The refund for order 6704 takes 5 days.", known, "9019917", NULL, NULL, text, sizeof text) ==
         GROUNDING_CHANGED);
  EXPECT(!strcmp(text, "The refund for order 9019917 takes 5 days."));
  /* ... and without one, the reply cannot be sent */
  EXPECT(ground("Your order 4564714 is on its way.", policy, NULL, NULL, NULL, text, sizeof text) ==
         GROUNDING_UNANSWERABLE);
  /* numbers the conversation gave stay, times are no order numbers */
  EXPECT(ground("Order 9019917: we open at 14:00 and shipping costs €4.90.", known, NULL, NULL, NULL, text,
                sizeof text) == GROUNDING_UNCHANGED);
  /* amounts: the customer's, as written; "€5" is not "€50" */
  EXPECT(ground("Your order of €99.00 ships for free.", known, NULL, "107,49 €", NULL, text, sizeof text) ==
         GROUNDING_CHANGED);
  EXPECT(!strcmp(text, "Your order of 107,49 € ships for free."));
  EXPECT(ground("It costs €5.", known, NULL, NULL, NULL, text, sizeof text) == GROUNDING_UNANSWERABLE);
  EXPECT(ground("It is free from €50.", known, NULL, NULL, NULL, text, sizeof text) == GROUNDING_UNCHANGED);
  /* names: only those the customer gave */
  EXPECT(ground("Hello Mr Lange! We can help.", known, NULL, NULL, NULL, text, sizeof text) == GROUNDING_CHANGED);
  EXPECT(!strcmp(text, "Hello! We can help."));
  EXPECT(ground("Hello Ms Brandt! We can help.", known, NULL, NULL, NULL, text, sizeof text) == GROUNDING_UNCHANGED);
  /* ... and with the customer's name known, an invented one becomes it, without a guessed title */
  EXPECT(ground_named("Hello Mr Lange! We can help.", known, NULL, NULL, NULL, "Ida Brandt", text, sizeof text) ==
         GROUNDING_CHANGED);
  EXPECT(!strcmp(text, "Hello Ida Brandt! We can help."));
  EXPECT(ground_named("Hello Ms Brandt!", known, NULL, NULL, NULL, "Ida Brandt", text, sizeof text) ==
         GROUNDING_UNCHANGED);
  {
    char name[64];
    EXPECT(introduced_name("Hi, this is Ida Brandt. Where is my order?", name, sizeof name) &&
           !strcmp(name, "Ida Brandt"));
    EXPECT(introduced_name("Hello, my name is Müller-Lüdenscheidt, order 9019917.", name, sizeof name) &&
           !strcmp(name, "Müller-Lüdenscheidt"));
    EXPECT(introduced_name("I am Jan de Vries", name, sizeof name) && !strcmp(name, "Jan de Vries"));
    EXPECT(introduced_name("I'm Brandt.", name, sizeof name) && !strcmp(name, "Brandt"));
    EXPECT(!introduced_name("I am sorry, this is urgent. Thanks.", name, sizeof name));
    EXPECT(!introduced_name("Where is my order 9019917?", name, sizeof name));
    EXPECT(!introduced_name("Hi, this is Ida Brandtsomeverylongsurnamethatdoesnotfitintothebuffer.", name, 8));
  }
  /* a status the table does not give */
  EXPECT(ground("Your order 9019917 is on its way. Returns are free.", known, "9019917", NULL, "processing", text,
                sizeof text) == GROUNDING_CHANGED);
  EXPECT(!strcmp(text, "Returns are free."));
  EXPECT(ground("Your order 9019917 is on its way.", known, "9019917", NULL, "shipped", text, sizeof text) ==
         GROUNDING_UNCHANGED);
  EXPECT(ground("It can be cancelled as long as it has not been shipped.", known, "9019917", NULL, "shipped", text,
                sizeof text) == GROUNDING_UNCHANGED);
  EXPECT(ground("", known, NULL, NULL, "shipped", text, sizeof text) == GROUNDING_UNCHANGED);

  EXPECT(last_amount("I paid €12.50 and then 107,49 € again.", amount, sizeof amount) && !strcmp(amount, "107,49 €"));
  EXPECT(last_amount("9.90 EUR", amount, sizeof amount) && !strcmp(amount, "9.90 EUR"));
  EXPECT(!last_amount("order 9019917 at 14:00", amount, sizeof amount));
}

static void test_order_tool(const char *table_path, const char *dir) {
  order_table table;
  char ids[4][ORDER_ID_DIGITS + 1], text[512], bad[1024];
  const order *row;
  FILE *f;
  EXPECT(find_order_ids("orders 1234567, 12345678, 123456 and 7654321; again 1234567", ids, 4) == 2);
  EXPECT(!strcmp(ids[0], "1234567") && !strcmp(ids[1], "7654321"));
  EXPECT(find_order_ids("1111111 2222222 3333333", ids, 2) == 2);

  EXPECT(order_table_load(table_path, &table) == 0);
  EXPECT(table.count >= 20);
  EXPECT((row = order_table_find(&table, "9019917")) != NULL);
  EXPECT(order_table_find(&table, "1234567") == NULL);
  if (row) {
    EXPECT(!strcmp(row->status, "shipped") && !strcmp(row->carrier, "DHL"));
    order_facts("9019917", row, FACTS_GERMAN, text, sizeof text);
    EXPECT(!strcmp(text,
                   "Ihre Bestellung 9019917 wurde am 2. Dezember mit DHL versandt und sollte innerhalb von 2 bis "
                   "4 Werktagen ankommen."));
    order_facts("9019917", row, FACTS_ENGLISH, text, sizeof text);
    EXPECT(!strncmp(text, "Your order 9019917 was shipped on 2 December with DHL", 52));
    order_result_json("9019917", row, text, sizeof text);
    EXPECT(strstr(text, "\"status\": \"shipped\"") && strstr(text, "\"amount\": \"€107.49\""));
  }
  order_result_json("1234567", NULL, text, sizeof text);
  EXPECT(!strcmp(text, "{\"order_id\": \"1234567\", \"error\": \"no such order\"}"));
  order_facts("1234567", NULL, FACTS_ENGLISH, text, sizeof text);
  EXPECT(!strcmp(text, "I cannot find an order 1234567. Please check the order number."));
  order_table_free(&table);

  /* a malformed row and a missing file are refused */
  snprintf(bad, sizeof bad, "%s/bad_orders.csv", dir);
  if ((f = fopen(bad, "w"))) {
    fputs("# comment\norder,product,amount,status,date,carrier\n123,too short\n", f);
    fclose(f);
    EXPECT(order_table_load(bad, &table) == -1 && table.rows == NULL);
    remove(bad);
  }
  EXPECT(order_table_load("/nonexistent/orders.csv", &table) == -1);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s ORDERS.csv TMPDIR\n", argv[0]);
    return 2;
  }
  test_grounding();
  test_order_tool(argv[1], argv[2]);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("support bot tools: all checks passed\n");
  return 0;
}
