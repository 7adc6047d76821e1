// The element-wise activations of the cuda plugin, in the formulas of the
// cpu plugin (plugins/cpu/cpu_common.h: cancellation-free forms), shared by
// the element-wise kernels (kernels.cu) and the LINEAR epilogue
// (linear/linear_body.cuh). Host-callable too, so the SIMT emulator tests
// run the same code.
#pragma once

#include <math.h>
#include <parley/plugin.h>

#if defined(__CUDACC__)
#define PARLEY_ACT_HD __host__ __device__
#else
#define PARLEY_ACT_HD
#endif

PARLEY_ACT_HD inline float parley_cuda_activation(int act, float x) {
  switch (act) {
    case PARLEY_ACT_RELU:
      return x > 0.f ? x : 0.f;
    case PARLEY_ACT_GELU_ERF:
      return 0.5f * x * erfcf(-x * 0.70710678118654752f);
    case PARLEY_ACT_GELU_TANH: {
      const float u = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return x / (1.f + expf(-2.f * u));
    }
    case PARLEY_ACT_SILU:
      return x / (1.f + expf(-x));
    default:
      return x;
  }
}
