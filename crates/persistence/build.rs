//! `embed_migrations!` reads `migrations/` when the crate compiles: a new or
//! changed migration must recompile it (Cargo watches only `src/` itself).
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
