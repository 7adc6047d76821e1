#!/usr/bin/env python3
"""Synthetic training data for the Parley support-bot demo models.

Writes, into --out (default: build/demo-train/corpus under the repo root):

  train.en / train.de, test.en / test.de
      Line-aligned English/German sentence pairs from the customer service of
      the fictional "Nordwind Shop" (customer questions and agent answers).
      The test split only uses slot values that never occur in train (held-out
      surnames, first names, product model names, dates, amounts and an order
      number range) and, for product templates, template/product-category
      combinations that are reserved for test. A BLEU score on it therefore
      measures slot copying and template generalisation, not memorisation.

  dialogue_train.jsonl / dialogue_test.jsonl
      English customer/agent conversations (one or two turns) in which the
      agent answers according to policy.txt and repeats the order number,
      amount or product from the question. Each assistant turn carries a list
      of "checks": substrings a correct answer must contain. The test split
      uses held-out question wordings as well as held-out slot values.

Everything is driven by one seeded random.Random, so the output is
byte-identical for a given --seed and sizes.
"""

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

# ---------------------------------------------------------------------------
# Slot values. The last entries of each pool are reserved for the test split.
# ---------------------------------------------------------------------------

SURNAMES = [
    "Weber", "Schmidt", "Meyer", "Wagner", "Becker", "Hoffmann", "Schulz", "Koch", "Richter", "Klein",
    "Wolf", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Werner",
    "Krause", "Lehmann", "Köhler", "Maier", "Huber", "Kaiser", "Fuchs", "Peters", "Lang", "Scholz",
    "Möller", "Weiß", "Jung", "Hahn", "Vogel", "Friedrich", "Keller", "Günther", "Frank", "Berger",
    "Winkler", "Roth", "Beck", "Lorenz", "Baumann", "Franke", "Albrecht", "Schuster", "Simon", "Ludwig",
    "Böhm", "Winter", "Kraus", "Martin", "Schumacher", "Krämer", "Vogt", "Stein", "Jäger", "Otto",
    # held out for test
    "Sommer", "Groß", "Seidel", "Heinrich", "Brandt", "Haas", "Schreiber", "Graf", "Schulte", "Dietrich",
]
N_TEST_SURNAMES = 10

FEMALE_FIRST = ["Anna", "Laura", "Julia", "Sarah", "Lisa", "Katrin", "Sabine", "Petra", "Claudia", "Nina",
                "Sophie", "Lena", "Marie", "Emma", "Hannah", "Mia", "Leonie", "Clara",
                "Greta", "Ida", "Frieda"]           # last 3 held out
MALE_FIRST = ["Thomas", "Michael", "Andreas", "Stefan", "Markus", "Jan", "Tobias", "Felix", "Lukas", "Jonas",
              "Paul", "David", "Daniel", "Peter", "Frank", "Martin", "Sebastian", "Florian",
              "Anton", "Emil", "Oskar"]          # last 3 held out
N_TEST_FIRST = 3

# (English singular, English plural, German singular, German plural, German gender)
CATEGORIES = [
    ("desk lamp", "desk lamps", "Schreibtischlampe", "Schreibtischlampen", "f"),
    ("kettle", "kettles", "Wasserkocher", "Wasserkocher", "m"),
    ("coffee machine", "coffee machines", "Kaffeemaschine", "Kaffeemaschinen", "f"),
    ("backpack", "backpacks", "Rucksack", "Rucksäcke", "m"),
    ("rain jacket", "rain jackets", "Regenjacke", "Regenjacken", "f"),
    ("office chair", "office chairs", "Bürostuhl", "Bürostühle", "m"),
    ("blender", "blenders", "Standmixer", "Standmixer", "m"),
    ("frying pan", "frying pans", "Bratpfanne", "Bratpfannen", "f"),
    ("toaster", "toasters", "Toaster", "Toaster", "m"),
    ("bed sheet", "bed sheets", "Bettlaken", "Bettlaken", "n"),
    ("pillow", "pillows", "Kopfkissen", "Kopfkissen", "n"),
    ("wall clock", "wall clocks", "Wanduhr", "Wanduhren", "f"),
    ("keyboard", "keyboards", "Tastatur", "Tastaturen", "f"),
    ("monitor", "monitors", "Monitor", "Monitore", "m"),
    ("T-shirt", "T-shirts", "T-Shirt", "T-Shirts", "n"),
    ("water bottle", "water bottles", "Trinkflasche", "Trinkflaschen", "f"),
    ("umbrella", "umbrellas", "Regenschirm", "Regenschirme", "m"),
    ("teapot", "teapots", "Teekanne", "Teekannen", "f"),
    ("bookshelf", "bookshelves", "Bücherregal", "Bücherregale", "n"),
    ("towel", "towels", "Handtuch", "Handtücher", "n"),
    ("suitcase", "suitcases", "Koffer", "Koffer", "m"),
    ("bicycle helmet", "bicycle helmets", "Fahrradhelm", "Fahrradhelme", "m"),
    ("scarf", "scarves", "Schal", "Schals", "m"),
    ("doormat", "doormats", "Fußmatte", "Fußmatten", "f"),
]

# Product line names, written the same in both languages ("the Aurora kettle" /
# "der Aurora-Wasserkocher"), so unseen ones can be copied through.
MODEL_NAMES = [
    "Aurora", "Fjord", "Kiruna", "Lumo", "Baltic", "Sola", "Vento", "Nimbus", "Terra", "Polar",
    "Mira", "Linde", "Orbit", "Atlas", "Zephyr", "Delta", "Nova", "Pico", "Sienna", "Tundra",
    "Vega", "Alba", "Borea", "Cirrus", "Dune", "Elbe", "Flora", "Granit", "Havel", "Isar",
    # held out for test
    "Kobalt", "Mosel", "Quarz", "Saale", "Weser", "Zinnia",
]
N_TEST_MODELS = 6

MONTHS_EN = ["January", "February", "March", "April", "May", "June", "July", "August",
             "September", "October", "November", "December"]
MONTHS_DE = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
             "September", "Oktober", "November", "Dezember"]

