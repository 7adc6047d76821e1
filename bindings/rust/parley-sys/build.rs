// Links libparley: from PARLEY_LIB_DIR when set (a build tree's lib/),
// else from the linker's default search path (an installed libparley).
fn main() {
    println!("cargo:rerun-if-env-changed=PARLEY_LIB_DIR");
    if let Ok(dir) = std::env::var("PARLEY_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir);
    }
    println!("cargo:rustc-link-lib=dylib=parley");
}
