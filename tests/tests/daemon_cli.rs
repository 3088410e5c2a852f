//! `balancer daemon`, `plan` and `restore` as a user runs them: config errors name the file,
//! line and key; restore puts a fixture root back from the journal the actuator wrote; the
//! single-instance lock and the irqbalance check refuse to start. Nothing here writes the
//! machine's own /proc or /sys.
use std::{fs, path::Path};

use balancer::{
    actuation::{Actuator, RealSys},
    cpumask::CpuSet,
    policy::{Action, ActionKind, Plan},
};
use balancer_tests::{balancer, copy_dir, require_root};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_the_commands_and_options() {
    let o = balancer(&["--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for cmd in ["daemon", "plan", "restore"] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
    let o = balancer(&["daemon", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--config",
        "--dry-run",
        "--foreground",
        "--pidfile",
        "--force",
        "--oneshot",
    ] {
        assert!(text.contains(opt), "daemon --help lacks {opt}:\n{text}");
    }
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile_dir();
    let cfg = dir.join("b.toml");
    fs::write(&cfg, "threshold = 90\n\nload-limt = 80\n").unwrap();
    for cmd in ["daemon", "plan"] {
        let o = balancer(&[cmd, "--config", cfg.to_str().unwrap()]);
        // The configuration's exit code.
        assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("b.toml:3: key `load-limt`: unknown field"),
            "{cmd}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    fs::write(&cfg, "strategy = \"weight\"\nthreshold = 120\n").unwrap();
    let o = balancer(&["daemon", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("b.toml:2: key `threshold`: must be a percentage"),
        "{}",
        stderr(&o)
    );
    let _ = fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "balancer-daemon-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn restore_puts_a_fixture_root_back() {
    let dir = tempfile_dir();
    let root = dir.join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vm-4cpu-2node"),
        &root,
    );
    let journal = dir.join("journal.json");
    let before: Vec<String> = [36, 37, 38]
        .iter()
        .map(|i| fs::read_to_string(root.join(format!("proc/irq/{i}/smp_affinity"))).unwrap())
        .collect();
    let rps = root.join("sys/class/net/eth1/queues/rx-1/rps_cpus");
    let rps_before = fs::read_to_string(&rps).unwrap();
    let mut act = Actuator::new(&root, &journal, RealSys).unwrap();
    let plan = Plan {
        actions: vec![
            Action {
                kind: ActionKind::Move {
                    irq: 36,
                    companions: vec![37],
                    from: CpuSet::from_cpus([0]),
                    targets: vec![2],
                    weight: 0.3,
                },
                reason: String::new(),
            },
            Action {
                kind: ActionKind::Move {
                    irq: 38,
                    companions: vec![],
                    from: CpuSet::from_cpus([1]),
                    targets: vec![3],
                    weight: 0.3,
                },
                reason: String::new(),
            },
            Action {
                kind: ActionKind::SetRps {
                    netdev: "eth1".into(),
                    queue: 1,
                    cpus: CpuSet::from_cpus([2]),
                },
                reason: String::new(),
            },
        ],
        findings: vec![],
        overloaded: vec![],
        relievable: vec![],
        tick: 0,
        balancing: false,
        swaps: Vec::new(),
        checked: Vec::new(),
    };
    let out = act.apply(&plan, 4);
    assert!(out.iter().all(|o| o.is_applied()), "{out:?}");
    assert_eq!(fs::read_to_string(&rps).unwrap(), "4");

    let cfg = scratch_config(&dir, &journal);
    let o = balancer(&[
        "restore",
        "--config",
        cfg.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("restored").count(), 4, "{text}");
    for (i, want) in [36, 37, 38].iter().zip(&before) {
        let now = fs::read_to_string(root.join(format!("proc/irq/{i}/smp_affinity"))).unwrap();
        assert_eq!(now.trim(), want.trim(), "IRQ {i}");
    }
    assert_eq!(fs::read_to_string(&rps).unwrap().trim(), rps_before.trim());
    assert!(!journal.exists());
    // Nothing left: the config's journal is absent, which a restore says and succeeds...
    let o = balancer(&["restore", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to restore"));
    // ...but a journal named with --journal that is not there is a usage error.
    let o = balancer(&[
        "restore",
        "--config",
        cfg.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no journal at"), "{}", stderr(&o));
    let o = balancer(&[
        "restore",
        "--config",
        cfg.to_str().unwrap(),
        "--journal",
        "/nonexistent/journal.json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let _ = fs::remove_dir_all(&dir);
}

/// A config whose lock file and journal are in `dir`, so tests never take the machine's.
fn scratch_config(dir: &Path, journal: &Path) -> std::path::PathBuf {
    let cfg = dir.join("restore.toml");
    fs::write(
        &cfg,
        format!(
            "lock-file = \"{}\"\njournal = \"{}\"\n",
            dir.join("lock").display(),
            journal.display()
        ),
    )
    .unwrap();
    cfg
}

/// A fixture root with a boot id, and a journal of one move of IRQ 36 written there.
fn moved_fixture(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("root");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vm-4cpu-2node"),
        &root,
    );
    fs::create_dir_all(root.join("proc/sys/kernel/random")).unwrap();
    fs::write(root.join("proc/sys/kernel/random/boot_id"), "boot-a\n").unwrap();
    let journal = dir.join("journal.json");
    let mut act = Actuator::new(&root, &journal, RealSys).unwrap();
    let out = act.apply(
        &Plan {
            actions: vec![Action {
                kind: ActionKind::Move {
                    irq: 36,
                    companions: vec![37],
                    from: CpuSet::from_cpus([0]),
                    targets: vec![2],
                    weight: 0.3,
                },
                reason: String::new(),
            }],
            findings: vec![],
            overloaded: vec![],
            relievable: vec![],
            tick: 0,
            balancing: false,
            swaps: Vec::new(),
            checked: Vec::new(),
        },
        4,
    );
    assert!(out[0].is_applied(), "{out:?}");
    let cfg = scratch_config(dir, &journal);
    (root, journal, cfg)
}

fn restore_cli(cfg: &Path, root: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "restore",
        "--config",
        cfg.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    balancer(&args)
}

/// While another balancer holds the daemon's lock, restore refuses (exit 3) naming its pid
/// and writes nothing; once it is released, restore runs.
#[test]
fn restore_refuses_while_a_balancer_runs() {
    let dir = tempfile_dir();
    let (root, journal, cfg) = moved_fixture(&dir);
    let held = balancer::actuation::try_lock(&dir.join("lock")).unwrap();
    let o = restore_cli(&cfg, &root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "names the holder: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(journal.exists());
    let now = fs::read_to_string(root.join("proc/irq/36/smp_affinity")).unwrap();
    assert_eq!(now, "4", "nothing restored under the holder");
    drop(held);
    let o = restore_cli(&cfg, &root, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!journal.exists());
    let _ = fs::remove_dir_all(&dir);
}

/// Journals that cannot be used are refused with exit 4, one line that says what to do,
/// and nothing written: another boot (unless --force), an unknown version, damage, a
/// target that is not balancer's.
#[test]
fn restore_refuses_journals_it_cannot_trust() {
    let dir = tempfile_dir();
    let (root, journal, cfg) = moved_fixture(&dir);
    let good = fs::read_to_string(&journal).unwrap();
    let affinity = || fs::read_to_string(root.join("proc/irq/36/smp_affinity")).unwrap();

    fs::write(root.join("proc/sys/kernel/random/boot_id"), "boot-b\n").unwrap();
    let o = restore_cli(&cfg, &root, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("another boot") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(affinity(), "4");
    fs::write(root.join("proc/sys/kernel/random/boot_id"), "boot-a\n").unwrap();

    let victim = dir.join("victim.txt");
    fs::write(&victim, "precious\n").unwrap();
    let cases = [
        (
            good.replace("\"version\": 2", "\"version\": 99"),
            "format version 99",
        ),
        (String::new(), "is empty"),
        (good[..good.len() / 2].to_string(), "not JSON"),
        (
            good.replace("proc/irq/37/smp_affinity", victim.to_str().unwrap()),
            "not a plain relative path",
        ),
        (
            good.replace("proc/irq/37/smp_affinity", "etc/passwd"),
            "none of the files balancer changes",
        ),
        (
            good.replace(
                "proc/irq/37/smp_affinity",
                "proc/irq/37/../../../victim.txt",
            ),
            "`..`",
        ),
    ];
    for (text, want) in &cases {
        fs::write(&journal, text).unwrap();
        let o = restore_cli(&cfg, &root, &["--force"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(4), "{want}: {err}");
        assert!(err.contains(want), "{want}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(affinity(), "4", "{want}: nothing written");
        assert_eq!(&fs::read_to_string(&journal).unwrap(), text, "journal kept");
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");

    // Another boot with --force: restored.
    fs::write(&journal, &good).unwrap();
    fs::write(root.join("proc/sys/kernel/random/boot_id"), "boot-b\n").unwrap();
    let o = restore_cli(&cfg, &root, &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!journal.exists());
    let _ = fs::remove_dir_all(&dir);
}

/// An IRQ that vanished since it was moved: one warning, the rest restored, exit 0, and the
/// entry dropped so that the next run has nothing left.
#[test]
fn restore_skips_a_vanished_irq_once() {
    let dir = tempfile_dir();
    let (root, journal, cfg) = moved_fixture(&dir);
    fs::remove_dir_all(root.join("proc/irq/37")).unwrap();
    let o = restore_cli(&cfg, &root, &[]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("warning: 1 target(s) gone") && err.contains("/proc/irq/37/smp_affinity"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("restored /proc/irq/36/smp_affinity"));
    assert!(!journal.exists(), "the gone entry was dropped");
    let _ = fs::remove_dir_all(&dir);
}

/// A dry-run daemon takes no lock, and a writing daemon refuses to start on a held lock;
/// the pidfile names the dry run; SIGHUP with a broken config
/// keeps the old one, with a good one reloads; the loopback metrics endpoint serves the
/// text format, counts the reloads, and moves to a new address on SIGHUP (keeping the
/// current one when the new one is taken); SIGTERM stops it cleanly.
#[test]
#[ignore = "needs root"]
fn one_instance_at_a_time() {
    require_root();
    let dir = tempfile_dir();
    let cfg = dir.join("b.toml");
    fs::write(
        &cfg,
        format!(
            "lock-file = \"{}\"\njournal = \"{}\"\nmetrics = \"127.0.0.1:0\"\n\
             short-interval = 0.5\nlong-interval = 1\n",
            dir.join("lock").display(),
            dir.join("j.json").display()
        ),
    )
    .unwrap();
    let pidfile = dir.join("pid");
    let mut first = std::process::Command::new(balancer_tests::balancer_bin())
        .args([
            "daemon",
            "--dry-run",
            "--foreground",
            "--force",
            "--pidfile",
        ])
        .arg(&pidfile)
        .arg("--config")
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its log, as it comes.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = std::sync::Arc::clone(&log);
        let mut err = first.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut err, &mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if log.lock().unwrap().contains(what) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        false
    };
    assert!(wait_for("started"), "{}", log.lock().unwrap());
    // The dry run holds no lock: the test can take it, as a writing balancer would, and a
    // second writer then refuses (before it measures or writes anything).
    let held = hold_lock(&dir.join("lock"));
    let o = balancer(&[
        "daemon",
        "--foreground",
        "--force",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    drop(held);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("another balancer (daemon or top --balance) holds"),
        "{}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("(pid {})", std::process::id())),
        "{}",
        stderr(&o)
    );
    let pid = fs::read_to_string(&pidfile).unwrap_or_default();
    assert_eq!(pid.trim(), first.id().to_string(), "pidfile");
    // SIGHUP with a broken file keeps the old config; with a good one reloads.
    let good = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, "threshold = 900\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGHUP) };
    assert!(
        wait_for("config not reloaded, keeping the old one"),
        "{}",
        log.lock().unwrap()
    );
    fs::write(&cfg, &good).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(first.id() as i32, libc::SIGHUP) };
    assert!(wait_for("config reloaded"), "{}", log.lock().unwrap());
    assert!(
        wait_for("config reloaded: nothing changed"),
        "{}",
        log.lock().unwrap()
    );
    // The metrics endpoint (loopback) serves the text format once an interval is measured.
    let addr = {
        let text = log.lock().unwrap().clone();
        text.split("metrics on http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no metrics address in the log: {text}"))
    };
    let scrape = |addr: &str| {
        let mut body = String::new();
        if let Ok(mut c) = std::net::TcpStream::connect(addr) {
            use std::io::{Read as _, Write as _};
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(30)));
            let _ = c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
            let _ = c.read_to_string(&mut body);
        }
        body
    };
    // Before the first interval it answers too, with zeros.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut body = String::new();
    while std::time::Instant::now() < deadline
        && (!body.contains("balancer_intervals_total")
            || body.contains("balancer_intervals_total 0\n"))
    {
        std::thread::sleep(std::time::Duration::from_millis(300));
        body = scrape(&addr);
    }
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    for name in [
        "balancer_cpu_busy_ratio{cpu=\"0\"",
        "balancer_cpu_irq_ratio",
        "balancer_cpu_softirq_seconds_total{cpu=\"0\",vector=\"TIMER\"}",
        "balancer_moves_total",
        "balancer_sticking_events_total",
        "balancer_dry_run 1\n",
        "balancer_config_reloads_total 1\n",
        "balancer_config_reload_failures_total 1\n",
    ] {
        assert!(body.contains(name), "metrics lack {name}: {body}");
    }
    // SIGHUP with a new address: the new listener serves, the old one is closed.
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let moved = format!("127.0.0.1:{}", free_port());
    fs::write(&cfg, good.replace("127.0.0.1:0", &moved)).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(first.id() as i32, libc::SIGHUP) };
    assert!(
        wait_for(&format!("metrics on http://{moved}/metrics")),
        "{}",
        log.lock().unwrap()
    );
    assert!(scrape(&moved).starts_with("HTTP/1.0 200 OK"));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the old listener {addr} is closed"
    );
    // An address taken by someone else: logged and counted, the current one serves on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    fs::write(&cfg, good.replace("127.0.0.1:0", &taken_addr)).unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(first.id() as i32, libc::SIGHUP) };
    assert!(
        wait_for(&format!("listening on {taken_addr} for metrics")),
        "{}",
        log.lock().unwrap()
    );
    let body = scrape(&moved);
    assert!(
        body.contains("balancer_errors_total{stage=\"metrics_listen\"} 1\n"),
        "{body}"
    );
    drop(taken);
    // SAFETY: as above.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let status = first.wait().unwrap();
    let _ = reader.join();
    let log = log.lock().unwrap().clone();
    assert!(status.success(), "stopped cleanly on SIGTERM: {log}");
    assert!(log.contains("b.toml:1: key `threshold`"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!pidfile.exists(), "pidfile removed on exit");
    let _ = fs::remove_dir_all(&dir);
}

/// `plan --json` measures the live machine (root) and prints the plan with its reasons,
/// changing no affinity.
#[test]
#[ignore = "needs root"]
fn plan_prints_json_and_changes_nothing() {
    require_root();
    let affinities = || -> Vec<(u32, String)> {
        let text = fs::read_to_string("/proc/interrupts").unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
            .filter_map(|n| {
                let a = fs::read_to_string(format!("/proc/irq/{n}/smp_affinity")).ok()?;
                Some((n, a))
            })
            .collect()
    };
    let a0 = affinities();
    let o = balancer(&["plan", "--duration", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["plan"]["actions"].is_array(), "{v}");
    assert!(v["plan"]["findings"].is_array(), "{v}");
    assert!(v["cpus"].as_array().is_some_and(|c| !c.is_empty()), "{v}");
    assert_eq!(a0, affinities(), "plan changed an affinity");
}

/// Holds `path` as a running balancer would (flock, pid inside) while alive: a command that
/// writes must refuse on it, so a test can never reach the machine's own /proc/irq.
/// (The file is only kept open: closing it drops the lock.)
struct HeldLock(#[allow(dead_code)] fs::File);

fn hold_lock(path: &Path) -> HeldLock {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: a valid fd.
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0,
        "the lock {} is free",
        path.display()
    );
    fs::write(path, format!("{}\n", std::process::id())).unwrap();
    HeldLock(f)
}

/// A process named irqbalance (sleep run through a symlink of that name) and a config whose
/// lock-file the test holds, so that nothing could write even if the irqbalance check failed.
struct FakeIrqbalance {
    child: std::process::Child,
    _held: HeldLock,
    dir: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

impl FakeIrqbalance {
    fn start() -> FakeIrqbalance {
        let dir = tempfile_dir();
        let fake = dir.join("irqbalance");
        // A symlink, not a copy: the kernel names the process after the path it ran (comm
        // "irqbalance"), and a freshly written copy can fail to exec with ETXTBSY while
        // another test thread's fork still holds its write descriptor.
        std::os::unix::fs::symlink("/bin/sleep", &fake).unwrap();
        let child = std::process::Command::new(&fake).arg("30").spawn().unwrap();
        let lock = dir.join("lock");
        let held = hold_lock(&lock);
        let cfg = dir.join("b.toml");
        fs::write(&cfg, format!("lock-file = \"{}\"\n", lock.display())).unwrap();
        FakeIrqbalance {
            child,
            _held: held,
            dir,
            cfg,
        }
    }
}

impl Drop for FakeIrqbalance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// With a process named irqbalance running, the daemon and `top --balance` refuse to write
/// unless --force (exit 3).
#[test]
fn refuses_to_run_beside_irqbalance() {
    let fake = FakeIrqbalance::start();
    let cfg_s = fake.cfg.to_str().unwrap();
    let refused = [
        balancer(&["daemon", "--config", cfg_s]),
        balancer(&["top", "--balance"]),
    ];
    for o in &refused {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(3), "{err}");
        assert!(err.contains("irqbalance runs (pid"), "{err}");
        assert!(err.contains("--force"), "{err}");
    }
}

/// A dry run takes no lock (the test holds it) and starts beside irqbalance, with a warning.
#[test]
#[ignore = "needs root"]
fn a_dry_run_starts_beside_irqbalance() {
    require_root();
    let fake = FakeIrqbalance::start();
    let mut dry = std::process::Command::new(balancer_tests::balancer_bin())
        .args(["daemon", "--dry-run", "--foreground", "--config"])
        .arg(&fake.cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = dry.stderr.take().unwrap();
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    while !log.contains("CPUs taking no IRQs") && std::time::Instant::now() < deadline {
        match std::io::Read::read(&mut err, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => log.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dry.id() as i32, libc::SIGTERM) };
    let _ = dry.wait();
    assert!(log.contains("started (dry run)"), "{log}");
    assert!(log.contains("irqbalance runs (pid"), "{log}");
    assert!(log.contains("CPUs taking no IRQs: excluded none"), "{log}");
}

/// A config whose lock, journal (and, when given, metrics address) are in `dir`, measuring
/// one-second intervals.
fn daemon_config(dir: &Path, metrics: Option<&str>) -> std::path::PathBuf {
    let cfg = dir.join("daemon.toml");
    let mut text = format!(
        "lock-file = \"{}\"\njournal = \"{}\"\nshort-interval = 0.5\nlong-interval = 1\n",
        dir.join("lock").display(),
        dir.join("journal.json").display()
    );
    if let Some(m) = metrics {
        text.push_str(&format!("metrics = \"{m}\"\n"));
    }
    fs::write(&cfg, text).unwrap();
    cfg
}

/// `--oneshot --dry-run` measures one interval, logs the plan, exits 0 and writes nothing
/// (no journal, so no change was even prepared); a start-up failure exits non-zero.
#[test]
#[ignore = "needs root"]
fn oneshot_measures_once_and_exits() {
    require_root();
    let dir = tempfile_dir();
    let cfg = daemon_config(&dir, None);
    let pidfile = dir.join("pid");
    let started = std::time::Instant::now();
    let o = balancer(&[
        "daemon",
        "--oneshot",
        "--dry-run",
        "--force",
        "--config",
        cfg.to_str().unwrap(),
        "--pidfile",
        pidfile.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("started (dry run) (one interval)"), "{err}");
    assert!(
        err.contains("one interval done:") && err.contains("0 failed (dry run)"),
        "{err}"
    );
    assert_eq!(err.matches("one interval done").count(), 1, "{err}");
    // It waited for the interval (long-interval = 1 s) before measuring.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(
        !dir.join("journal.json").exists(),
        "a dry run journals nothing"
    );
    assert!(!pidfile.exists(), "pidfile removed on exit");

    let o = balancer(&[
        "daemon",
        "--oneshot",
        "--dry-run",
        "--force",
        "--config",
        cfg.to_str().unwrap(),
        "--pidfile",
        dir.join("no/such/dir/pid").to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("writing the pidfile"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

/// Runs the daemon detached (no --foreground), stderr to a file: the child keeps it open,
/// so a pipe would not see its end while the daemon runs.
fn detached(cfg: &Path, pidfile: &Path, log: &Path) -> std::process::ExitStatus {
    std::process::Command::new(balancer_tests::balancer_bin())
        .args(["daemon", "--dry-run", "--force", "--config"])
        .arg(cfg)
        .arg("--pidfile")
        .arg(pidfile)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .status()
        .unwrap()
}

/// Detached, the command returns only once the daemon is ready (exit 0, the pidfile names
/// the running daemon), or with the daemon's own exit code and error when it fails at
/// start-up (a pidfile it cannot write, a metrics port that is taken).
#[test]
#[ignore = "needs root"]
fn detached_start_waits_for_readiness() {
    require_root();
    let dir = tempfile_dir();
    let log = dir.join("log");

    let cfg = daemon_config(&dir, None);
    let status = detached(&cfg, &dir.join("no/such/dir/pid"), &log);
    let err = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("writing the pidfile"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = daemon_config(&dir, Some(&taken.local_addr().unwrap().to_string()));
    let pidfile = dir.join("pid");
    let status = detached(&cfg, &pidfile, &log);
    let err = fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("for metrics"), "{err}");
    drop(taken);

    let cfg = daemon_config(&dir, None);
    let status = detached(&cfg, &pidfile, &log);
    let err = fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{err}");
    // Ready means started: the log says so and the pidfile names a live daemon.
    assert!(err.contains("started (dry run)"), "{err}");
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only checks the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "daemon {pid} runs");
    // SAFETY: the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pidfile.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !pidfile.exists(),
        "stopped on SIGTERM and removed its pidfile"
    );
    // Give it the moment between removing the pidfile and exiting before cleaning up.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        fs::read_to_string(&log).unwrap().contains("stopped"),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Under systemd (`Type=notify`): READY=1 on the notify socket once started, then watchdog
/// keep-alives while it waits (WATCHDOG_USEC = 1 s: one at least every half second), and
/// STOPPING=1 on SIGTERM. The socket is the test's own.
#[test]
#[ignore = "needs root"]
fn notifies_systemd_when_ready_and_keeps_the_watchdog_fed() {
    require_root();
    let dir = tempfile_dir();
    let cfg = daemon_config(&dir, None);
    let sock_path = dir.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut child = std::process::Command::new(balancer_tests::balancer_bin())
        .args(["daemon", "--dry-run", "--foreground", "--force", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && got
            .iter()
            .filter(|m: &&String| m.as_str() == "WATCHDOG=1\n")
            .count()
            < 3
    {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Keep-alives already sent may come first.
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if got.last().is_some_and(|m| m == "STOPPING=1\n") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        got.first()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=measuring (dry run)")),
        "{got:?}"
    );
    assert!(
        got.iter().filter(|m| m.as_str() == "WATCHDOG=1\n").count() >= 3,
        "{got:?}"
    );
    assert!(got.iter().any(|m| m == "STOPPING=1\n"), "{got:?}");
    let _ = fs::remove_dir_all(&dir);
}
