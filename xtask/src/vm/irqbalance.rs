//! `cargo xtask bench irqbalance`: Debian's irqbalance against balancer in one kernel VM guest.
//!
//! irqbalance comes from the row's own Debian suite through the matrix's apt
//! ([`super::apt`], never the host's sources): the package and the packages of its shared
//! libraries, unpacked under `.cache/vm/irqbalance/<suite>/`. Only the `NEEDED` closure of
//! the binary (read with `readelf -d`) goes into the initramfs, under `/opt/irqbalance/`,
//! with that suite's own dynamic loader; `/bin/irqbalance` is a wrapper that runs the binary
//! through it, so its glibc is the suite's, not the host's that `ip` and `ethtool` use.
//! Inside the guest `guest-bench` (tests/src/bin/guest-bench.rs) runs the scenarios and
//! prints the table.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::proc::{Waited, output, run};
use super::{binaries, kernel, qemu};

/// Where irqbalance and its libraries live in the guest.
const GUEST_DIR: &str = "opt/irqbalance";
/// Multiarch library directories of a Debian tree.
const LIB_DIRS: &[&str] = &[
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib64",
    "lib",
    "usr/lib",
];
const LOADER: &str = "ld-linux-x86-64.so.2";

#[derive(Debug, clap::Args)]
pub struct IrqbalanceArgs {
    /// The kernel row to run (one): 5.10, 6.1, 6.12, 6.x-bpo, 7.x.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// Seconds each phase runs under traffic before its measured window.
    #[arg(long, default_value_t = 40)]
    pub settle: u64,
    /// Seconds of each phase's measured window.
    #[arg(long, default_value_t = 10)]
    pub measure: u64,
    /// Seconds after which the guest counts as hung.
    #[arg(long, default_value_t = 2400)]
    pub timeout: u64,
    /// Only these scenarios (comma-separated): even, one-bulk, two-bulk, remote.
    #[arg(long, value_delimiter = ',')]
    pub scenario: Vec<String>,
    /// Keep the work directory (initramfs, console, results).
    #[arg(long)]
    pub keep: bool,
    /// qemu accelerator.
    #[arg(long, value_enum, default_value_t = qemu::Accel::Tcg)]
    pub accel: qemu::Accel,
    /// balancer's `measure-share` in its phases (default: balancer's own default); 1
    /// measures continuously, without the windows' attach and detach.
    #[arg(long)]
    pub measure_share: Option<f64>,
    /// Rounds of replays after each scenario: each tool's final placement, and the best
    /// assignment of the alone costs, measured again with no tool running, in turn, every
    /// second round on its mirror image (the local CPUs swapped); one report window of about
    /// 20 s per distinct placement and round; 0 skips them.
    #[arg(long, default_value_t = 2)]
    pub replay_rounds: u32,
    /// Extra kernel command-line parameters for the guest (e.g.
    /// `sysctl.net.core.skb_defer_max=0`); the table's heading names them.
    #[arg(long, value_name = "PARAMS", default_value = "")]
    pub append: String,
}

/// The Debian suite whose irqbalance goes with a kernel row: the release the kernel ships
/// in. The newer rows track backports and sid, whose irqbalance is sid's.
pub fn suite(row: &str) -> &'static str {
    match row {
        "5.10" => "bullseye",
        "6.1" | "6.12" => "bookworm",
        _ => "sid",
    }
}

/// irqbalance ready for the initramfs: (path in the guest, contents, mode).
pub struct Packaged {
    pub version: String,
    pub files: Vec<(String, Vec<u8>, u32)>,
}

