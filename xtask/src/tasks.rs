//! `cargo xtask build | run | test`: set-up, build, and the whole test suite.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::setup::{self, SetupArgs, step};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

pub fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds the balancer binary in release mode and returns its path.
pub fn build_release() -> anyhow::Result<PathBuf> {
    setup::run(&SetupArgs { no_packages: true })?;
    step("building balancer (release)");
    run_checked(cargo().args(["build", "--release", "-p", "balancer"]))?;
    Ok(target_dir().join("release/balancer"))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds the Debian package (release binary, unit, config as a conffile, man pages and
/// completions generated from the CLI) with cargo-deb and returns its path.
pub fn package() -> anyhow::Result<PathBuf> {
    build_release()?;
    let docs = target_dir().join("release/package-docs");
    // Stale pages of a removed subcommand must not be packaged.
    if docs.exists() {
        std::fs::remove_dir_all(&docs).with_context(|| format!("removing {}", docs.display()))?;
    }
    step("generating man pages and shell completions from the CLI");
    run_checked(
        cargo()
            // Debug profile: the text is the same, and `cargo test` builds this lib with
            // the dev-dependencies' features anyway (in release it would be built twice).
            .args(["run", "--quiet", "-p", "balancer", "--example", "gen-docs"])
            .arg("--")
            .arg(&docs),
    )?;
    // Debian policy: man pages gzipped, without a name or time stamp (-n: reproducible).
    let man = docs.join("man");
    let pages: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "8"))
        .collect();
    if pages.is_empty() {
        bail!("gen-docs wrote no man pages into {}", man.display());
    }
    run_checked(Command::new("gzip").args(["-9nf"]).args(&pages))?;
    step("building the .deb (cargo deb)");
    let out_dir = target_dir().join("debian");
    let out = cargo()
        .args(["deb", "-p", "balancer", "--no-build", "--output"])
        .arg(&out_dir)
        .output()
        .context("starting cargo deb (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!(
            "cargo deb failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // It prints the path of the package it wrote, last.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo deb named no .deb: {stdout}"))?;
    Ok(deb)
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Arguments for balancer, after `--`, e.g. `cargo xtask run -- report --duration 5`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Sets up, builds and runs balancer with the given arguments.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    setup::run(&SetupArgs::default())?;
    let bin = build_release()?;
    let status = Command::new(&bin)
        .args(&args.args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip the kernel VM matrix (unit and host tests only).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip fmt and clippy.
    #[arg(long)]
    pub no_lint: bool,
}

/// Everything CI runs: set-up, formatting, lints, unit and host integration tests, and the
/// kernel VM matrix.
pub fn test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    setup::run(&SetupArgs::default())?;
    if !args.no_lint {
        step("cargo fmt --check");
        run_checked(cargo().args(["fmt", "--all", "--check"]))?;
        step("cargo clippy --all-targets -- -D warnings");
        run_checked(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
        // The kernel programs only build for the BPF target with nightly.
        step("clippy on balancer-ebpf (nightly, bpfel-unknown-none)");
        run_checked(
            Command::new("rustup")
                .current_dir(workspace_root())
                .args(["run", "nightly", "cargo", "clippy", "-p", "balancer-ebpf"])
                .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
                .args(["--", "-D", "warnings"])
                .env("CARGO_TARGET_DIR", target_dir().join("ebpf-clippy")),
        )?;
    }
    // The package test installs the real .deb into a scratch root: build it first (a
    // release build, too slow for the test itself).
    let deb = package()?;
    // Integration tests in the tests crate run the binary: build it first.
    step("building balancer");
    run_checked(cargo().args(["build", "-p", "balancer"]))?;
    step("cargo test (unit, fixtures, host integration)");
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "balancer-ebpf"]);
    // Without BALANCER_DEB the package test fails here instead of skipping.
    test.env("BALANCER_DEB", &deb)
        .env("BALANCER_REQUIRE_PACKAGE_TEST", "1");
    if setup::is_root() {
        // Root-only tests are #[ignore = "needs root"]: as root they run (and fail, not skip).
        test.args(["--", "--include-ignored"]);
    } else {
        eprintln!("xtask: not root: host integration tests are ignored");
    }
    run_checked(&mut test)?;
    if !args.no_vm {
        // The whole matrix, host row included, so CI prints one kernel x check table (the
        // host row runs the host tests again, on the guests' static build).
        step("kernel VM matrix (cargo xtask vm)");
        run_checked(cargo().args(["run", "--quiet", "-p", "xtask", "--", "vm"]))?;
    }
    eprintln!("xtask: all tests passed in {:.0?}", start.elapsed());
    Ok(ExitCode::SUCCESS)
}
