// nvcc smoke compile of tile_math.cuh: every function used from device code
// (and from host code in the same translation unit). Compiled, never run.
#include "tile_math.cuh"

namespace attn = parley::cuda::attn;

template <class B>
__global__ void smoke_kernel(const float *x, float *out, int n, int d, attn::MaskInfo mi, attn::DecodePack pk,
                             attn::PagedKv paged, attn::SplitConfig cfg) {
  const float c = attn::score_factor<B>(0.125f);
  attn::RowState st = attn::row_init();
  float p[16];
  float acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = 0.f;
  const int nn = n < 16 ? n : 16;
  const float alpha = attn::online_update_row<B>(st, x, p, nn, c);
  attn::rescale_acc(acc, d < 16 ? d : 16, alpha);
  const float a2 = attn::online_begin_tile<B>(st, attn::tile_row_max(x, nn), c);
  acc[0] += a2 * attn::online_prob<B>(x[0], c, st.m);
  const attn::RowResult rr = attn::row_finalize<B>(st);
  const float ms[2] = {st.m, st.m};
  const float ls[2] = {st.l, 0.f};
  const attn::RowState tot = attn::merge_states<B>(ms, ls, 2, 1);
  const float w = attn::merge_weight<B>(ms[0], ls[0], tot);
  const int r = static_cast<int>(threadIdx.x);
  const attn::TileClass cls = attn::classify_tile(mi, pk.query_of(r), pk.query_of(r + 15), 0, 64);
  const attn::KeyTiles kt = attn::key_tiles(mi, 0, mi.q_len - 1, 0, mi.key_len, 64);
  const attn::KeyRange kr = attn::split_range(blockIdx.y, gridDim.y, mi.key_len, cfg.align);
  const int ns = attn::num_splits(gridDim.x, mi.key_len, cfg);
  const int64_t row = paged.row(blockIdx.x, kr.begin);
  out[r] = acc[0] * rr.inv_l + rr.lse + w + static_cast<float>(cls) + kt.n_full + kt.n_total + kr.end + ns +
           static_cast<float>(row) + attn::visible(mi, r, r) + attn::tile_in_one_page(kr.begin, kr.end, 64) +
           attn::kv_head_of(r, 32, 8) + pk.head_of(1, r) + pk.row_of(1, 0) + pk.row_tiles(16) + p[0];
}

template __global__ void smoke_kernel<attn::Base2>(const float *, float *, int, int, attn::MaskInfo, attn::DecodePack,
                                                   attn::PagedKv, attn::SplitConfig);
template __global__ void smoke_kernel<attn::BaseE>(const float *, float *, int, int, attn::MaskInfo, attn::DecodePack,
                                                   attn::PagedKv, attn::SplitConfig);

int smoke_host() {
  attn::SplitConfig cfg;
  return attn::num_splits(4, 4096, cfg) + attn::split_range(0, 2, 100, 64).end;
}

// The tensor-core tile (mma_tile.cuh) with the device context: inline PTX for
// ldmatrix and mma.sync must assemble for sm_80.
#include "mma_tile.cuh"
#include "simt_device.cuh"

template <bool kBf16, bool kTransB>
__global__ void mma_tile_smoke(const uint16_t *a, const uint16_t *b, float *d) {
  attn::DeviceCtx ctx;
  attn::mma_tile_16x8x16<attn::DeviceCtx, kBf16, kTransB>(ctx, a, b, d);
}
template __global__ void mma_tile_smoke<false, false>(const uint16_t *, const uint16_t *, float *);
template __global__ void mma_tile_smoke<false, true>(const uint16_t *, const uint16_t *, float *);
template __global__ void mma_tile_smoke<true, false>(const uint16_t *, const uint16_t *, float *);
template __global__ void mma_tile_smoke<true, true>(const uint16_t *, const uint16_t *, float *);
