//! `balancer top` as a person uses it: started in a real terminal (tmux), driven with keys,
//! read back from the screen. Root (the eBPF probes) and tmux are needed; the tmux server runs
//! on a socket of its own, so a user's tmux is never touched.
//!
//! Nothing here depends on timing beyond polling the pane until the expected text appears.
use std::{
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use balancer_tests::{VethPair, balancer_bin, require_root, set_threaded};

/// How long any one expected screen may take to appear (a loaded CI machine, debug builds).
const TIMEOUT: Duration = Duration::from_secs(60);

/// A tmux server on its own socket, killed on drop.
struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn start(width: u16, height: u16, command: &str) -> Tmux {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Tmux {
            socket: format!("balancer-top-test-{}-{seq}", std::process::id()),
            session: "top".to_string(),
        };
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            // No user configuration: same defaults everywhere.
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend(keys);
        assert!(self.tmux(&args).status.success(), "send-keys {keys:?}");
    }

    /// Types `text` literally (no key-name lookup).
    fn type_text(&self, text: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", &self.session, "-l", text])
                .status
                .success()
        );
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .tmux(&["capture-pane", "-p", "-t", &self.session])
                .stdout,
        )
        .into_owned()
    }

    /// Polls the pane until `pred` holds; panics with the last screen after [`TIMEOUT`].
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if start.elapsed() > TIMEOUT {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_all(&[text])
    }

    /// Waits until every one of `texts` is on screen at once: a capture can fall between two
    /// writes of one frame, so what belongs together is waited for together.
    fn wait_all(&self, texts: &[&str]) -> String {
        self.wait_for(&format!("{texts:?}"), |s| {
            texts.iter().all(|t| s.contains(t))
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// TCP transfers over the veth pair until dropped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(veth: Arc<VethPair>) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if veth.tcp_transfer(32 << 20).is_err() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// tmux plays the terminal; `cargo xtask setup` installs it.
fn require_tmux() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "tmux is needed for this test (apt-get install tmux)"
    );
}

/// The first row of the IRQ table: (number, name).
fn first_irq(screen: &str) -> Option<(String, String)> {
    let mut lines = screen.lines().skip_while(|l| !l.contains(" IRQ NAME"));
    lines.next()?;
    let row = lines.next()?;
    let mut words = row.split_whitespace();
    let n = words.next()?;
    let name = words.next()?;
    (n.parse::<u32>().is_ok()).then(|| (n.to_string(), name.trim_end_matches('~').to_string()))
}

#[test]
#[ignore = "needs root"]
fn top_in_a_terminal_answers_keys() {
    require_root();
    require_tmux();
    // NAPI traffic between two namespaces of our own, so the NAPI panel has something.
    let veth = Arc::new(VethPair::create().expect("creating the veth pair"));
    // Declared after the pair, so dropped (stopped and joined) before it, also on a panic:
    // the namespaces are deleted only once no thread uses them.
    let _traffic = Traffic::start(Arc::clone(&veth));

    let cmd = format!(
        "{} top --interval 0.5; echo balancer-exited-$?; sleep 600",
        balancer_bin().display()
    );
    let t = Tmux::start(120, 40, &cmd);
    t.wait_all(&[
        "balancer top",
        "every 0.5 s",
        "CPUs by NUMA node",
        "node 0",
        "IRQs by time",
        "NAPI instances",
        "q quit",
    ]);
    // The receiving veth polls through NAPI.
    t.wait_all(&["POLLS ON CPU", &veth.dev_b]);

    // s: the next sort key.
    t.keys(&["s"]);
    t.wait_text("IRQs by irq/s");
    t.keys(&["s", "s", "s", "s", "s"]);
    t.wait_text("IRQs by time");

    // /: a filter nothing matches, then one that matches the first IRQ.
    t.keys(&["/"]);
    t.wait_text("filter:");
    t.type_text("zz-no-such-irq");
    t.wait_all(&["match 'zz-no-such-irq'", "no IRQ matches the filter"]);
    t.keys(&["Escape"]);
    let s = t.wait_for("an active IRQ", |s| first_irq(s).is_some());
    let (_, name) = first_irq(&s).expect("checked");
    t.keys(&["/"]);
    t.type_text(&name);
    t.keys(&["Enter"]);
    let filtered = format!("match '{name}'");
    let s = t.wait_for("the IRQ row under the filter", |s| {
        s.contains(&filtered) && first_irq(s).is_some_and(|(_, n)| name.starts_with(&n))
    });
    let (irq_f, _) = first_irq(&s).expect("checked");

    // Enter: the detail of the first IRQ; Esc back.
    t.keys(&["Enter"]);
    t.wait_all(&[
        &format!("IRQ {irq_f} "),
        "affinity",
        "effective",
        "CPU time",
        "Interrupts per second",
        "Esc back",
    ]);
    t.keys(&["Escape"]);
    t.wait_text("IRQs by time");

    // ?: help, closed by any key.
    t.keys(&["?"]);
    t.wait_all(&["keys and columns", "sort IRQs", "sticking"]);
    t.keys(&["x"]);
    t.wait_for("help closed", |s| !s.contains("keys and columns"));

    // q: quits with 0 and leaves the alternate screen (the shell's echo is on the normal
    // screen, where the view is gone).
    t.keys(&["q"]);
    let s = t.wait_text("balancer-exited-0");
    assert!(!s.contains("NAPI instances"), "the view is gone: {s}");
}

/// The NAPI row of `dev` on the screen, its TASK% cell (the column under the header's
/// TASK%), or `None` while the row or the column is not there.
fn task_cell(screen: &str, dev: &str) -> Option<String> {
    let mut lines = screen.lines().skip_while(|l| !l.contains("  NAPI DEVICE"));
    let head = lines.next()?;
    let end = head.find("TASK%")? + "TASK%".len();
    // The device column may cut a long name; its first 7 characters are there.
    let prefix: String = dev.chars().take(7).collect();
    let row = lines.find(|l| l.contains(&prefix))?;
    let cell = row.get(..end)?.rsplit(' ').next()?;
    Some(cell.to_string())
}

/// At 80x24, with the test's veth pair in threaded NAPI mode and traffic over it: the system
/// vectors line (the local timer fires on every CPU) and the veth's kthread poll time marked
/// T in its NAPI row.
#[test]
#[ignore = "needs root"]
fn top_at_80x24_shows_system_vectors_and_threaded_polls() {
    require_root();
    require_tmux();
    let veth = Arc::new(VethPair::create().expect("creating the veth pair"));
    // Warm-up in softirq mode: the instances exist before they go threaded.
    veth.tcp_transfer(1 << 20).expect("warm-up traffic");
    for (ns, dev) in [(&veth.ns_a, &veth.dev_a), (&veth.ns_b, &veth.dev_b)] {
        set_threaded(ns, dev, true).expect("threaded on");
    }
    let _traffic = Traffic::start(Arc::clone(&veth));
    let t = Tmux::start(
        80,
        24,
        &format!("exec {} top --interval 0.5", balancer_bin().display()),
    );
    let s = t.wait_all(&["System vectors", "LOC ", "IRQ NAME", "TASK%", "q quit"]);
    let (sv, _) = s
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("System vectors"))
        .expect("checked");
    let line = s.lines().nth(sv + 1).unwrap_or_default();
    assert!(line.trim_start().starts_with("LOC "), "{s}");
    let dev = veth.dev_b.clone();
    let s = t.wait_for("the threaded veth's kthread poll time", |s| {
        task_cell(s, &dev).is_some_and(|c| c.contains('T'))
    });
    assert!(
        s.lines().all(|l| l.chars().count() <= 80),
        "the screen is 80 wide: {s}"
    );
    t.keys(&["q"]);
}