# German article / pronoun forms by grammatical gender.
DE_FORMS = {
    #       nom    acc    dat    Ihr-nom Ihr-acc mein-acc ein-acc  pron-nom pron-acc "one"    rel-acc
    "m": ("der", "den", "dem", "Ihr", "Ihren", "meinen", "einen", "er", "ihn", "einen", "den"),
    "f": ("die", "die", "der", "Ihre", "Ihre", "meine", "eine", "sie", "sie", "eine", "die"),
    "n": ("das", "das", "dem", "Ihr", "Ihr", "mein", "ein", "es", "es", "eines", "das"),
}


# More forms for the dialogue sentences: "mein" (nom.), "einem"/"einer" (dat.).
DE_MORE = {"m": ("Mein", "einem"), "f": ("Meine", "einer"), "n": ("Mein", "einem")}


# Invented names for the training pairs only: with a few dozen real names the
# translation model memorises them instead of learning to copy names through,
# and then fails on the held-out ones ("Ida Brandt" -> "Julia Bridand"). Wide
# letter combinations (clusters, "dt", "tz", "-ia" ...), one to three
# syllables, so that the models copy spellings they have never seen.
ONSETS = ["B", "Bl", "Br", "D", "Dr", "F", "Fr", "G", "Gr", "H", "J", "K", "Kl", "Kr", "L", "M", "N", "P", "Pf",
          "Qu", "R", "S", "Sch", "Schw", "Sp", "St", "T", "Tr", "V", "W", "Z"]
VOWELS = ["a", "e", "i", "o", "u", "ä", "ö", "ü", "au", "ei", "ie", "eu", "y"]
CODAS = ["", "", "n", "r", "l", "s", "t", "ck", "nd", "rt", "mann", "berg", "er", "dt", "ndt", "tz", "ch", "rich",
         "ss", "el", "ler", "ke", "ing", "nia", "x", "ld", "rz", "ow"]


def invented_name(rng):
    while True:
        name = rng.choice(ONSETS) + rng.choice(VOWELS)
        for _ in range(rng.choice([0, 1, 1, 2])):
            name += rng.choice(ONSETS).lower() + rng.choice(VOWELS)
        name += rng.choice(CODAS)
        if len(name) > 2 and name not in SURNAMES and name not in MODEL_NAMES:
            return name


def split_pool(pool, n_test, test):
    return pool[-n_test:] if test else pool[:-n_test]


def is_test_date(day, month):
    # About one date in eleven is reserved for the test split.
    return (3 * day + month) % 11 == 0


def is_test_amount(euros):
    return euros % 10 == 7


def german_product(model, de_sg, de_pl, g):
    """The German product slots of the templates ("p_acc": "den Aurora-Wasserkocher", ...)."""
    nom, acc, dat, your_nom, your_acc, my_acc, a_acc, it_nom, it_acc, one, rel = DE_FORMS[g]
    de_name = f"{model}-{de_sg}"
    return {
        "p_nom": f"{nom} {de_name}", "P_nom": f"{nom.capitalize()} {de_name}",
        "p_acc": f"{acc} {de_name}", "p_dat": f"{dat} {de_name}",
        "your_nom": f"{your_nom} {de_name}", "your_acc": f"{your_acc} {de_name}",
        "my_acc": f"{my_acc} {de_name}", "a_acc": f"{a_acc} {de_name}",
        "it_nom": it_nom, "it_acc": it_acc, "one": one, "rel": rel,
        "p_pl": f"{model}-{de_pl}",
        "my_nom": f"{DE_MORE[g][0]} {de_name}", "broken_dat": f"{DE_MORE[g][1]} kaputten {de_name}",
        "damaged_dat": f"{dat} beschädigten {de_name}",
    }


class SlotSampler:
    """Draws slot values for one split and renders them in English and German."""

    def __init__(self, rng, test, invent_names=False):
        self.rng = rng
        self.test = test
        self.invent_names = invent_names and not test
        self.surnames = split_pool(SURNAMES, N_TEST_SURNAMES, test)
        self.female = split_pool(FEMALE_FIRST, N_TEST_FIRST, test)
        self.male = split_pool(MALE_FIRST, N_TEST_FIRST, test)
        self.models = split_pool(MODEL_NAMES, N_TEST_MODELS, test)

    def order(self):
        # Train order numbers start with 1-8, test ones with 9.
        lo, hi = (9_000_000, 9_999_999) if self.test else (1_000_000, 8_999_999)
        return str(self.rng.randint(lo, hi))

    def date(self):
        while True:
            month = self.rng.randint(1, 12)
            day = self.rng.randint(1, 28)
            if is_test_date(day, month) == self.test:
                return f"{day} {MONTHS_EN[month - 1]}", f"{day}. {MONTHS_DE[month - 1]}"

    def amount(self, lo=5, hi=480):
        while True:
            euros = self.rng.randint(lo, hi)
            if is_test_amount(euros) == self.test:
                break
        cents = self.rng.choice(["00", "50", "90", "95", "99", "49"])
        return euros, cents, f"€{euros}.{cents}", f"{euros},{cents} €"

    def person(self):
        female = self.rng.random() < 0.5
        first = self.rng.choice(self.female if female else self.male)
        last = self.rng.choice(self.surnames)
        if self.invent_names and self.rng.random() < 0.7:
            last = invented_name(self.rng)
        if self.invent_names and self.rng.random() < 0.4:
            first = invented_name(self.rng)
        return female, first, last

    def product(self, category=None):
        en, en_pl, de, de_pl, g = category or self.rng.choice(CATEGORIES)
        model = self.rng.choice(self.models)
        if self.invent_names and self.rng.random() < 0.7:
            model = invented_name(self.rng)
        return model, en, en_pl, de, de_pl, g

    def draw(self, category=None):
        """All slots for one sentence pair: (English dict, German dict)."""
        female, first, last = self.person()
        date_en, date_de = self.date()
        _, _, amount_en, amount_de = self.amount()
        model, p_en, p_en_pl, p_de, p_de_pl, g = self.product(category)
        qty = str(self.rng.randint(2, 9))
        order = self.order()
        en = {
            "order": order, "date": date_en, "amount": amount_en, "qty": qty,
            "name": f"{'Ms' if female else 'Mr'} {last}", "fullname": f"{first} {last}",
            "dear": "Dear", "p": f"{model} {p_en}", "p_pl": f"{model} {p_en_pl}",
        }
        de = {
            "order": order, "date": date_de, "amount": amount_de, "qty": qty,
            "name": f"{'Frau' if female else 'Herr'} {last}", "fullname": f"{first} {last}",
            "dear": "Sehr geehrte" if female else "Sehr geehrter",
            **german_product(model, p_de, p_de_pl, g),
        }
        return en, de, model


