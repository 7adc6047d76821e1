// The kernel tests' error measure (ENGINEERING.md): ||got - want|| / ||want||
// over the finite references; an infinite reference (an empty row's -inf lse)
// must be matched exactly; NaN never passes.
#pragma once

#include <cmath>
#include <vector>

namespace parley::test {

inline double rel_error(const std::vector<float> &got, const std::vector<float> &want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      if (got[i] != want[i]) return INFINITY;
      continue;
    }
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace parley::test
