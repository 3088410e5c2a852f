//! `cargo xtask setup`: installs what building and testing need, only what is missing.
//!
//! Idempotent: each step checks first, so a second run changes nothing and takes a second.
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// bpf-linker must match the LLVM of the machine's nightly (LLVM 22): see DESIGN.md.
const BPF_LINKER_VERSION: &str = "0.10.4";
const NIGHTLY: &str = "nightly";
/// cargo-deb builds the .deb of `cargo xtask package`; 3.8.0 builds on rustc 1.85+.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages and the command that proves each is there.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("cpio", "/usr/bin/cpio"),
    ("busybox-static", "/bin/busybox"),
    ("iperf3", "/usr/bin/iperf3"),
    ("bpftrace", "/usr/bin/bpftrace"),
    ("tmux", "/usr/bin/tmux"),
    ("iproute2", "/usr/sbin/ip"),
    ("ethtool", "/usr/sbin/ethtool"),
    ("util-linux", "/usr/bin/setpriv"),
    // 6.12 kernel packages ship xz-compressed modules.
    ("xz-utils", "/usr/bin/xz"),
];

#[derive(Debug, Default, clap::Args)]
pub struct SetupArgs {
    /// Skip the Debian packages (toolchain pieces only).
    #[arg(long)]
    pub no_packages: bool,
}

pub fn run(args: &SetupArgs) -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    cargo_deb()?;
    if !args.no_packages {
        packages()?;
    }
    Ok(())
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn step(what: &str) {
    eprintln!("xtask: {what}");
}

fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The eBPF crate builds core from source (`-Z build-std=core`).
fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .context(
        "the `nightly` toolchain is missing: this project's eBPF programs build with the \
         machine's nightly (see DESIGN.md); `rustup toolchain list` shows what is installed",
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    step("installing rust-src for the nightly toolchain");
    run_checked(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        NIGHTLY,
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
        return Ok(());
    }
    step(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} (about a minute)"
    ));
    run_checked(Command::new("cargo").args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
    ]))
}

fn cargo_deb() -> anyhow::Result<()> {
    // `cargo deb --version` prints `cargo-deb 3.8.0`.
    let have = output(Command::new("cargo").args(["deb", "--version"])).unwrap_or_default();
    if have.split_whitespace().any(|w| w == CARGO_DEB_VERSION) {
        return Ok(());
    }
    step(&format!(
        "installing cargo-deb {CARGO_DEB_VERSION} (a few minutes)"
    ));
    run_checked(Command::new("cargo").args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
        "--force",
    ]))
}

fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, path)| !std::path::Path::new(path).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if euid() != 0 {
        bail!(
            "missing Debian packages: {}; install them with `sudo apt-get install {}` or run \
             this as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    // A stale package index makes installs fail with 404s on a fresh machine.
    if !quiet(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    ) {
        run_checked(Command::new("apt-get").args(["update", "-q"]))?;
        run_checked(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    Ok(())
}

fn euid() -> u32 {
    // /proc/self/status avoids a libc dependency for one number.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// True when running as root.
pub fn is_root() -> bool {
    euid() == 0
}