# ---------------------------------------------------------------------------
# Parallel templates: (role, English, German). role "c" = customer, "a" = agent.
# Every template has at least one slot so that the test split can differ from
# train by slot values alone.
# ---------------------------------------------------------------------------

PARALLEL_TEMPLATES = [
    # orders and delivery
    ("c", "Where is my order {order}?", "Wo ist meine Bestellung {order}?"),
    ("c", "I ordered the {p} on {date}, but it has not arrived yet.",
          "Ich habe {p_acc} am {date} bestellt, aber {it_nom} ist noch nicht angekommen."),
    ("c", "When will order {order} be delivered?", "Wann wird die Bestellung {order} geliefert?"),
    ("c", "Could you tell me the status of order {order}, please?",
          "Können Sie mir bitte den Status der Bestellung {order} mitteilen?"),
    ("c", "My order number is {order}.", "Meine Bestellnummer ist {order}."),
    ("c", "I would like to order {qty} {p_pl}.", "Ich möchte {qty} {p_pl} bestellen."),
    ("c", "I ordered {qty} {p_pl}, but I only received one.",
          "Ich habe {qty} {p_pl} bestellt, aber nur {one} erhalten."),
    ("c", "I received the wrong product. I ordered the {p}.",
          "Ich habe das falsche Produkt erhalten. Ich hatte {p_acc} bestellt."),
    ("c", "Is the {p} still available?", "Ist {p_nom} noch verfügbar?"),
    ("c", "How can I change the delivery address for order {order}?",
          "Wie kann ich die Lieferadresse für die Bestellung {order} ändern?"),
    ("c", "Can I get order {order} faster with express shipping?",
          "Kann ich die Bestellung {order} mit Expressversand schneller bekommen?"),
    ("c", "How much is shipping for an order of {amount}?",
          "Wie viel kostet der Versand bei einer Bestellung über {amount}?"),
    ("a", "Your order {order} was shipped on {date} and should arrive within 2 to 4 business days.",
          "Ihre Bestellung {order} wurde am {date} versandt und sollte innerhalb von 2 bis 4 Werktagen ankommen."),
    ("a", "Your {p} will be delivered on {date}.", "{your_nom} wird am {date} geliefert."),
    ("a", "The delivery of order {order} is delayed by one day.",
          "Die Lieferung der Bestellung {order} verzögert sich um einen Tag."),
    ("a", "The {qty} {p_pl} from order {order} were delivered on {date}.",
          "Die {qty} {p_pl} aus der Bestellung {order} wurden am {date} geliefert."),
    ("a", "Please check the status of order {order} in your account.",
          "Bitte prüfen Sie den Status der Bestellung {order} in Ihrem Konto."),
    ("a", "I am sorry for the delay, {name}.", "Entschuldigen Sie bitte die Verzögerung, {name}."),
    ("a", "The {p} is out of stock until {date}.", "{P_nom} ist bis zum {date} nicht vorrätig."),
    ("a", "The {p} costs {amount}.", "{P_nom} kostet {amount}."),
    ("a", "Express shipping for order {order} costs €9.90.",
          "Der Expressversand für die Bestellung {order} kostet 9,90 €."),
    ("a", "Shipping is free for your order of {amount}.",
          "Der Versand ist für Ihre Bestellung über {amount} kostenlos."),
    ("a", "Thank you for your order, {name}.", "Vielen Dank für Ihre Bestellung, {name}."),
    ("a", "Order {order} contains {qty} items and costs {amount} in total.",
          "Die Bestellung {order} enthält {qty} Artikel und kostet insgesamt {amount}."),
    # returns and refunds
    ("c", "I would like to return the {p}.", "Ich möchte {p_acc} zurückschicken."),
    ("c", "How can I return my {p}?", "Wie kann ich {my_acc} zurückschicken?"),
    ("c", "Can I still return order {order}? It was delivered on {date}.",
          "Kann ich die Bestellung {order} noch zurückschicken? Sie wurde am {date} geliefert."),
    ("c", "Can I exchange the {p} for a different colour?",
          "Kann ich {p_acc} gegen eine andere Farbe umtauschen?"),
    ("c", "When will I get my refund of {amount}?", "Wann bekomme ich meine Erstattung über {amount}?"),
    ("c", "I returned the {p} on {date}. When will I get my money back?",
          "Ich habe {p_acc} am {date} zurückgeschickt. Wann bekomme ich mein Geld zurück?"),
    ("c", "Has my refund for the {p} already been processed?",
          "Wurde meine Erstattung für {p_acc} schon bearbeitet?"),
    ("c", "I still have not received my refund of {amount} for order {order}.",
          "Ich habe meine Erstattung über {amount} für die Bestellung {order} immer noch nicht erhalten."),
    ("a", "You can return the {p} within 30 days of delivery.",
          "Sie können {p_acc} innerhalb von 30 Tagen nach der Lieferung zurückschicken."),
    ("a", "The return label for order {order} is free and can be found in your account under \"My Orders\".",
          "Das Rücksendeetikett für die Bestellung {order} ist kostenlos und befindet sich in Ihrem Konto "
          "unter \"Meine Bestellungen\"."),
    ("a", "We will refund {amount} to your original payment method within 5 business days.",
          "Wir erstatten {amount} innerhalb von 5 Werktagen auf Ihre ursprüngliche Zahlungsmethode."),
    ("a", "Thank you, {name}. Your refund for order {order} has been issued.",
          "Vielen Dank, {name}. Ihre Erstattung für die Bestellung {order} wurde veranlasst."),
    ("a", "{dear} {name}, your return for order {order} arrived at our warehouse on {date}.",
          "{dear} {name}, Ihre Rücksendung zur Bestellung {order} ist am {date} in unserem Lager angekommen."),
    ("a", "Our warehouse received the {p} on {date}.", "Unser Lager hat {p_acc} am {date} erhalten."),
    ("a", "The refund of {amount} will be credited to your credit card within 5 business days.",
          "Die Erstattung über {amount} wird Ihrer Kreditkarte innerhalb von 5 Werktagen gutgeschrieben."),
    ("a", "Please enter your order number {order} in the return form.",
          "Bitte geben Sie Ihre Bestellnummer {order} im Rücksendeformular ein."),
    # damaged and missing items
    ("c", "The {p} from order {order} arrived damaged.",
          "{P_nom} aus der Bestellung {order} ist beschädigt angekommen."),
    ("c", "The {p} I received does not work.", "{P_nom}, {rel} ich erhalten habe, funktioniert nicht."),
    ("a", "We are sorry that the {p} arrived damaged. We will send you a free replacement.",
          "Es tut uns leid, dass {p_nom} beschädigt angekommen ist. Wir schicken Ihnen kostenlos einen Ersatz."),
    ("a", "Please send us a photo of the damage for order {order} within 14 days.",
          "Bitte schicken Sie uns innerhalb von 14 Tagen ein Foto des Schadens für die Bestellung {order}."),
    ("a", "We will send you the {p} again free of charge.",
          "Wir schicken Ihnen {p_acc} kostenlos noch einmal zu."),
    # cancellations
    ("c", "Can I cancel my order {order}?", "Kann ich meine Bestellung {order} stornieren?"),
    ("c", "I would like to cancel the {p} from my order.", "Ich möchte {p_acc} aus meiner Bestellung stornieren."),
    ("a", "Your order {order} has been cancelled free of charge.",
          "Ihre Bestellung {order} wurde kostenlos storniert."),
    ("a", "Order {order} has already been shipped and can no longer be cancelled.",
          "Die Bestellung {order} wurde bereits versandt und kann nicht mehr storniert werden."),
    # payment
    ("c", "Can I pay for order {order} by invoice?", "Kann ich die Bestellung {order} per Rechnung bezahlen?"),
    ("c", "I paid {amount} by PayPal on {date}.", "Ich habe am {date} {amount} per PayPal bezahlt."),
    ("c", "I was charged {amount} twice for order {order}.",
          "Mir wurden für die Bestellung {order} zweimal {amount} berechnet."),
    ("a", "Yes, {name}, you can pay by credit card, PayPal, invoice or direct debit.",
          "Ja, {name}, Sie können per Kreditkarte, PayPal, Rechnung oder Lastschrift bezahlen."),
    ("a", "We have received your payment of {amount} for order {order}.",
          "Wir haben Ihre Zahlung über {amount} für die Bestellung {order} erhalten."),
    ("a", "Your invoice for order {order} is {amount}.", "Ihre Rechnung für die Bestellung {order} beträgt {amount}."),
    ("a", "Please pay the invoice of {amount} by {date}.", "Bitte bezahlen Sie die Rechnung über {amount} bis zum {date}."),
    # opening hours, account
    ("c", "Hello, my name is {fullname}. What are your opening hours?",
          "Hallo, mein Name ist {fullname}. Wie sind Ihre Öffnungszeiten?"),
    ("c", "This is {fullname}. I forgot my password.", "Hier ist {fullname}. Ich habe mein Passwort vergessen."),
    ("c", "My name is {fullname} and I want to change the email address of my account.",
          "Mein Name ist {fullname} und ich möchte die E-Mail-Adresse meines Kontos ändern."),
    ("a", "Hello {name}, our customer service is available Monday to Friday from 9:00 to 18:00.",
          "Hallo {name}, unser Kundenservice ist von Montag bis Freitag von 9:00 bis 18:00 Uhr erreichbar."),
    ("a", "{name}, you can change your email address under \"Account settings\".",
          "{name}, Sie können Ihre E-Mail-Adresse unter \"Kontoeinstellungen\" ändern."),
    ("a", "Your account has been updated, {name}.", "Ihr Konto wurde aktualisiert, {name}."),
    ("a", "We will call you back on {date}, {name}.", "Wir rufen Sie am {date} zurück, {name}."),
    ("a", "Can I help you with anything else, {name}?", "Kann ich Ihnen sonst noch helfen, {name}?"),
]

