// Sentence segmentation for translating long texts: ICU's sentence
// BreakIterator (Unicode UAX #29 rules with ICU's locale data; line and
// paragraph breaks end a sentence), the segmenter the Debian package
// libicu-dev provides.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace parley {

// Sentences of the valid UTF-8 `text` as byte ranges [begin, end), in order,
// without leading or trailing whitespace; what lies between two ranges (and
// before the first, after the last) is the original whitespace. Texts of only
// whitespace give no range. `locale`: an ICU locale id ("de", "en"; "" for the
// root rules). A break is never made inside a protected range of `keep`
// (sorted, disjoint byte ranges). Throws Error on an ICU failure.
std::vector<std::pair<size_t, size_t>> split_sentences(std::string_view text, const std::string &locale,
                                                       const std::vector<std::pair<size_t, size_t>> &keep = {});

}  // namespace parley
