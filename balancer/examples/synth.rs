//! Writes the generated 256-CPU / 1500-IRQ machine to a directory, to look at it with
//! `balancer topology`:
//!
//!     cargo run -p balancer --example synth -- /tmp/big
//!     balancer topology --root /tmp/big/root --proximity /tmp/big/proximity.conf
#[path = "../tests/support/synth.rs"]
mod synth;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: synth DIR (DIR must not exist or be empty)");
        std::process::exit(2);
    };
    let s = synth::write(std::path::Path::new(&dir), &synth::Spec::large())?;
    println!(
        "wrote {} ({} IRQs); proximity file {}",
        s.root.display(),
        s.irq_count,
        s.proximity_file.display()
    );
    Ok(())
}