# The sentences the bot's dialogue models say and hear (INTENTS below), one
# sentence each, as the bot splits a reply before translating it. Without
# them the en->de model had never seen the answers it has to translate.
# Templates without a slot are training-only (the test split differs from
# train by slot values).
DIALOGUE_TEMPLATES = [
    # customer questions and follow-ups (the German customer's side, de->en)
    ("c", "My order {order} has not arrived yet.", "Meine Bestellung {order} ist noch nicht angekommen."),
    ("c", "Where is it?", "Wo ist sie?"),
    ("c", "What is the status of my order {order}?", "Wie ist der Status meiner Bestellung {order}?"),
    ("c", "Can you tell me when order {order} will arrive?",
          "Können Sie mir sagen, wann die Bestellung {order} ankommt?"),
    ("c", "I am still waiting for order {order}.", "Ich warte immer noch auf die Bestellung {order}."),
    ("c", "When will it be delivered?", "Wann wird sie geliefert?"),
    ("c", "Can I return the {p} from order {order}?", "Kann ich {p_acc} aus der Bestellung {order} zurückschicken?"),
    ("c", "How do I return order {order}?", "Wie schicke ich die Bestellung {order} zurück?"),
    ("c", "The {p} from order {order} does not fit.", "{P_nom} aus der Bestellung {order} passt nicht."),
    ("c", "Can I return it?", "Kann ich es zurückschicken?"),
    ("c", "I want to send back the {p} I got with order {order}.",
          "Ich möchte {p_acc} zurückschicken, {rel} ich mit der Bestellung {order} bekommen habe."),
    ("c", "Is it possible to return the {p} from my order {order}?",
          "Ist es möglich, {p_acc} aus meiner Bestellung {order} zurückzuschicken?"),
    ("c", "When will I get my refund for order {order}?", "Wann bekomme ich meine Erstattung für die Bestellung {order}?"),
    ("c", "How long does the refund for order {order} take?", "Wie lange dauert die Erstattung für die Bestellung {order}?"),
    ("c", "I returned the {p} from order {order}.", "Ich habe {p_acc} aus der Bestellung {order} zurückgeschickt."),
    ("c", "When will I be refunded?", "Wann wird mir der Betrag erstattet?"),
    ("c", "I sent back order {order}.", "Ich habe die Bestellung {order} zurückgeschickt."),
    ("c", "When do I get my money back?", "Wann bekomme ich mein Geld zurück?"),
    ("c", "Order {order} arrived with a broken {p}.", "Die Bestellung {order} kam mit {broken_dat} an."),
    ("c", "My {p} from order {order} is broken.", "{my_nom} aus der Bestellung {order} ist kaputt."),
    ("c", "What can I do?", "Was kann ich tun?"),
    ("c", "The {p} in order {order} was damaged when it arrived.",
          "{P_nom} in der Bestellung {order} war bei der Ankunft beschädigt."),
    ("c", "I want to cancel order {order}.", "Ich möchte die Bestellung {order} stornieren."),
    ("c", "Can I still cancel my order {order}?", "Kann ich meine Bestellung {order} noch stornieren?"),
    ("c", "Please cancel order {order}.", "Bitte stornieren Sie die Bestellung {order}."),
    ("c", "Is it too late to cancel order {order}?", "Ist es zu spät, die Bestellung {order} zu stornieren?"),
    ("c", "My cart is {amount}.", "Mein Warenkorb beträgt {amount}."),
    ("c", "Do I have to pay for shipping?", "Muss ich für den Versand bezahlen?"),
    ("c", "What does shipping cost if I order for {amount}?", "Was kostet der Versand, wenn ich für {amount} bestelle?"),
    ("c", "Is shipping free for an order of {amount}?", "Ist der Versand für eine Bestellung über {amount} kostenlos?"),
    ("c", "Can I get order {order} faster?", "Kann ich die Bestellung {order} schneller bekommen?"),
    ("c", "Is there a faster delivery option for my order {order}?",
          "Gibt es eine schnellere Lieferoption für meine Bestellung {order}?"),
    ("c", "Do you offer express shipping?", "Bieten Sie Expressversand an?"),
    ("c", "How fast is express delivery?", "Wie schnell ist die Expresslieferung?"),
    ("c", "What are your opening hours?", "Wie sind Ihre Öffnungszeiten?"),
    ("c", "When can I reach customer service?", "Wann kann ich den Kundenservice erreichen?"),
    ("c", "Are you open on Saturday?", "Haben Sie am Samstag geöffnet?"),
    ("c", "When is your customer service open?", "Wann ist Ihr Kundenservice erreichbar?"),
    ("c", "Which payment methods do you accept?", "Welche Zahlungsmethoden akzeptieren Sie?"),
    ("c", "Can I pay by invoice?", "Kann ich per Rechnung bezahlen?"),
    ("c", "Can I pay for order {order} with PayPal?", "Kann ich die Bestellung {order} mit PayPal bezahlen?"),
    ("c", "How can I pay for my order?", "Wie kann ich meine Bestellung bezahlen?"),
    ("c", "I forgot my password.", "Ich habe mein Passwort vergessen."),
    ("c", "I cannot log in to my account.", "Ich kann mich nicht in mein Konto einloggen."),
    ("c", "How can I reset my password?", "Wie kann ich mein Passwort zurücksetzen?"),
    ("c", "How can I change my delivery address?", "Wie kann ich meine Lieferadresse ändern?"),
    ("c", "I moved.", "Ich bin umgezogen."),
    ("c", "Where do I change my address?", "Wo ändere ich meine Adresse?"),
    ("c", "Can I change the email address of my account?", "Kann ich die E-Mail-Adresse meines Kontos ändern?"),
    ("c", "Where can I update my email address?", "Wo kann ich meine E-Mail-Adresse aktualisieren?"),
    ("c", "When will it arrive?", "Wann kommt sie an?"),
    ("c", "And how long does delivery take?", "Und wie lange dauert die Lieferung?"),
    ("c", "Can I return it instead?", "Kann ich sie stattdessen zurückschicken?"),
    ("c", "Can I send it back?", "Kann ich sie zurückschicken?"),
    ("c", "And when will I get my money back?", "Und wann bekomme ich mein Geld zurück?"),
    ("c", "How long does the refund take?", "Wie lange dauert die Erstattung?"),
    ("c", "It also arrived damaged.", "Sie ist auch beschädigt angekommen."),
    ("c", "What now?", "Was nun?"),
    ("c", "Can I still cancel it?", "Kann ich sie noch stornieren?"),
    ("c", "Can I cancel it?", "Kann ich sie stornieren?"),
    ("c", "Is there a faster option?", "Gibt es eine schnellere Option?"),
    ("c", "By the way, what are your opening hours?", "Übrigens, wie sind Ihre Öffnungszeiten?"),
    ("c", "When can I call you?", "Wann kann ich Sie anrufen?"),
    ("c", "How can I pay?", "Wie kann ich bezahlen?"),
    ("c", "Thanks!", "Danke!"),
    ("c", "Thank you, bye.", "Vielen Dank, tschüss."),
    ("c", "Great, thank you.", "Super, vielen Dank."),
    # agent answers (the English dialogue model's side, en->de)
    ("a", "Hello {name}!", "Hallo {name}!"),
    ("a", "Your order {order} is on its way.", "Ihre Bestellung {order} ist unterwegs."),
    ("a", "Standard shipping within Germany takes 2 to 4 business days, so it should arrive soon.",
          "Der Standardversand innerhalb Deutschlands dauert 2 bis 4 Werktage, daher sollte sie bald ankommen."),
    ("a", "Yes, you can return items within 30 days of delivery.",
          "Ja, Sie können Artikel innerhalb von 30 Tagen nach der Lieferung zurückschicken."),
    ("a", "The refund for order {order} goes back to your original payment method within 5 business days after "
          "the return arrives at our warehouse.",
          "Die Erstattung für die Bestellung {order} geht innerhalb von 5 Werktagen nach Eingang der Rücksendung "
          "in unserem Lager auf Ihre ursprüngliche Zahlungsmethode zurück."),
    ("a", "I am sorry to hear that.", "Das tut mir leid."),
    ("a", "Please send us a photo of the damaged {p} within 14 days of delivery and we will send a free "
          "replacement for order {order}.",
          "Bitte schicken Sie uns innerhalb von 14 Tagen nach der Lieferung ein Foto von {damaged_dat}, dann "
          "schicken wir Ihnen einen kostenlosen Ersatz für die Bestellung {order}."),
    ("a", "Order {order} can be cancelled free of charge as long as it has not been shipped.",
          "Die Bestellung {order} kann kostenlos storniert werden, solange sie noch nicht versandt wurde."),
    ("a", "If it has already been shipped, you can return it within 30 days of delivery.",
          "Wenn sie bereits versandt wurde, können Sie sie innerhalb von 30 Tagen nach der Lieferung zurückschicken."),
    ("a", "Shipping is free for orders from €50, so your order of {amount} ships for free.",
          "Ab 50 € ist der Versand kostenlos, daher wird Ihre Bestellung über {amount} kostenlos versandt."),
    ("a", "Standard shipping costs €4.90 for orders under €50, so your order of {amount} costs €4.90 for shipping.",
          # (not "... über {amount} 4,90 €": two amounts in a row read as one amount to the models)
          "Der Standardversand kostet 4,90 € für Bestellungen unter 50 €, daher kostet der Versand 4,90 € für "
          "Ihre Bestellung über {amount}."),
    ("a", "Yes, express shipping costs €9.90 and arrives the next business day if you order before 14:00.",
          "Ja, der Expressversand kostet 9,90 € und kommt am nächsten Werktag an, wenn Sie vor 14:00 Uhr bestellen."),
    ("a", "Our customer service is available Monday to Friday from 9:00 to 18:00 and Saturday from 10:00 to 14:00.",
          "Unser Kundenservice ist von Montag bis Freitag von 9:00 bis 18:00 Uhr und am Samstag von 10:00 bis "
          "14:00 Uhr erreichbar."),
    ("a", "We are closed on Sundays and public holidays.", "An Sonn- und Feiertagen haben wir geschlossen."),
    ("a", "We accept credit card, PayPal, invoice and direct debit.",
          "Wir akzeptieren Kreditkarte, PayPal, Rechnung und Lastschrift."),
    ("a", "Invoices are due within 14 days.", "Rechnungen sind innerhalb von 14 Tagen fällig."),
    ("a", "Please use the \"Forgot password\" link on the login page to set a new password.",
          "Bitte nutzen Sie den Link \"Passwort vergessen\" auf der Anmeldeseite, um ein neues Passwort festzulegen."),
    ("a", "You can change your email address and delivery address under \"Account settings\" in your account.",
          "Sie können Ihre E-Mail-Adresse und Ihre Lieferadresse in Ihrem Konto unter \"Kontoeinstellungen\" ändern."),
    ("a", "You are welcome!", "Gern geschehen!"),
    ("a", "Have a nice day.", "Einen schönen Tag noch."),
]
ALL_TEMPLATES = PARALLEL_TEMPLATES + DIALOGUE_TEMPLATES

