// How much an attention row's output and lse may legitimately differ from a
// float64 reference because its scores were formed in fp32: the condition of
// softmax attention with respect to its scores, computed from the actual
// inputs (issue 10, A2).
//
// Score j of a row (natural-log units, s_j = scale * q.k_j) carries an error
// |ds_j| <= eps_j with
//   eps_j = gamma_D * |scale| * sum_d |q_d k_jd|   an fp32 dot product of length D
//                                                  (Higham, Accuracy and Stability of
//                                                  Numerical Algorithms, 2nd ed., eq. 3.5:
//                                                  gamma_n = n u / (1 - n u), u = 2^-24)
//         + 2 u |s_j - s_max|                      the scale (times log2 e) rounded to
//                                                  fp32 once, and the one rounding of
//                                                  fmaf(x, c, -m) against the row max
// (a shift common to all scores cancels in the softmax, hence s_j - s_max).
// To first order, with p the reference probabilities and out the reference
// output row,
//   out' - out = sum_j p_j ds_j (v_j - out)  =>  ||out' - out|| <= sum_j p_j eps_j ||v_j - out||
//   lse' - lse = sum_j p_j ds_j              =>  |lse' - lse|   <= sum_j p_j (eps_j + 2 u |s_j|)
// (the lse keeps the common shift), times (1 + 2 max_j eps_j) for the
// second-order remainder (|e^x - 1 - x| <= x^2 e^|x| / 2 for the |x| <= 2 eps
// that probability ratios see). The rest of the arithmetic (exp, the sums of p
// and p v, the split merge) is well conditioned and stays within
// ENGINEERING.md's fp32 1e-5, which callers add.
//
// The bound is worst case: it grows with the scores' magnitude (scores of
// ~1e4 from 64-term products give eps_j ~ 1e-2, and an output 3e-5 away from
// the reference when two top scores are close), and it stays small for a
// one-hot row (p_j ~ 0 or v_j = out).
#ifndef PARLEY_TESTS_COMMON_ATTENTION_CONDITION_H
#define PARLEY_TESTS_COMMON_ATTENTION_CONDITION_H

#include <algorithm>
#include <cmath>
#include <vector>

namespace parley::test {

inline constexpr double kF32Unit = 0x1p-24;  // u, unit roundoff of fp32

inline double gamma_f32(int n) {
  return n * kF32Unit / (1 - n * kF32Unit);
}

struct RowCondition {
  double out = 0;  // bound on ||out' - out||_2 of the row
  double lse = 0;  // bound on |lse' - lse|
};

// s[j]: exact scores (float64, natural-log units; -INFINITY = masked);
// dot_eps[j]: the error bound of forming s[j] in fp32, i.e.
//   gamma_f32(D) * |scale| * sum_d |q_d k_jd|, or 0 for scores given exactly;
// value(j): key j's value row (D floats); out: the exact output row.
template <class ValueRow>
RowCondition attention_row_condition(const std::vector<double> &s, const std::vector<double> &dot_eps, int D,
                                     ValueRow value, const double *out) {
  RowCondition c;
  double mx = -INFINITY;
  for (double x : s) mx = std::max(mx, x);
  if (mx == -INFINITY) return c;
  double sum = 0;
  for (double x : s) sum += x == -INFINITY ? 0.0 : std::exp(x - mx);
  double eps_max = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    if (s[j] == -INFINITY) continue;
    const double p = std::exp(s[j] - mx) / sum;
    const double eps = dot_eps[j] + 2 * kF32Unit * (mx - s[j]);
    const float *v = value(static_cast<int>(j));
    double dist = 0;
    for (int d = 0; d < D; ++d) dist += (v[d] - out[d]) * (v[d] - out[d]);
    c.out += p * eps * std::sqrt(dist);
    c.lse += p * (eps + 2 * kF32Unit * std::fabs(s[j]));
    eps_max = std::max(eps_max, eps);
  }
  c.out *= 1 + 2 * eps_max;
  c.lse *= 1 + 2 * eps_max;
  return c;
}

}  // namespace parley::test

#endif
