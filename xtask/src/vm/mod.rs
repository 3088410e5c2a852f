//! `cargo xtask vm`: the kernel VM matrix.
//!
//! Each Debian kernel boots under qemu with 4 vCPUs in 2 NUMA nodes and a 4-queue virtio-net
//! NIC on node 1; inside, `guest-checks` (tests/src/bin/guest-checks.rs) drives traffic
//! between the guest's own NICs, runs `balancer` and prints one `CHECK` line per check. The
//! host kernel's row runs the host integration tests. Guests' host-side network lives in a
//! namespace per guest that is deleted at the end, also on failure or Ctrl-C.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

mod apt;
mod binaries;
mod host;
mod initramfs;
pub mod irqbalance;
mod kernel;
mod netns;
mod proc;
mod qemu;
mod report;

use kernel::{Kernel, Series};
use report::{Check, Row, Status, tail};

/// The host kernel's row; the Debian rows are [`kernel::SERIES`].
const HOST: &str = "host";

/// Modules the guest loads: the virtio PCI transport and the NIC driver (the rest follow as
/// dependencies, unless built in).
const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_net"];

#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// Kernels to run (repeat or comma-separate): 5.10, 6.1, 6.12, 6.x-bpo, 7.x, host.
    /// Default: all (`--list` shows the package each stands for).
    #[arg(long = "kernel", value_name = "KERNEL", value_delimiter = ',')]
    kernels: Vec<String>,
    /// Keep the work directory (initramfs, console and results logs) and print its path.
    #[arg(long)]
    keep: bool,
    /// List the kernels and where they come from, then exit.
    #[arg(long)]
    list: bool,
    /// Seconds after which a guest counts as hung and is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 420)]
    timeout: u64,
    /// Guests to run at the same time. Two on this 2-core machine: the matrix took 298 s
    /// against 365 s with one (tests/vm/README.md).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// qemu accelerator; KVM hangs guests on the build machines.
    #[arg(long, value_enum, default_value_t = qemu::Accel::Tcg)]
    accel: qemu::Accel,
    /// Print every check's detail, not only the failures'.
    #[arg(short, long)]
    verbose: bool,
    /// Extra kernel command-line parameters for the guests (e.g. `loglevel=7`).
    #[arg(long, value_name = "PARAMS", default_value = "")]
    append: String,
}