# Optional sentence-level prefixes/suffixes; whole sentences, so no case fixes needed.
CUSTOMER_PREFIXES = [("", ""), ("", ""), ("", ""), ("Hello! ", "Hallo! "), ("Good morning. ", "Guten Morgen. "),
                     ("Hi, this is {fullname}. ", "Hallo, hier ist {fullname}. ")]
CUSTOMER_SUFFIXES = [("", ""), ("", ""), ("", ""), (" Thank you.", " Vielen Dank."),
                     (" Thanks in advance.", " Danke im Voraus."), (" Please help me.", " Bitte helfen Sie mir.")]
AGENT_PREFIXES = [("", ""), ("", ""), ("", ""), ("Thank you for your message. ", "Vielen Dank für Ihre Nachricht. "),
                  ("Thank you for your patience. ", "Vielen Dank für Ihre Geduld. ")]


def is_test_combo(template_id, category_index):
    # One in six template/category combinations is only ever used for test.
    return (7 * template_id + 5 * category_index) % 6 == 0


# The runtime's protected number spans (runtime/text/protect.cpp, kNumberRe).
NUMBER_RE = re.compile(
    r"(?:(?:[€$£¥]|\b(?:EUR|USD|GBP|CHF|JPY)\b)\s?)?"
    r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}\b|\d{1,2}:\d{2}(?::\d{2})?|"
    r"\b[A-Z]{1,5}-\d[\d-]*\d|#\d+|"
    r"\d{1,3}(?:[.,'\u202f\u00a0]\d{3})+(?:[.,]\d+)?|\d+(?:[.,]\d+)?)"
    r"(?:\s?(?:[€$£¥%]|(?:EUR|USD|GBP|CHF|JPY)\b))?")


