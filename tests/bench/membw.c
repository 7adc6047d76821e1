/* membw: streaming-read memory bandwidth, for tests/bench/bench_precision.py.
 *
 *   cc -O3 -march=native -fopenmp membw.c -o membw && ./membw THREADS [MiB] [REPEATS]
 *
 * Reads a MiB-sized buffer (default 1024, far larger than any cache) with
 * THREADS OpenMP threads, each a contiguous slice, XOR-folding 64-bit words
 * (vectorised; no arithmetic bound), and prints the best GB/s (1e9 bytes/s)
 * of REPEATS passes (default 7). This is the read rate a decode step that
 * streams every weight once could reach: the "bandwidth bound".
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
  int repeats = argc > 3 ? atoi(argv[3]) : 7;
  if (threads < 1 || mib < 1 || repeats < 1) {
    fprintf(stderr, "usage: membw THREADS [MiB] [REPEATS]\n");
    return 2;
  }
  mib += mib & 1; /* whole 2 MiB pages */
  size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
  uint64_t *buf = aligned_alloc(2u << 20, n * sizeof(uint64_t)); /* n is a multiple of 2 MiB */
  if (!buf) {
    fprintf(stderr, "membw: cannot allocate %zu MiB\n", mib);
    return 1;
  }
#ifdef MADV_HUGEPAGE
  /* Transparent huge pages, as numpy asks for large arrays: without them
   * TLB misses, not DRAM, limit a streaming read on some VMs. */
  madvise(buf, n * sizeof(uint64_t), MADV_HUGEPAGE);
#endif
  omp_set_num_threads(threads);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = i * 0x9e3779b97f4a7c15ull; /* first touch by the reading thread */
  double best = 1e30;
  uint64_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    uint64_t acc = 0;
    double t0 = omp_get_wtime();
#pragma omp parallel for schedule(static) reduction(^ : acc)
    for (size_t i = 0; i < n; ++i) acc ^= buf[i];
    double dt = omp_get_wtime() - t0;
    sink ^= acc;
    if (dt < best) best = dt;
  }
  printf("%.3f\n", (double)(n * sizeof(uint64_t)) / best / 1e9);
  fprintf(stderr, "membw: %d thread(s), %zu MiB, best of %d (checksum %llx)\n", threads, mib, repeats,
          (unsigned long long)sink);
  free(buf);
  return 0;
}
