// C side of the callbacks from Parley into Go. A cgo file whose preamble
// declares //export functions may hold no C definitions, so the
// functions whose addresses go into the option structs live here; each
// forwards to its //export Go function with the cgo.Handle that was stored
// as user_data (a uintptr_t, converted here so that Go never turns an
// integer into a pointer).
#include "_cgo_export.h"

int32_t parley_go_text_fn(void *user_data, const char *text, size_t length) {
  return parleyGoText((uintptr_t)user_data, (char *)text, length);
}

int32_t parley_go_translation_text_fn(void *user_data, size_t text_index, size_t hypothesis, const char *text,
                                      size_t length, int32_t is_final) {
  return parleyGoTranslationText((uintptr_t)user_data, text_index, hypothesis, (char *)text, length, is_final);
}

int32_t parley_go_token_fn(void *user_data, size_t batch_index, size_t sequence_index, int32_t token) {
  return parleyGoToken((uintptr_t)user_data, batch_index, sequence_index, token);
}

void *parley_go_handle_ptr(uintptr_t handle) {
  return (void *)handle;
}