#[test]
fn top_without_a_terminal_points_to_report() {
    // The terminal check comes before the privilege check: no root needed.
    let out = Command::new(balancer_bin())
        .args(["top", "--interval", "1"])
        .output()
        .expect("running balancer");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs a terminal") && err.contains("balancer report"),
        "{err}"
    );
}

#[test]
fn top_rejects_a_bad_interval_and_dry_run_alone() {
    let out = Command::new(balancer_bin())
        .args(["top", "--interval", "0"])
        .output()
        .expect("running balancer");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval"));
    let out = Command::new(balancer_bin())
        .args(["top", "--dry-run"])
        .output()
        .expect("running balancer");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--balance"));
}

/// A vanished terminal (SSH dropped, tmux pane killed) ends `balancer top` instead of leaving
/// it spinning on a dead tty.
#[test]
#[ignore = "needs root"]
fn top_exits_when_its_terminal_goes_away() {
    require_root();
    require_tmux();
    let bin = balancer_bin();
    let t = Tmux::start(100, 30, &format!("exec {} top", bin.display()));
    t.wait_text("IRQs by time");
    let out = t.tmux(&["list-panes", "-t", &t.session, "-F", "#{pane_pid}"]);
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("pane pid");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());
    let _ = t.tmux(&["kill-server"]);
    let start = Instant::now();
    while proc_dir.exists() {
        // A zombie is gone for our purpose: it no longer runs.
        let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "balancer top (pid {pid}) still runs after its terminal went away"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