def protected_spans(text, terms):
    """(start, end, key) of what the bot protects: numbers (key: their digits,
    so that "€107.49" and "107,49 €" pair up) and glossary terms."""
    spans = [(m.start(), m.end(), "#" + re.sub(r"\D", "", m.group())) for m in NUMBER_RE.finditer(text)]
    for term in terms:
        spans += [(m.start(), m.end(), "=" + term) for m in re.finditer(re.escape(term), text)]
    spans.sort()
    out = []
    for span in spans:  # the first of overlapping spans wins, as in the runtime
        if not out or span[0] >= out[-1][1]:
            out.append(span)
    return out


def mask_pair(s_en, s_de, terms, rng):
    """The pair as the models see it at run time with protection on: each
    protected span replaced by a digit placeholder (101, 202, ... 909, 1001,
    ...) numbered in the order of one side (the source, at run time; either
    here, since the corpus trains both directions), a space added where a
    placeholder would touch a word. Teaches the models to copy placeholders
    through in any slot, product names included. None when the two sides'
    spans do not pair up."""
    sides = [protected_spans(s_en, terms), protected_spans(s_de, terms)]
    if not sides[0] or sorted(k for *_, k in sides[0]) != sorted(k for *_, k in sides[1]):
        return None
    first = rng.randrange(2)
    placeholder_of = {}  # (key, occurrence) -> placeholder
    seen = {}
    for n, (_, _, key) in enumerate(sides[first], 1):
        placeholder_of[(key, seen.get(key, 0))] = str(n * 101 if n <= 9 else 991 + n)
        seen[key] = seen.get(key, 0) + 1
    masked = []
    for text, spans in ((s_en, sides[0]), (s_de, sides[1])):
        out, at, seen = [], 0, {}
        for start, end, key in spans:
            out.append(text[at:start])
            if start > 0 and not text[start - 1].isspace():
                out.append(" ")
            out.append(placeholder_of[(key, seen.get(key, 0))])
            seen[key] = seen.get(key, 0) + 1
            if end < len(text) and (text[end].isalnum() or text[end] == "_"):
                out.append(" ")
            at = end
        out.append(text[at:])
        masked.append("".join(out))
    return tuple(masked)


