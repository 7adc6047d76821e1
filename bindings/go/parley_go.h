/* Included by every cgo preamble of the package: the C ABI with the
 * exported _init functions (not the header's static inline variants, so the
 * struct_size they write is the one this header declares: cgo sees the same
 * struct layouts), and the C trampolines of trampolines.c. Declarations
 * only: a preamble next to //export functions may not define anything. */
#ifndef PARLEY_GO_H
#define PARLEY_GO_H
#define PARLEY_NO_INLINE_INIT
#include <parley/parley.h>
#include <stdint.h>
#include <stdlib.h>

int32_t parley_go_text_fn(void *user_data, const char *text, size_t length);
int32_t parley_go_translation_text_fn(void *user_data, size_t text_index, size_t hypothesis, const char *text,
                                      size_t length, int32_t is_final);
int32_t parley_go_token_fn(void *user_data, size_t batch_index, size_t sequence_index, int32_t token);
void *parley_go_handle_ptr(uintptr_t handle);
#endif