pub fn run(args: VmArgs) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let cache = root.join(".cache/vm");
    let (series, host) = select(&args.kernels)?;
    if args.list {
        list(&cache)?;
        return Ok(ExitCode::SUCCESS);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("cargo xtask vm needs root (network namespaces, tap devices, eBPF)");
    }
    proc::catch_signals()?;
    netns::remove_stale()?;
    let work = WorkDir::create(args.keep)?;
    let start = Instant::now();
    let mut rows = Vec::new();

    let target = binaries::StaticTarget::detect();
    if !series.is_empty() {
        preflight()?;
        let built = Instant::now();
        let binaries = target.build(&root)?;
        eprintln!(
            "xtask vm: guest binaries built in {:.0}s",
            built.elapsed().as_secs_f64()
        );
        let apt = apt::Apt::new(&cache);
        let checks = format!(
            "/bin/guest-checks --results /dev/ttyS1 --dut-mac {} --peer-mac {} --queues {}",
            qemu::DUT_MAC,
            qemu::PEER_MAC,
            qemu::QUEUES
        );
        let guests: Vec<GuestJob> = series
            .iter()
            .map(|s| prepare(&cache, &apt, &work.path, s, &binaries, &checks, &[]))
            .collect::<Result<_>>()?;
        // The host row runs in the slot the last guest leaves free, built beforehand so that
        // no build competes with the guests for the CPUs.
        let host_row = || host::run(&root, &work.path.join(HOST), &target);
        if host {
            let built = Instant::now();
            host::prebuild(&root, &work.path.join(HOST), &target);
            eprintln!(
                "xtask vm: host tests built in {:.0}s",
                built.elapsed().as_secs_f64()
            );
        }
        rows.extend(run_guests(&guests, &args, host.then_some(&host_row))?);
    } else if host {
        rows.push(host::run(&root, &work.path.join(HOST), &target)?);
    }

    println!("\n{}", report::render(&rows, args.verbose));
    println!("total wall time {:.0}s", start.elapsed().as_secs_f64());
    let failed = rows.iter().any(Row::failed);
    if args.keep {
        println!("work directory kept: {}", work.path.display());
    } else if failed {
        println!("rerun with --keep to keep the consoles, logs and initramfs");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Splits the requested kernels into Debian series and whether the host row runs.
fn select(requested: &[String]) -> Result<(Vec<&'static Series>, bool)> {
    if requested.is_empty() {
        return Ok((kernel::SERIES.iter().collect(), true));
    }
    let mut series = Vec::new();
    let mut host = false;
    for k in requested {
        if k == HOST {
            host = true;
        } else if let Some(s) = kernel::series(k) {
            series.push(s);
        } else {
            bail!(
                "unknown kernel {k:?}; choose from {}, {HOST}",
                kernel::SERIES
                    .iter()
                    .map(|s| s.label)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    // Rows in the matrix's order, each once, however they were asked for.
    series.sort_by_key(|s: &&Series| kernel::SERIES.iter().position(|k| k.label == s.label));
    series.dedup_by_key(|s| s.label);
    Ok((series, host))
}

/// Each row with its package, whether it is cached, and what apt would fetch now.
fn list(cache: &Path) -> Result<()> {
    let apt = apt::Apt::new(cache);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let lists = match apt.prepare(root) {
        Ok(have) => have,
        Err(err) => {
            println!("apt lists unavailable: {err:#}");
            false
        }
    };
    let width = kernel::SERIES
        .iter()
        .map(|s| s.label.len())
        .chain([HOST.len()])
        .max()
        .unwrap_or(6);
    for series in kernel::SERIES {
        let newest = if lists {
            newest_usable(&apt, series)
        } else {
            Err("no package lists yet (run as root, or any run fetches them)".into())
        };
        let source = match (kernel::cached(cache, series.label)?, newest) {
            (Some(k), Ok((p, _))) if p != k.package => format!(
                "{} (cached: {}); apt now lists {p}: delete .cache/vm/kernels/{} to take it",
                k.package, k.release, series.label
            ),
            (Some(k), _) => format!("{} (cached: {})", k.package, k.release),
            (None, Ok((p, note))) => format!("{p} (to download){note}"),
            (None, Err(why)) => why,
        };
        println!("{:width$}  {}: {source}", series.label, series.about);
    }
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "{HOST:width$}  {} (running kernel: cargo test -p balancer-tests --release)",
        release.trim()
    );
    Ok(())
}

/// The newest package of a series whose parts are all in the archive, with a note on the
/// newer ones that are not.
fn newest_usable(apt: &apt::Apt, series: &Series) -> std::result::Result<(String, String), String> {
    let candidates = kernel::candidates(apt, series).map_err(|e| format!("apt-cache: {e:#}"))?;
    let mut skipped = Vec::new();
    for package in candidates {
        match kernel::parts(apt, &package).map_err(|e| format!("apt-cache: {e:#}"))? {
            Ok(parts) => {
                let mut note = String::new();
                if parts != [package.clone()] {
                    note = format!(", split into {}", parts.join(" "));
                }
                if let Some(first) = skipped.first() {
                    note = format!(
                        "{note}; {} newer without all their parts, the newest {first}",
                        skipped.len()
                    );
                }
                return Ok((package, note));
            }
            Err(why) => skipped.push(format!("{package} ({why})")),
        }
    }
    Err(if skipped.is_empty() {
        "no package known to apt".into()
    } else {
        format!("no complete package: {}", skipped.join("; "))
    })
}

/// Tools the guests need on the host, with the Debian packages that bring them.
fn preflight() -> Result<()> {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("ip", "iproute2"),
        ("ethtool", "ethtool"),
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
        ("ldd", "libc-bin"),
        ("xz", "xz-utils"),
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect();
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| !dirs.iter().any(|d| d.join(tool).is_file()))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        bail!("missing host tools; apt-get install {}", missing.join(" "));
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing (modprobe tun)");
    }
    Ok(())
}

/// A guest ready to boot, or the reason it could not be prepared.
struct GuestJob {
    series: &'static Series,
    prepared: Result<(Kernel, PathBuf)>,
    dir: PathBuf,
    elapsed: Duration,
    /// The host build of guest-checks, which also serves the guest's host-side traffic.
    traffic_server: PathBuf,
}

impl GuestJob {
    /// The qemu guest of a prepared job (`prepared` is `Ok`); `tag` names its tap devices.
    fn guest<'a>(
        &'a self,
        (kernel, initramfs): &'a (Kernel, PathBuf),
        tag: &'a str,
        timeout_secs: u64,
        accel: qemu::Accel,
        append: &'a str,
    ) -> qemu::Guest<'a> {
        qemu::Guest {
            tag,
            kernel,
            initramfs,
            dir: &self.dir,
            timeout: Duration::from_secs(timeout_secs),
            accel,
            append,
            traffic_server: &self.traffic_server,
        }
    }
}

