//! Rebuild the object when bpf-linker changes: the link step is an undeclared dependency.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