/// Fetches (or takes from the cache) irqbalance of `suite` with its libraries.
pub fn package(cache: &Path, apt: &Apt, suite: &str) -> Result<Packaged> {
    let dir = cache.join("irqbalance").join(suite);
    let tree = dir.join("tree");
    let marker = dir.join("packages");
    if !marker.is_file() {
        apt.prepare(true)?;
        let packages = closure(apt, suite)?;
        let debs = cache.join("debs").join(format!("irqbalance-{suite}"));
        fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
        let wanted: Vec<String> = packages.iter().map(|p| format!("{p}/{suite}")).collect();
        eprintln!(
            "xtask bench: irqbalance from {suite}: downloading {}",
            packages.join(" ")
        );
        apt.download(&debs, &wanted)?;
        if tree.exists() {
            fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
        }
        fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
        for entry in fs::read_dir(&debs).with_context(|| format!("reading {}", debs.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                run(
                    Command::new("dpkg-deb").arg("-x").arg(&path).arg(&tree),
                    &format!("dpkg-deb -x {}", path.display()),
                )?;
            }
        }
        fs::write(&marker, packages.join("\n")).context("marking the irqbalance tree complete")?;
    }
    let binary = ["usr/sbin/irqbalance", "sbin/irqbalance"]
        .iter()
        .map(|p| tree.join(p))
        .find(|p| p.is_file())
        .with_context(|| format!("no irqbalance binary in {}", tree.display()))?;
    let version = fs::read_dir(cache.join("debs").join(format!("irqbalance-{suite}")))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find_map(|n| {
            n.strip_prefix("irqbalance_")
                .and_then(|r| r.split('_').next())
                .map(|v| v.replace("%3a", ":"))
        })
        .unwrap_or_else(|| "?".into());

    let mut files = Vec::new();
    let libs = needed_closure(&tree, &binary)?;
    for (soname, path) in &libs {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        files.push((format!("{GUEST_DIR}/lib/{soname}"), data, 0o755));
    }
    let loader = find_lib(&tree, LOADER)
        .with_context(|| format!("no {LOADER} in {} (libc6)", tree.display()))?;
    files.push((
        format!("{GUEST_DIR}/{LOADER}"),
        fs::read(&loader).with_context(|| format!("reading {}", loader.display()))?,
        0o755,
    ));
    files.push((
        format!("{GUEST_DIR}/irqbalance"),
        fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?,
        0o755,
    ));
    // Through the suite's loader with only the suite's libraries: the host's glibc (in the
    // initramfs for ip and ethtool) never mixes in.
    let wrapper = format!(
        "#!/bin/sh\nexec /{GUEST_DIR}/{LOADER} --library-path /{GUEST_DIR}/lib \
         /{GUEST_DIR}/irqbalance \"$@\"\n"
    );
    files.push(("bin/irqbalance".into(), wrapper.into_bytes(), 0o755));
    eprintln!(
        "xtask bench: irqbalance {version} ({suite}) with {}",
        libs.keys().cloned().collect::<Vec<_>>().join(" ")
    );
    Ok(Packaged { version, files })
}

/// irqbalance and the library packages it depends on in `suite`, transitively (only `lib*`
/// packages are followed: the rest are scripts and helpers the binary does not load).
fn closure(apt: &Apt, suite: &str) -> Result<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from(["irqbalance".to_owned()]);
    while let Some(p) = queue.pop_front() {
        if !seen.insert(p.clone()) {
            continue;
        }
        let Some(deps) = apt.depends(&format!("{p}/{suite}"))? else {
            if p == "irqbalance" {
                bail!("apt knows no irqbalance in {suite}");
            }
            // A virtual package: the NEEDED check below says if a library is missing.
            seen.remove(&p);
            continue;
        };
        queue.extend(deps.into_iter().filter(|d| d.starts_with("lib")));
    }
    Ok(seen.into_iter().collect())
}

/// The sonames `elf` needs (`readelf -d`).
fn needed(elf: &Path) -> Result<Vec<String>> {
    let out = output(
        Command::new("readelf").arg("-d").arg(elf),
        &format!("readelf -d {} (binutils)", elf.display()),
    )?;
    Ok(out
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_owned()))
        .collect())
}

/// A file of the tree by name in its library directories, symlinks resolved inside the tree
/// (Debian's loader link is absolute: it would point into the host).
fn find_lib(tree: &Path, name: &str) -> Option<PathBuf> {
    LIB_DIRS
        .iter()
        .map(|d| tree.join(d).join(name))
        .find_map(|p| resolve_in(tree, &p, 0))
}

fn resolve_in(tree: &Path, path: &Path, depth: usize) -> Option<PathBuf> {
    if depth > 16 {
        return None;
    }
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return meta.is_file().then(|| path.to_path_buf());
    }
    let target = fs::read_link(path).ok()?;
    let next = if target.is_absolute() {
        tree.join(target.strip_prefix("/").ok()?)
    } else {
        path.parent()?.join(target)
    };
    resolve_in(tree, &next, depth + 1)
}

/// Every library the binary loads, transitively, by soname, from the tree.
fn needed_closure(tree: &Path, binary: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut libs = BTreeMap::new();
    let mut queue: VecDeque<String> = needed(binary)?.into();
    while let Some(soname) = queue.pop_front() {
        if libs.contains_key(&soname) || soname == LOADER {
            continue;
        }
        let path = find_lib(tree, &soname).with_context(|| {
            format!(
                "irqbalance needs {soname}, which none of the downloaded packages holds ({})",
                tree.display()
            )
        })?;
        queue.extend(needed(&path)?);
        libs.insert(soname, path);
    }
    Ok(libs)
}