def make_parallel(rng, n, test, masked_share=0.3):
    """Sentence pairs from ALL_TEMPLATES; `masked_share` of them with their
    numbers (and, half the time, the product line) masked as the bot's
    protection masks them."""
    sampler = SlotSampler(rng, test, invent_names=True)
    # Template ids index ALL_TEMPLATES in both splits (is_test_combo).
    ids = [i for i, t in enumerate(ALL_TEMPLATES) if not test or re.search(r"\{\w+\}", t[1])]
    pairs, seen = [], set()
    while len(pairs) < n:
        tid = rng.choice(ids)
        role, t_en, t_de = ALL_TEMPLATES[tid]
        uses_product = "{p" in t_en
        if uses_product:
            cats = [i for i in range(len(CATEGORIES)) if is_test_combo(tid, i) == test]
            cat = CATEGORIES[rng.choice(cats)]
        else:
            cat = None
        en, de, model = sampler.draw(cat)
        if role == "c":
            # Templates that introduce the customer already name them.
            prefixes = CUSTOMER_PREFIXES[:-1] if "{fullname}" in t_en else CUSTOMER_PREFIXES
            pre_en, pre_de = rng.choice(prefixes)
            suf_en, suf_de = rng.choice(CUSTOMER_SUFFIXES)
        else:
            pre_en, pre_de = rng.choice(AGENT_PREFIXES)
            suf_en = suf_de = ""
        s_en = (pre_en + t_en + suf_en).format(**en)
        s_de = (pre_de + t_de + suf_de).format(**de)
        s_de = s_de[0].upper() + s_de[1:]  # "{dear}"/"{p_nom}" may open a sentence
        if rng.random() < masked_share:
            terms = [model] if uses_product and rng.random() < 0.5 else []
            s_en, s_de = mask_pair(s_en, s_de, terms, rng) or (s_en, s_de)
        # A sentence without slots repeats (as often as a template with slots
        # is drawn): the bot's fixed answers must be learnt as well as the rest.
        if (s_en, s_de) in seen and re.search(r"\{\w+\}", t_en):
            continue
        seen.add((s_en, s_de))
        pairs.append((s_en, s_de))
    return pairs


# ---------------------------------------------------------------------------
# Dialogue data (English). Each intent has question wordings (the last one is
# held out for test), follow-up wordings for a second turn that refer back to
# the first turn ("it", "my money"), and an answer builder that applies the
# policy and repeats the slots. Facts must match policy.txt (checked below).
# ---------------------------------------------------------------------------

POLICY_FACTS = ["2 to 4 business days", "€4.90", "from €50", "€9.90", "before 14:00", "within 30 days of delivery",
                "\"My Orders\"", "within 5 business days", "within 14 days of delivery", "free replacement",
                "free of charge", "PayPal", "direct debit", "9:00 to 18:00", "10:00 to 14:00",
                "\"Forgot password\"", "\"Account settings\""]

INTENTS = {
    "status": dict(
        questions=["Where is my order {order}?", "My order {order} has not arrived yet. Where is it?",
                   "What is the status of my order {order}?", "Can you tell me when order {order} will arrive?",
                   "I am still waiting for order {order}. When will it be delivered?"],
        followups=["When will it arrive?", "And how long does delivery take?"],
        answer=lambda s: (f"Your order {s['order']} is on its way. Standard shipping within Germany takes "
                          "2 to 4 business days, so it should arrive soon.", [s["order"], "2 to 4 business days"])),
    "return": dict(
        questions=["Can I return the {p} from order {order}?", "How do I return order {order}?",
                   "The {p} from order {order} does not fit. Can I return it?",
                   "I want to send back the {p} I got with order {order}.",
                   "Is it possible to return the {p} from my order {order}?"],
        followups=["Can I return it instead?", "Can I send it back?"],
        answer=lambda s: (f"Yes, you can return items within 30 days of delivery. The return label for order "
                          f"{s['order']} is free and can be found in your account under \"My Orders\".",
                          [s["order"], "30 days"])),
    "refund": dict(
        questions=["When will I get my refund for order {order}?", "How long does the refund for order {order} take?",
                   "I returned the {p} from order {order}. When will I be refunded?",
                   "I sent back order {order}. When do I get my money back?"],
        followups=["And when will I get my money back?", "How long does the refund take?"],
        answer=lambda s: (f"The refund for order {s['order']} goes back to your original payment method within "
                          "5 business days after the return arrives at our warehouse.",
                          [s["order"], "5 business days"])),
    "damaged": dict(
        questions=["The {p} from order {order} arrived damaged.", "Order {order} arrived with a broken {p}.",
                   "My {p} from order {order} is broken. What can I do?",
                   "The {p} in order {order} was damaged when it arrived."],
        followups=["It also arrived damaged. What now?"],
        answer=lambda s: (f"I am sorry to hear that. Please send us a photo of the damaged {s['p']} within 14 days "
                          f"of delivery and we will send a free replacement for order {s['order']}.",
                          [s["order"], "14 days", "replacement"])),
    "cancel": dict(
        questions=["I want to cancel order {order}.", "Can I still cancel my order {order}?",
                   "Please cancel order {order}.", "Is it too late to cancel order {order}?"],
        followups=["Can I still cancel it?", "Can I cancel it?"],
        answer=lambda s: (f"Order {s['order']} can be cancelled free of charge as long as it has not been shipped. "
                          "If it has already been shipped, you can return it within 30 days of delivery.",
                          [s["order"], "free of charge"])),
    "shipping_cost": dict(
        questions=["How much is shipping for an order of {amount}?", "My cart is {amount}. Do I have to pay for shipping?",
                   "What does shipping cost if I order for {amount}?",
                   "Is shipping free for an order of {amount}?"],
        followups=[],
        answer=lambda s: ((f"Shipping is free for orders from €50, so your order of {s['amount']} ships for free.",
                           [s["amount"], "free"]) if s["euros"] >= 50 else
                          (f"Standard shipping costs €4.90 for orders under €50, so your order of {s['amount']} "
                           "costs €4.90 for shipping.", [s["amount"], "€4.90"]))),
    "express": dict(
        questions=["Do you offer express shipping?", "Can I get order {order} faster?",
                   "Is there a faster delivery option for my order {order}?", "How fast is express delivery?"],
        followups=["Is there a faster option?"],
        answer=lambda s: ("Yes, express shipping costs €9.90 and arrives the next business day if you order "
                          "before 14:00.", ["€9.90", "14:00"])),
    "hours": dict(
        questions=["What are your opening hours?", "When can I reach customer service?",
                   "Are you open on Saturday?", "When is your customer service open?"],
        followups=["By the way, what are your opening hours?", "When can I call you?"],
        answer=lambda s: ("Our customer service is available Monday to Friday from 9:00 to 18:00 and Saturday "
                          "from 10:00 to 14:00. We are closed on Sundays and public holidays.",
                          ["9:00 to 18:00"])),
    "payment": dict(
        questions=["Which payment methods do you accept?", "Can I pay by invoice?",
                   "Can I pay for order {order} with PayPal?", "How can I pay for my order?"],
        followups=["How can I pay?"],
        answer=lambda s: ("We accept credit card, PayPal, invoice and direct debit. Invoices are due within 14 days.",
                          ["PayPal", "invoice"])),
    "password": dict(
        questions=["I forgot my password.", "I cannot log in to my account.", "How can I reset my password?"],
        followups=[],
        answer=lambda s: ("Please use the \"Forgot password\" link on the login page to set a new password.",
                          ["Forgot password"])),
    "address": dict(
        questions=["How can I change my delivery address?", "I moved. Where do I change my address?",
                   "Can I change the email address of my account?", "Where can I update my email address?"],
        followups=[],
        answer=lambda s: ("You can change your email address and delivery address under \"Account settings\" "
                          "in your account.", ["Account settings"])),
}