/// Fetches a kernel and builds its initramfs, whose /init runs `command` (guest-checks, or a
/// bench) with `extra` files (guest path, contents, mode) beside the static binaries. A
/// failure becomes that row's failure.
fn prepare(
    cache: &Path,
    apt: &apt::Apt,
    work: &Path,
    series: &'static Series,
    binaries: &[PathBuf],
    command: &str,
    extra: &[(String, Vec<u8>, u32)],
) -> Result<GuestJob> {
    proc::check_interrupted()?;
    let start = Instant::now();
    let dir = work.join(series.label);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let prepared = (|| {
        let kernel = kernel::fetch(cache, apt, series)?;
        let modules = kernel.module_closure(GUEST_MODULES)?;
        let init = include_str!("init.sh").replace("@GUEST_COMMAND@", command);
        let bins: Vec<(String, &Path)> = binaries::GUEST_BINARIES
            .iter()
            .zip(binaries)
            .map(|((name, _), path)| (format!("bin/{name}"), path.as_path()))
            .collect();
        let bins: Vec<(&str, &Path)> = bins.iter().map(|(g, h)| (g.as_str(), *h)).collect();
        let initramfs = dir.join("initramfs.cpio");
        let size = initramfs::build(
            &initramfs,
            &initramfs::Contents {
                init: &init,
                binaries: &bins,
                modules: &modules,
                extra,
            },
        )?;
        eprintln!(
            "xtask vm: {}: {} ({}), initramfs {:.1} MiB, modules: {}",
            series.label,
            kernel.release,
            kernel.package,
            size as f64 / (1024.0 * 1024.0),
            modules
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok((kernel, initramfs))
    })();
    let traffic_server = binaries::GUEST_BINARIES
        .iter()
        .zip(binaries)
        .find(|((name, _), _)| *name == "guest-checks")
        .map(|(_, path)| path.clone())
        .context("guest-checks is not among the guest binaries")?;
    Ok(GuestJob {
        series,
        prepared,
        dir,
        elapsed: start.elapsed(),
        traffic_server,
    })
}

/// Boots the guests, `--jobs` at a time, then runs `last` (the host row) in the first slot
/// that no guest is left for, and returns their rows in the order given, `last`'s at the end.
fn run_guests(
    jobs: &[GuestJob],
    args: &VmArgs,
    last: Option<&(dyn Fn() -> Result<Row> + Sync)>,
) -> Result<Vec<Row>> {
    let total = jobs.len() + usize::from(last.is_some());
    let next = Mutex::new(0usize);
    let rows: Mutex<Vec<Option<Result<Row>>>> = Mutex::new((0..total).map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..args.jobs.clamp(1, total.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *next;
                        *next += 1;
                        i
                    };
                    let row = match (jobs.get(i), last) {
                        (Some(job), _) => run_guest(job, args),
                        (None, Some(last)) if i == jobs.len() => last(),
                        _ => break,
                    };
                    rows.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(row);
                }
            });
        }
    });
    rows.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| bail!("a guest was never run")))
        .collect()
}

