//! Raw declarations of Parley's C API, as bindgen 0.60 generates them from
//! `include/parley/parley.h` (`generate.sh`; the output is committed). Every
//! function is `unsafe`; the rules (ownership, errors, thread-safety) are the
//! header's. The `bindgen_test_layout_*` tests check each struct's size,
//! alignment and field offsets against what clang computed from the header.
//! The `_init` functions are the exported ones (the header's inline variants
//! are C-only): each sets `struct_size` to this header's size.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, clippy::all)]

include!("bindings.rs");