/// Runs the bench in one guest and prints its figures.
pub fn run_bench(args: &IrqbalanceArgs) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let cache = root.join(".cache/vm");
    let Some(series) = kernel::series(&args.kernel) else {
        bail!(
            "unknown kernel {:?}; choose one of {}",
            args.kernel,
            kernel::SERIES
                .iter()
                .map(|s| s.label)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask bench irqbalance needs root (network namespaces, tap devices, eBPF)");
    }
    super::proc::catch_signals()?;
    super::netns::remove_stale()?;
    super::preflight()?;
    let work = super::WorkDir::create(args.keep)?;
    let start = Instant::now();
    let target = binaries::StaticTarget::detect();
    let binaries = target.build(&root)?;
    let apt = Apt::new(&cache);
    let irqbalance = package(&cache, &apt, suite(series.label))?;
    let mut command = format!(
        "/bin/guest-bench --results /dev/ttyS1 --dut-mac {} --peer-mac {} --settle {} \
         --measure {} --kernel {} --irqbalance-version {}",
        qemu::DUT_MAC,
        qemu::PEER_MAC,
        args.settle,
        args.measure,
        series.label,
        irqbalance.version
    );
    if !args.scenario.is_empty() {
        command.push_str(&format!(" --scenario {}", args.scenario.join(",")));
    }
    command.push_str(&format!(" --replay-rounds {}", args.replay_rounds));
    if let Some(share) = args.measure_share {
        if !(share > 0.0 && share <= 1.0) {
            bail!("--measure-share {share}: a share of each interval, 0 < share <= 1");
        }
        command.push_str(&format!(" --measure-share {share}"));
    }
    let job = super::prepare(
        &cache,
        &apt,
        &work.path,
        series,
        &binaries,
        &command,
        &irqbalance.files,
    )?;
    let prepared = match &job.prepared {
        Ok(p) => p,
        Err(err) => bail!("preparing the {} guest: {err:#}", series.label),
    };
    let kernel = &prepared.0;
    eprintln!(
        "xtask bench: {}: booting {} (irqbalance {}, {} s settle + {} s measured per phase)",
        series.label, kernel.release, irqbalance.version, args.settle, args.measure
    );
    let tag = format!("bench{}", series.label.replace('.', "_"));
    let guest = job
        .guest(prepared, &tag, args.timeout, args.accel, &args.append)
        .run()?;
    let mut done = false;
    let appended = if args.append.is_empty() {
        String::new()
    } else {
        format!(", guest command line + `{}`", args.append)
    };
    println!(
        "\n`cargo xtask bench irqbalance --kernel {}` ({}, irqbalance {}{appended})\n",
        series.label, kernel.release, irqbalance.version
    );
    for line in guest.results.lines().map(|l| l.trim_end_matches('\r')) {
        if line == "GUEST-DONE" {
            done = true;
        } else if !line.is_empty() {
            println!("{line}");
        }
    }
    println!(
        "guest ran {:.0}s, whole bench {:.0}s",
        guest.elapsed.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    let console = fs::read_to_string(&guest.console).unwrap_or_default();
    if args.keep {
        println!("work directory kept: {}", work.path.display());
    }
    let errors = guest.results.lines().any(|l| l.starts_with("ERROR "));
    if done && !errors {
        return Ok(ExitCode::SUCCESS);
    }
    if done {
        eprintln!("xtask bench: the guest reported an error (above)");
        return Ok(ExitCode::FAILURE);
    }
    let why = match guest.ended {
        Waited::TimedOut => format!("hung: killed after {:.0}s", guest.elapsed.as_secs_f64()),
        Waited::Exited(status) => format!("stopped before the end ({status})"),
    };
    eprintln!(
        "xtask bench: the guest {why}; console, last lines:\n{}",
        super::report::tail(&console, 40)
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_links_resolve_inside_the_tree() {
        let tree = std::env::temp_dir().join(format!("xtask-irqb-{}", std::process::id()));
        let lib = tree.join("lib/x86_64-linux-gnu");
        let lib64 = tree.join("lib64");
        fs::create_dir_all(&lib).unwrap();
        fs::create_dir_all(&lib64).unwrap();
        fs::write(lib.join("ld-linux-x86-64.so.2"), b"loader").unwrap();
        fs::write(lib.join("libfoo.so.1.2"), b"foo").unwrap();
        std::os::unix::fs::symlink("libfoo.so.1.2", lib.join("libfoo.so.1")).unwrap();
        // Absolute, as Debian ships it: must not leave the tree.
        std::os::unix::fs::symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            lib64.join("ld-linux-x86-64.so.2"),
        )
        .unwrap();
        assert_eq!(
            find_lib(&tree, "libfoo.so.1"),
            Some(lib.join("libfoo.so.1.2"))
        );
        let loader = resolve_in(&tree, &lib64.join(LOADER), 0).unwrap();
        assert_eq!(fs::read(loader).unwrap(), b"loader");
        assert_eq!(find_lib(&tree, "libbar.so.3"), None);
        fs::remove_dir_all(&tree).unwrap();
    }

    #[test]
    fn suites_follow_the_kernel_rows() {
        assert_eq!(suite("6.12"), "bookworm");
        assert_eq!(suite("5.10"), "bullseye");
        assert_eq!(suite("7.x"), "sid");
    }
}