fn run_guest(job: &GuestJob, args: &VmArgs) -> Result<Row> {
    let prepared = match &job.prepared {
        Ok(p) => p,
        Err(err) => {
            return Ok(Row {
                label: job.series.label.into(),
                release: "?".into(),
                checks: vec![Check::new("guest", Status::Fail, format!("{err:#}"))],
                info: Vec::new(),
                table: Vec::new(),
                missing: Vec::new(),
                elapsed: job.elapsed,
            });
        }
    };
    let kernel = &prepared.0;
    proc::check_interrupted()?;
    eprintln!("xtask vm: {}: booting {}", job.series.label, kernel.release);
    let tag = job.series.label.replace('.', "_");
    let run = job
        .guest(prepared, &tag, args.timeout, args.accel, &args.append)
        .run()?;
    let lines = report::parse_guest(&run.results);
    let console = fs::read_to_string(&run.console).unwrap_or_default();
    let secs = run.elapsed.as_secs_f64();
    let failure = match run.ended {
        proc::Waited::TimedOut => Some(format!("hung: killed after {secs:.0}s")),
        proc::Waited::Exited(_) if lines.done => None,
        proc::Waited::Exited(status) => {
            let panic = console.contains("Kernel panic");
            let qemu_log = fs::read_to_string(&run.qemu_log).unwrap_or_default();
            Some(format!(
                "{} after {secs:.0}s ({status}){}",
                if panic {
                    "kernel panic"
                } else {
                    "guest stopped before finishing its checks"
                },
                if qemu_log.trim().is_empty() {
                    String::new()
                } else {
                    format!("\n  qemu:\n{}", tail(&qemu_log, 10))
                }
            ))
        }
    };
    // Say where the guest was and what its kernel said about it.
    let failure = failure.map(|mut why| {
        if let Some(check) = &lines.unfinished {
            why = format!("{why}, during check {check}");
        }
        let lockup = ["soft lockup", "hard LOCKUP", "detected stalls", "hung_task"]
            .iter()
            .filter(|s| console.contains(*s))
            .copied()
            .collect::<Vec<_>>();
        if !lockup.is_empty() {
            why = format!("{why}; the kernel reported: {}", lockup.join(", "));
        }
        why
    });
    let guest = match failure {
        None => Check::new(
            "guest",
            Status::Pass,
            format!("booted and finished in {secs:.0}s"),
        ),
        Some(why) => Check::new(
            "guest",
            Status::Fail,
            format!("{why}\n  console, last lines:\n{}", tail(&console, 30)),
        ),
    };
    eprintln!(
        "xtask vm: {}: guest ran {secs:.0}s, {} checks reported",
        job.series.label,
        lines.checks.len()
    );
    let mut checks = vec![guest];
    checks.extend(lines.checks);
    if let Some(check) = lines.unfinished {
        checks.push(Check::new(
            &check,
            Status::Fail,
            "started but never reported (see the guest failure)",
        ));
    }
    Ok(Row {
        label: job.series.label.into(),
        release: kernel.release.clone(),
        checks,
        info: lines.info,
        table: lines.table,
        missing: lines.missing,
        elapsed: job.elapsed + run.elapsed,
    })
}

/// The run's scratch directory, removed at the end unless `--keep`.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(keep: bool) -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!("balancer-vm-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
