//! Static builds of the binaries that run inside the guests (which have no libc).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::proc::{output, run};

const MUSL: &str = "x86_64-unknown-linux-musl";
const GNU: &str = "x86_64-unknown-linux-gnu";

/// (binary, package) pairs built for the guest.
pub const GUEST_BINARIES: &[(&str, &str)] = &[
    ("balancer", "balancer"),
    ("guest-checks", "balancer-tests"),
    ("guest-bench", "balancer-tests"),
];

/// The static target of the guest binaries. The host row's tests use it too, so the matrix
/// builds balancer once and every kernel runs the same binaries.
pub struct StaticTarget {
    triple: &'static str,
}

impl StaticTarget {
    /// musl, installed on the fly if rustup can (a target of the stable toolchain, not
    /// another toolchain); else static glibc.
    pub fn detect() -> StaticTarget {
        let installed = output(
            Command::new("rustup").args(["target", "list", "--installed"]),
            "rustup target list",
        )
        .unwrap_or_default();
        let musl = installed.lines().any(|l| l.trim() == MUSL)
            || run(
                Command::new("rustup").args(["target", "add", MUSL]),
                "rustup target add",
            )
            .is_ok();
        if !musl {
            eprintln!("xtask vm: no {MUSL} target; building static glibc binaries");
        }
        StaticTarget {
            triple: if musl { MUSL } else { GNU },
        }
    }

    /// `cargo <args> --target <triple>` in the workspace, linking statically (the target
    /// before a `--` in `args`).
    pub fn cargo(&self, root: &Path, args: &[&str]) -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // The target goes to cargo, before any `--` that starts the test harness's own
        // arguments (`-- --include-ignored`).
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        cmd.current_dir(root)
            .args(&args[..split])
            .args(["--target", self.triple])
            .args(&args[split..]);
        if self.triple == GNU {
            // glibc static-pie. The per-target variable, unlike RUSTFLAGS, stays out of the
            // nightly eBPF build that balancer's build script runs.
            cmd.env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            );
        }
        cmd
    }

    /// Builds the guest binaries in release mode and returns their paths, in the order of
    /// [`GUEST_BINARIES`].
    pub fn build(&self, root: &Path) -> Result<Vec<PathBuf>> {
        let mut args = vec!["build", "--release"];
        for (bin, package) in GUEST_BINARIES {
            args.extend(["-p", package, "--bin", bin]);
        }
        run(&mut self.cargo(root, &args), "cargo build (guest binaries)")?;

        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let dir = target_dir.join(self.triple).join("release");
        GUEST_BINARIES
            .iter()
            .map(|(bin, _)| {
                let path = dir.join(bin);
                let elf =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                if has_interpreter(&elf)? {
                    bail!(
                        "{} is dynamically linked; the guest has no libc",
                        path.display()
                    );
                }
                Ok(path)
            })
            .collect()
    }
}

/// Whether an ELF executable names a dynamic loader (a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> Result<bool> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("truncated ELF header");
    };
    const PT_INTERP: u32 = 3;
    Ok((0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        elf.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == PT_INTERP)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_goes_before_the_harness_arguments() {
        let t = StaticTarget { triple: MUSL };
        let cmd = t.cargo(
            Path::new("/"),
            &["test", "-p", "x", "--", "--include-ignored"],
        );
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "test",
                "-p",
                "x",
                "--target",
                MUSL,
                "--",
                "--include-ignored"
            ]
        );
        let cmd = t.cargo(Path::new("/"), &["build"]);
        assert_eq!(cmd.get_args().count(), 3);
    }
}