# Which follow-up intents make sense after which first intent.
FOLLOWUPS = {
    "status": ["cancel", "hours", "express"],
    "return": ["refund", "hours"],
    "damaged": ["return", "refund"],
    "cancel": ["refund", "hours"],
    "refund": ["hours", "payment"],
    "express": ["payment", "hours"],
    "payment": ["hours"],
    "hours": ["payment"],
}

CLOSINGS = (["Thanks!", "Thank you, bye.", "Great, thank you."],
            "You are welcome! Have a nice day.")


def dialogue_slots(sampler):
    female, first, last = sampler.person()
    euros, cents, amount, _ = sampler.amount(5, 150)
    model, p, _, _, _, _ = sampler.product()
    return {"order": sampler.order(), "amount": amount, "euros": euros + int(cents) / 100,
            "p": f"{model} {p}", "fullname": f"{first} {last}", "title": f"{'Ms' if female else 'Mr'} {last}"}


def make_dialogues(rng, n, test):
    sampler = SlotSampler(rng, test)
    convs = []
    names = sorted(INTENTS)
    while len(convs) < n:
        s = dialogue_slots(sampler)
        intent = rng.choice(names)
        spec = INTENTS[intent]
        wordings = spec["questions"][-1:] if test else spec["questions"][:-1]
        question = rng.choice(wordings).format(**s)
        answer, checks = spec["answer"](s)
        # A customer that introduces themselves gets greeted by name.
        if rng.random() < 0.3:
            question = f"Hi, this is {s['fullname']}. {question}"
            answer = f"Hello {s['title']}! {answer}"
            checks = checks + [s["title"]]
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        all_checks = [checks]
        r = rng.random()
        if r < 0.35 and FOLLOWUPS.get(intent):
            # Second turn without the order number: the answer must take it from turn one.
            nxt = rng.choice(FOLLOWUPS[intent])
            spec2 = INTENTS[nxt]
            answer2, checks2 = spec2["answer"](s)
            messages += [{"role": "user", "content": rng.choice(spec2["followups"])},
                         {"role": "assistant", "content": answer2}]
            all_checks.append(checks2)
        elif r < 0.45:
            messages += [{"role": "user", "content": rng.choice(CLOSINGS[0])},
                         {"role": "assistant", "content": CLOSINGS[1]}]
            all_checks.append(["welcome"])
        convs.append({"intent": intent, "messages": messages, "checks": all_checks})
    return convs


def check_policy_consistency():
    policy = (HERE / "policy.txt").read_text(encoding="utf-8")
    missing = [f for f in POLICY_FACTS if f not in policy]
    if missing:
        raise SystemExit(f"policy.txt does not state: {missing}")
    for role, t_en, t_de in PARALLEL_TEMPLATES:
        assert re.search(r"\{\w+\}", t_en), f"template without slot: {t_en}"
    # Every sentence the dialogue models say or hear is a translation template.
    english = {t_en for _, t_en, _ in ALL_TEMPLATES}
    slots = {"order": "{order}", "amount": "{amount}", "p": "{p}", "title": "{name}"}
    said = [CLOSINGS[1], "Hello {name}!"]
    for spec in INTENTS.values():
        said += [spec["answer"](dict(slots, euros=euros))[0] for euros in (10, 60)]
        said += spec["questions"] + spec["followups"]
    said += CLOSINGS[0]
    for text in said:
        for sentence in re.split(r"(?<=[.!?]) +", text):
            assert sentence in english, f"no translation template for the dialogue sentence: {sentence}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "build/demo-train/corpus"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--pairs", type=int, default=20000, help="training sentence pairs")
    ap.add_argument("--test-pairs", type=int, default=1000)
    ap.add_argument("--dialogues", type=int, default=20000, help="training conversations")
    ap.add_argument("--test-dialogues", type=int, default=200)
    args = ap.parse_args()

    check_policy_consistency()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Separate generators per part, so changing one size does not reshuffle the others.
    train = make_parallel(random.Random(args.seed), args.pairs, test=False)
    # Unmasked: a masked pair holds no slot value, so train has it too.
    test = make_parallel(random.Random(args.seed + 1), args.test_pairs, test=True, masked_share=0)
    train_src = {en for en, _ in train} | {de for _, de in train}
    assert not any(en in train_src or de in train_src for en, de in test), "test sentence leaked into train"
    for name, pairs in (("train", train), ("test", test)):
        for lang, idx in (("en", 0), ("de", 1)):
            with open(out / f"{name}.{lang}", "w", encoding="utf-8") as f:
                f.writelines(p[idx] + "\n" for p in pairs)

    for name, n, seed, test_split in (("dialogue_train", args.dialogues, args.seed + 2, False),
                                      ("dialogue_test", args.test_dialogues, args.seed + 3, True)):
        convs = make_dialogues(random.Random(seed), n, test_split)
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(c, ensure_ascii=False) + "\n" for c in convs)

    print(f"wrote {len(train)} train / {len(test)} test pairs and "
          f"{args.dialogues} / {args.test_dialogues} dialogues to {out}")


if __name__ == "__main__":
    main()
