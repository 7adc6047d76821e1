// Restoration of protected spans (runtime/text/protect.hpp) on model outputs
// written by hand: the cases a trained model produced, without the model.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "text/protect.hpp"

namespace {

using parley::kProtectNumbers;
using parley::mask_spans;
using parley::ModelOutput;
using parley::ProtectRules;
using parley::restore_spans;

// Masks `source`'s numbers, takes `model_text` as the model's output for the
// masked text (no attention) and returns the restored text.
std::string restore(const std::string &source, const std::string &expected_masked, const std::string &model_text) {
  ProtectRules rules(kProtectNumbers, {}, {});
  const auto spans = rules.find(source);
  const auto masked = mask_spans(source, spans);
  EXPECT_EQ(masked.text, expected_masked);
  std::vector<std::string> texts;
  for (const auto &s : spans) texts.push_back(source.substr(s.offset, s.length));
  ModelOutput out;
  out.text = model_text;
  return restore_spans(masked, texts, out).text;
}

TEST(ProtectRestore, PlaceholdersCopiedAreReplaced) {
  EXPECT_EQ(restore("Wo ist meine Bestellung 9019917?", "Wo ist meine Bestellung 101?", "Where is my order 101?"),
            "Where is my order 9019917?");
}

// The demo de->en model read two amounts in a row ("über 101 202") as one
// English amount: "of €101.20 costs 20202". The decimal part it invented goes
// with its separator, not as "€.costs".
TEST(ProtectRestore, InventedDecimalPartGoesWithItsSeparator) {
  const std::string got = restore("Ihre Bestellung über 447,49 € 4,90 €.", "Ihre Bestellung über 101 202.",
                                  "Your order of €101.20 costs 20202.");
  EXPECT_EQ(got, "Your order of 447,49 € costs 4,90 €.");
}

// The model wrote a currency sign after the placeholder of an amount that
// holds one: one sign, not "€367.90 €".
TEST(ProtectRestore, CurrencySignAfterAnAmountHoldingOneIsDropped) {
  EXPECT_EQ(restore("Your invoice is €367.90.", "Your invoice is 101.", "Ihre Rechnung beträgt 101 €."),
            "Ihre Rechnung beträgt €367.90.");
  EXPECT_EQ(restore("Das kostet 4,90 €.", "Das kostet 101.", "That costs 101 €."), "That costs 4,90 €.");
  // A sign the span does not hold stays.
  EXPECT_EQ(restore("Order 9019917 is paid.", "Order 101 is paid.", "Bestellung 101 € ist bezahlt."),
            "Bestellung 9019917 € ist bezahlt.");
}

// A decimal part the model made up ("101,50") is no place for a missing
// span: that span is inserted by position (no attention here), not glued on
// as ",4,90 €".
TEST(ProtectRestore, DecimalPartIsNoPlaceForAMissingSpan) {
  const std::string got = restore("Unter 50 € kostet der Versand 4,90 €.", "Unter 101 kostet der Versand 202.",
                                  "Under 101,50 shipping is.");
  EXPECT_EQ(got.find(",4,90"), std::string::npos) << got;
  EXPECT_EQ(got.find("50 €,"), std::string::npos) << got;
  EXPECT_EQ(got.rfind("Under 50 € ", 0), 0u) << got;
  EXPECT_NE(got.find("4,90 €"), std::string::npos) << got;
  EXPECT_EQ(got.find("4,90 €"), got.rfind("4,90 €")) << got;
}

TEST(ProtectRestore, InventedNumberAloneIsDroppedWithOneSpace) {
  EXPECT_EQ(restore("Bestellung 9019917 ist da.", "Bestellung 101 ist da.", "Order 101 is 55 here."),
            "Order 9019917 is here.");
}

}  // namespace
