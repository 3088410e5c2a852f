//! Two scenarios of `guest-checks` (a child module of it: it uses the guest, traffic and
//! metrics helpers there): `kill-restore`, the daemon SIGKILLed in the middle of applying a
//! plan, and `saturation-sticking`, softirq NAPI that keeps polling on its old CPU after its
//! IRQ moved while the queue was saturated.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::sync::mpsc;

use balancer::actuation::{Target, journal_entries};
use balancer::cpumask::CpuSet;
use balancer_tests::host_traffic::{Flow, HostTraffic};

use super::*;

/// Every value balancer may change for the dut, by the journal's target path (relative to
/// `/`): each queue IRQ's `smp_affinity` and each rx queue's `rps_cpus`.
type Values = BTreeMap<String, CpuSet>;

fn value_paths(dut: &Nic) -> Vec<String> {
    let irqs = dut
        .all_irqs()
        .into_iter()
        .map(|i| format!("proc/irq/{i}/smp_affinity"));
    let rps = dut
        .input_irqs
        .keys()
        .map(|q| format!("sys/class/net/{}/queues/rx-{q}/rps_cpus", dut.name));
    irqs.chain(rps).collect()
}

/// The values as the kernel shows them now, as text.
fn raw_values(paths: &[String]) -> Result<BTreeMap<String, String>> {
    paths
        .iter()
        .map(|p| Ok((p.clone(), read_trimmed(&format!("/{p}"))?)))
        .collect()
}

fn dut_values(dut: &Nic) -> Result<Values> {
    raw_values(&value_paths(dut))?
        .into_iter()
        .map(|(p, v)| {
            let set = CpuSet::parse_mask(&v).with_context(|| format!("/{p} holds {v:?}"))?;
            Ok((p, set))
        })
        .collect()
}

/// Writes each value back (best effort: this is cleanup).
fn put_back(raw: &BTreeMap<String, String>) {
    for (p, v) in raw {
        let _ = fs::write(format!("/{p}"), v);
    }
}

/// "irq 37" or "rx-2 rps" for a value's path.
fn short(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["proc", "irq", n, _] => format!("irq {n}"),
        [.., q, "rps_cpus"] => format!("{q} rps"),
        _ => path.to_string(),
    }
}

fn cpus(set: &CpuSet) -> String {
    if set.is_empty() {
        "-".into()
    } else {
        set.to_string()
    }
}

fn describe(v: &Values) -> String {
    v.iter()
        .map(|(p, s)| format!("{}:{}", short(p), cpus(s)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The journal's original of each file target, parsed (a journal that does not load is an
/// error: it is written atomically, so it must always load).
fn journal_originals(path: &Path) -> Result<Values> {
    let Some(entries) =
        journal_entries(path).with_context(|| format!("loading {}", path.display()))?
    else {
        return Ok(Values::new());
    };
    entries
        .into_iter()
        .filter_map(|(target, original)| match target {
            Target::File { path } => Some((path, original.trim().to_string())),
            Target::Thread { .. } => None,
        })
        .map(|(p, v)| Ok((p, CpuSet::parse_mask(&v)?)))
        .collect()
}

/// The differences of `now` from `want`, as text.
fn differences(want: &Values, now: &Values) -> Vec<String> {
    want.iter()
        .filter(|(p, w)| now.get(*p) != Some(*w))
        .map(|(p, w)| {
            format!(
                "{} is {} (was {})",
                short(p),
                now.get(p).map_or("gone".into(), cpus),
                cpus(w)
            )
        })
        .collect()
}

fn write_value(path: &str, value: &str) -> Result<()> {
    fs::write(format!("/{path}"), value).with_context(|| format!("writing {value} to /{path}"))
}

// ---------------------------------------------------------------------------------------
// A tracer of the daemon's writes (ptrace, syscall stops of its main thread, where the
// engine applies plans).

/// One write(2) of the traced daemon to one of the [`Values`] files, as the tracer saw it.
struct SeenWrite {
    target: String,
    value: String,
    /// At its entry, with the daemon stopped there: the target's original in the journal on
    /// disk (None: not journaled), or why the journal did not load.
    journaled: std::result::Result<Option<CpuSet>, String>,
    /// The write's return value, from its exit stop.
    result: Option<i64>,
}

impl SeenWrite {
    fn done(&self) -> bool {
        self.result.is_some_and(|r| r >= 0)
    }
}

/// What the tracer saw until the daemon ended, and how it ended (a wait status).
struct Traced {
    writes: Vec<SeenWrite>,
    status: i32,
}

/// Decides at each completed write whether to stop the daemon there for good.
type KillAt = Box<dyn FnMut(&[SeenWrite]) -> bool + Send>;

struct Tracer {
    pid: u32,
    handle: JoinHandle<Result<Traced>>,
    /// The tracer holds the daemon stopped where `kill_at` said, and says so here...
    held: mpsc::Receiver<()>,
    /// ...until told to kill it.
    go: mpsc::Sender<()>,
}

fn ptrace(req: libc::c_long, pid: u32, data: usize) -> std::io::Result<libc::c_long> {
    // SAFETY: requests that take no pointer (SEIZE, INTERRUPT, SYSCALL: data is a plain
    // integer); the tracee is our child.
    let r = unsafe {
        libc::ptrace(
            req as _,
            pid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn regs(pid: u32) -> std::io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain data that GETREGS fills.
    unsafe {
        let mut r: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(
            libc::PTRACE_GETREGS as _,
            pid as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            (&raw mut r).cast::<libc::c_void>(),
        ) == -1
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r)
    }
}

/// The journal path of the file `fd` of `pid` names, when it is one of the values.
fn target_of(pid: u32, fd: u64) -> Option<String> {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let link = link.to_string_lossy();
    let parts: Vec<&str> = link.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["proc", "irq", n, f @ ("smp_affinity" | "smp_affinity_list")] => {
            Some(format!("proc/irq/{n}/{f}"))
        }
        // /sys/devices/.../net/<dev>/queues/rx-N/rps_cpus
        [.., "net", dev, "queues", q, "rps_cpus"] => {
            Some(format!("sys/class/net/{dev}/queues/{q}/rps_cpus"))
        }
        _ => None,
    }
}

/// Traces the syscalls of `pid`'s main thread (it plans and applies): records every write
/// to one of the values with the journal's state at that moment; where `kill_at` says so,
/// holds the daemon stopped after that write, tells [`Tracer::held`], and SIGKILLs it once
/// [`Tracer::go`] says. Returns when the daemon ended.
fn start_tracer(pid: u32, journal: PathBuf, mut kill_at: KillAt) -> Result<Tracer> {
    let (attached_tx, attached_rx) = mpsc::channel::<std::result::Result<(), String>>();
    let (held_tx, held) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let handle = thread::spawn(move || -> Result<Traced> {
        // Every ptrace request comes from this thread: the tracer is the thread that seized.
        let seized = ptrace(
            libc::PTRACE_SEIZE as _,
            pid,
            libc::PTRACE_O_TRACESYSGOOD as usize,
        )
        .and_then(|_| ptrace(libc::PTRACE_INTERRUPT as _, pid, 0));
        if let Err(e) = seized {
            let _ = attached_tx.send(Err(format!("ptrace seize of pid {pid}: {e}")));
            bail!("ptrace seize of pid {pid}: {e}");
        }
        let mut writes: Vec<SeenWrite> = Vec::new();
        let mut open: Option<usize> = None;
        let mut announced = false;
        let mut killed = false;
        let mem = File::open(format!("/proc/{pid}/mem")).ok();
        loop {
            let mut st = 0;
            // SAFETY: waits for our own tracee; st is a valid pointer.
            let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut st, libc::__WALL) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("waitpid {pid}: {e}");
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                return Ok(Traced { writes, status: st });
            }
            if !libc::WIFSTOPPED(st) {
                continue;
            }
            let sig = libc::WSTOPSIG(st);
            let event = (st >> 16) & 0xffff;
            let mut inject = 0;
            if sig == (libc::SIGTRAP | 0x80) {
                let r = regs(pid)?;
                // x86-64: rax holds -ENOSYS at a syscall's entry stop, its result at exit.
                let entry = r.rax as i64 == -(libc::ENOSYS as i64);
                if entry {
                    if r.orig_rax as i64 == libc::SYS_write
                        && let Some(target) = target_of(pid, r.rdi)
                    {
                        let mut buf = vec![0u8; (r.rdx as usize).min(256)];
                        let n = mem
                            .as_ref()
                            .and_then(|m| m.read_at(&mut buf, r.rsi).ok())
                            .unwrap_or(0);
                        let value = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                        let journaled = journal_originals(&journal)
                            .map(|j| j.get(&target).cloned())
                            .map_err(|e| format!("{e:#}"));
                        writes.push(SeenWrite {
                            target,
                            value,
                            journaled,
                            result: None,
                        });
                        open = Some(writes.len() - 1);
                    }
                } else if let Some(i) = open.take() {
                    writes[i].result = Some(r.rax as i64);
                    if !killed && kill_at(&writes) {
                        killed = true;
                        let _ = held_tx.send(());
                        let _ = go_rx.recv_timeout(Duration::from_secs(120));
                        // SAFETY: SIGKILL to our own (stopped) tracee.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    }
                }
            } else if event == libc::PTRACE_EVENT_STOP {
                if !announced {
                    announced = true;
                    let _ = attached_tx.send(Ok(()));
                }
            } else {
                // A signal for the daemon (SIGHUP, SIGTERM): deliver it.
                inject = sig as usize;
            }
            match ptrace(libc::PTRACE_SYSCALL as _, pid, inject) {
                Ok(_) => {}
                // Killed meanwhile: waitpid says so next.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => bail!("PTRACE_SYSCALL {pid}: {e}"),
            }
        }
    });
    match attached_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(Tracer {
            pid,
            handle,
            held,
            go,
        }),
        Ok(Err(e)) => Err(anyhow!(e)),
        Err(_) => Err(anyhow!("the tracer of pid {pid} did not attach in 30 s")),
    }
}

impl Tracer {
    /// Kills the daemon (if the tracer holds it, or it runs on) and returns what was seen.
    fn kill(self) -> Result<Traced> {
        let _ = self.go.send(());
        // SAFETY: SIGKILL to our own child, stopped or not.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        self.finish()
    }

    /// Waits until the daemon ended.
    fn finish(self) -> Result<Traced> {
        let _ = self.go.send(());
        self.handle
            .join()
            .map_err(|_| anyhow!("the tracer panicked"))?
    }
}

/// Every traced write whose target was not journaled with its original at the moment it was
/// made, as text.
fn unjournaled(writes: &[SeenWrite], original: &Values, who: &str) -> Vec<String> {
    writes
        .iter()
        .filter_map(|w| {
            let want = original.get(&w.target);
            match &w.journaled {
                Ok(Some(j)) if Some(j) == want => None,
                Ok(Some(j)) => Some(format!(
                    "{who} wrote {} ({}) while the journal's original was {} (the value before \
                     the run: {})",
                    short(&w.target),
                    w.value,
                    cpus(j),
                    want.map_or("?".into(), cpus)
                )),
                Ok(None) => Some(format!(
                    "{who} wrote {} ({}) before journaling it",
                    short(&w.target),
                    w.value
                )),
                Err(e) => Some(format!(
                    "{who} wrote {} while the journal did not load: {e}",
                    short(&w.target)
                )),
            }
        })
        .collect()
}

fn list_writes(writes: &[SeenWrite]) -> String {
    if writes.is_empty() {
        return "none".into();
    }
    writes
        .iter()
        .map(|w| {
            format!(
                "{}={}{}",
                short(&w.target),
                w.value,
                if w.done() { "" } else { " (failed)" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn spawn_daemon(bin: &Path, config: &Path, log: &Path) -> Result<std::process::Child> {
    let err = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Command::new(bin)
        .args(["daemon", "--foreground", "--force", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .context("starting balancer daemon")
}

fn show_log(name: &str, log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    println!("--- {name} ({}) ---\n{text}---", log.display());
    text
}

// ---------------------------------------------------------------------------------------

/// The daemon SIGKILLed in the middle of applying a plan, restarted, then `balancer
/// restore`: every dut IRQ's `smp_affinity` and every rx queue's `rps_cpus` is the value it
/// had before the first daemon started.
///
/// Start state: queues 0 and 1 (rx and tx IRQs) on CPU 0, off the dut's node, queue 2 on
/// CPU 2 and queue 3 on CPU 3 (node 1), `rps_cpus` of rx-1 set to CPU 1 by the test (not
/// balancer's: it must be left so), the others empty; with `rps-threshold` and `threshold`
/// at 1% a plan under traffic moves queues 0 and 1 home (locality) and spreads queues 2 and
/// 3 with RPS. The first daemon measures with the dut's IRQs banned, a tracer (ptrace) then
/// stops its main thread at every write(2) to one of those files, and a reload lifts the
/// ban: it is killed, stopped, right after its first `rps_cpus` write completed (so after
/// its locality moves, with the second queue's RPS still to come), or after its first write
/// plus 15 s if no RPS write comes. Checked:
/// - every write of both daemons found its target in the journal on disk, holding the
///   value from before the run (journaled before written, never a half-applied value as an
///   original);
/// - at the kill, every value that differs from the start is in the journal (the kill
///   left nothing changed that restore does not know about);
/// - the restarted daemon kept the killed one's journal (same boot): after it ran under
///   traffic its journal holds every entry of the killed one's, all with the start values;
/// - `balancer restore` exits 0, removes the journal and every value is the start one.
pub(super) fn kill_restore(g: &mut Guest) -> Result<Outcome> {
    let paths = value_paths(&g.dut);
    let boot = raw_values(&paths)?;
    let result = kill_restore_run(g);
    put_back(&boot);
    result
}

fn kill_restore_run(g: &mut Guest) -> Result<Outcome> {
    let bin = g.args.balancer.clone();
    let dut = &g.dut;
    let q = |i: usize| -> Result<(u32, u32)> {
        Ok((
            *dut.input_irqs.get(&i).context("rx queue missing")?,
            *dut.output_irqs.get(&i).context("tx queue missing")?,
        ))
    };
    let rps = |i: usize| format!("sys/class/net/{}/queues/rx-{i}/rps_cpus", dut.name);
    let aff = |irq: u32| format!("proc/irq/{irq}/smp_affinity");
    for (i, mask) in [(0, "1"), (1, "1"), (2, "4"), (3, "8")] {
        let (rx, tx) = q(i)?;
        write_value(&aff(rx), mask)?;
        write_value(&aff(tx), mask)?;
        write_value(&rps(i), if i == 1 { "2" } else { "0" })?;
    }
    let start = dut_values(dut)?;
    println!("kill-restore: start state {}", describe(&start));

    let dir = PathBuf::from("/tmp/balancer-kill-restore");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let journal = dir.join("journal.json");
    let config = dir.join("balancer.toml");
    let metrics = "127.0.0.1:9718";
    run(Command::new(IP).args(["link", "set", "lo", "up"]))?;
    let generator = generator_irqs(dut)?;
    let write_config = |banned: &[u32], rps: bool| {
        fs::write(
            &config,
            format!(
                "short-interval = 1\nlong-interval = 1\nmeasure-share = 1\n\
                 metrics = \"{metrics}\"\nlog-level = \"debug\"\n\
                 threshold = 1\nrps-threshold = 1\nrps-off = 0\nrps = {rps}\n\
                 banned-irqs = {banned:?}\njournal = \"{}\"\nlock-file = \"{}\"\n",
                journal.display(),
                dir.join("lock").display()
            ),
        )
    };
    let mut banned = generator.clone();
    banned.extend(dut.all_irqs());
    write_config(&banned, false)?;

    // The first daemon: measures with the dut banned, then, traced, gets the ban lifted.
    let log1 = dir.join("daemon1.log");
    let mut d1 = spawn_daemon(&bin, &config, &log1)?;
    let mut traffic: Option<Traffic> = None;
    let first = (|| -> Result<(Traced, Values, Values)> {
        // Probes attach with nothing flowing (see daemon_balances).
        let idle = wait_metrics(metrics, |m| m.intervals >= 1, Duration::from_secs(60))?;
        traffic = Some(Traffic::start()?);
        wait_metrics(
            metrics,
            |m| m.intervals >= idle.intervals + 2,
            Duration::from_secs(60),
        )?;
        let mut first_write: Option<Instant> = None;
        let kill_at: KillAt = Box::new(move |w: &[SeenWrite]| {
            let at = *first_write.get_or_insert_with(Instant::now);
            w.last()
                .is_some_and(|l| l.done() && l.target.ends_with("rps_cpus"))
                || at.elapsed() > Duration::from_secs(15)
        });
        let tracer = start_tracer(d1.id(), journal.clone(), kill_at)?;
        write_config(&generator, true)?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(d1.id() as i32, libc::SIGHUP) };
        let held = tracer.held.recv_timeout(Duration::from_secs(90));
        // Quiet paths before the probes go with the process (see daemon_balances); the
        // daemon stays stopped meanwhile.
        if let Some(t) = traffic.take() {
            t.stop()?;
        }
        thread::sleep(Duration::from_secs(1));
        let traced = tracer.kill()?;
        if held.is_err() {
            bail!(
                "the first daemon made no write to an IRQ affinity or rps_cpus within 90 s of \
                 the reload that lifted the ban; writes seen: {}",
                list_writes(&traced.writes)
            );
        }
        let at_kill = dut_values(dut)?;
        let journal_at_kill = journal_originals(&journal)?;
        Ok((traced, at_kill, journal_at_kill))
    })();
    if let Some(t) = traffic.take() {
        let _ = t.stop();
    }
    if first.is_err() {
        let _ = d1.kill();
    }
    // The tracer reaped it when it ran; otherwise this does.
    let _ = d1.try_wait();
    let log1_text = show_log("first balancer daemon", &log1);
    let (traced1, at_kill, journal_at_kill) =
        first.map_err(|e| anyhow!("{e:#}\nfirst daemon's log:\n{log1_text}"))?;
    if !libc::WIFSIGNALED(traced1.status) || libc::WTERMSIG(traced1.status) != libc::SIGKILL {
        bail!(
            "the first daemon was not killed by SIGKILL (wait status {:#x}); its writes: {}",
            traced1.status,
            list_writes(&traced1.writes)
        );
    }
    let mut problems = unjournaled(&traced1.writes, &start, "the first daemon");
    // Nothing changed that the journal does not hold, with the start value.
    for (p, now) in &at_kill {
        if start.get(p) != Some(now) && journal_at_kill.get(p) != start.get(p) {
            problems.push(format!(
                "at the kill {} was {} but the journal {}",
                short(p),
                cpus(now),
                journal_at_kill
                    .get(p)
                    .map_or("did not hold it".into(), |j| format!("held {}", cpus(j)))
            ));
        }
    }
    let irq_writes1 = traced1
        .writes
        .iter()
        .filter(|w| w.done() && w.target.starts_with("proc/irq/"))
        .count();
    let rps_writes1 = traced1
        .writes
        .iter()
        .filter(|w| w.done() && w.target.ends_with("rps_cpus"))
        .count();
    let changed_at_kill = differences(&start, &at_kill);
    let first_part = format!(
        "first daemon killed after {} write(s) ({}): {irq_writes1} IRQ affinities, \
         {rps_writes1} rps_cpus; at the kill {} value(s) differed from the start ({}) and the \
         journal held {} original(s)",
        traced1.writes.len(),
        list_writes(&traced1.writes),
        changed_at_kill.len(),
        changed_at_kill.join(", "),
        journal_at_kill.len()
    );
    println!("kill-restore: {first_part}");

    // The restarted daemon: unbanned from the start, traced from its first interval.
    let log2 = dir.join("daemon2.log");
    let mut d2 = spawn_daemon(&bin, &config, &log2)?;
    let second = (|| -> Result<(Traced, Values, Values, u64)> {
        let idle = wait_metrics(metrics, |m| m.intervals >= 1, Duration::from_secs(60))?;
        let tracer = start_tracer(d2.id(), journal.clone(), Box::new(|_: &[SeenWrite]| false))?;
        traffic = Some(Traffic::start()?);
        let ran = wait_metrics(
            metrics,
            |m| m.intervals >= idle.intervals + 4,
            Duration::from_secs(120),
        );
        if let Some(t) = traffic.take() {
            t.stop()?;
        }
        thread::sleep(Duration::from_secs(1));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(d2.id() as i32, libc::SIGTERM) };
        let traced = tracer.finish()?;
        let ran = ran?;
        Ok((
            traced,
            dut_values(dut)?,
            journal_originals(&journal)?,
            ran.moves,
        ))
    })();
    if let Some(t) = traffic.take() {
        let _ = t.stop();
    }
    if second.is_err() {
        let _ = d2.kill();
    }
    let _ = d2.try_wait();
    let log2_text = show_log("restarted balancer daemon", &log2);
    let (traced2, after2, journal2, moves2) =
        second.map_err(|e| anyhow!("{e:#}\nrestarted daemon's log:\n{log2_text}"))?;
    problems.extend(unjournaled(&traced2.writes, &start, "the restarted daemon"));
    for (p, j) in &journal_at_kill {
        if journal2.get(p) != Some(j) {
            problems.push(format!(
                "the restarted daemon's journal lost the killed one's original of {} ({}): {}",
                short(p),
                cpus(j),
                journal2.get(p).map_or("absent".into(), cpus)
            ));
        }
    }
    for (p, j) in &journal2 {
        if start.get(p) != Some(j) {
            problems.push(format!(
                "the restarted daemon's journal holds {} as the original of {} (before the \
                 run: {})",
                cpus(j),
                short(p),
                start.get(p).map_or("not a dut value".into(), cpus)
            ));
        }
    }
    let second_part = format!(
        "restarted daemon: {} write(s) ({}), {moves2} move(s) in its metrics; then {}; its \
         journal held {} original(s) (the killed one's {} among them)",
        traced2.writes.len(),
        list_writes(&traced2.writes),
        describe(&after2),
        journal2.len(),
        journal_at_kill.len()
    );
    println!("kill-restore: {second_part}");

    let restore = Command::new(&bin)
        .args(["restore", "--config"])
        .arg(&config)
        .arg("--journal")
        .arg(&journal)
        .output()
        .context("running balancer restore")?;
    let restored = dut_values(dut)?;
    let not_back = differences(&start, &restored);
    let restore_out = String::from_utf8_lossy(&restore.stdout);
    let restore_err = String::from_utf8_lossy(&restore.stderr);
    if !restore.status.success() {
        problems.push(format!(
            "balancer restore exited {}: {restore_out} {restore_err}",
            restore.status
        ));
    }
    if journal.exists() {
        problems.push(format!("restore left {}", journal.display()));
    }
    if !not_back.is_empty() {
        problems.push(format!("not restored: {}", not_back.join(", ")));
    }
    if irq_writes1 == 0 {
        problems.push("the first daemon changed no IRQ affinity before the kill".into());
    }
    let detail = format!(
        "{first_part}; {second_part}; restore wrote back {} value(s): {}",
        restore_out.matches("restored").count(),
        describe(&restored)
    );
    if !problems.is_empty() {
        bail!(
            "{}\n{detail}\nfirst daemon's log:\n{log1_text}\nrestarted daemon's log:\n{log2_text}",
            problems.join("; ")
        );
    }
    if rps_writes1 == 0 {
        g.facts.push(
            "kill-restore: the killed daemon wrote no rps_cpus before its kill (its plan had \
             no RPS within 15 s of its first write)"
                .into(),
        );
    }
    Ok(Outcome::Pass(detail))
}

// ---------------------------------------------------------------------------------------

/// The rx queue counters of `dev` (`ethtool -S`: rx_queue_N_packets).
fn queue_packets(dev: &str) -> Result<BTreeMap<usize, u64>> {
    let out = Command::new(ETHTOOL)
        .args(["-S", dev])
        .output()
        .context("running ethtool -S")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            // rx_queue_N_packets; rxN_packets since virtio_net's stats rework (6.10).
            let k = k.strip_suffix("_packets")?;
            let q = k
                .strip_prefix("rx_queue_")
                .or_else(|| k.strip_prefix("rx"))?;
            Some((q.parse().ok()?, v.trim().parse().ok()?))
        })
        .collect())
}

/// Packets processed per CPU (first column of /proc/net/softnet_stat, one row per online
/// CPU in order).
fn softnet_processed() -> Result<Vec<u64>> {
    Ok(fs::read_to_string("/proc/net/softnet_stat")?
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .collect())
}

/// Packet taps on one device whose classic BPF filter burns CPU on every frame and then drops
/// it. The filter runs inside the poll, on the polling CPU, before the socket would queue
/// anything: a queue's per-packet cost goes up, so a flow the host paces at a rate the guest
/// would otherwise keep up with holds its NAPI polling without a drain, whatever the host's
/// speed that day. Closed on drop.
struct CostlyTaps {
    ifindex: i32,
    fds: Vec<OwnedFd>,
}

impl CostlyTaps {
    fn on(dev: &str) -> Result<CostlyTaps> {
        let ifindex = read_trimmed(&format!("/sys/class/net/{dev}/ifindex"))?
            .parse()
            .with_context(|| format!("ifindex of {dev}"))?;
        Ok(CostlyTaps {
            ifindex,
            fds: Vec::new(),
        })
    }

    fn len(&self) -> usize {
        self.fds.len()
    }

    /// Closes taps until there are `n`.
    fn shrink_to(&mut self, n: usize) {
        self.fds.truncate(n);
    }

    /// Opens taps until there are `n`.
    fn grow_to(&mut self, n: usize) -> Result<()> {
        // A chain of additions, then "drop the frame". A socket's filter is charged to its
        // option memory (`net.core.optmem_max`, 20,480 bytes before 6.8): 2,000 instructions
        // fit, the 4,096 a filter may have do not (ENOMEM on 5.10 and 6.1).
        let add = libc::sock_filter {
            code: (libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 1,
        };
        let mut prog = vec![add; 2000];
        prog.push(libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        });
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_mut_ptr(),
        };
        let proto = (libc::ETH_P_ALL as u16).to_be();
        while self.fds.len() < n {
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto.into()) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("opening a packet tap");
            }
            // SAFETY: fd is a fresh descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: fprog and the filter it points to outlive the call, which copies them.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    (&fprog as *const libc::sock_fprog).cast(),
                    std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error()).context("attaching the tap's filter");
            }
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = self.ifindex;
            // SAFETY: addr is a sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error()).context("binding a packet tap");
            }
            self.fds.push(fd);
        }
        Ok(())
    }
}

/// Destination port of the host-side flows (the receiver binds it, so no ICMP answers).
const SAT_PORT: u16 = PORT + 2;

fn host_flow(src_port: u16, pps: u32) -> Flow {
    Flow {
        src_port,
        dst_port: SAT_PORT,
        pps,
        size: 64,
    }
}

/// The rx queue each host-side source port's flow lands on (the tap's flow hash), from the
/// dut's per-queue counters (`ethtool -S`; its input IRQs' interrupts where it has none)
/// while that flow alone is sent for a moment, slowly; the first port found per queue, up
/// to `want` queues.
fn flows_by_queue(dut: &Nic, want: usize) -> Result<BTreeMap<usize, u16>> {
    let mut found = BTreeMap::new();
    let mut seen = Vec::new();
    let per_queue = || -> Result<BTreeMap<usize, u64>> {
        let by_ethtool = queue_packets(&dut.name)?;
        if !by_ethtool.is_empty() {
            return Ok(by_ethtool);
        }
        let irqs = interrupts()?;
        Ok(dut
            .input_irqs
            .iter()
            .map(|(q, i)| (*q, irqs.get(i).copied().unwrap_or(0)))
            .collect())
    };
    for port in 41000..41024u16 {
        let before = per_queue()?;
        let t = HostTraffic::start(DUT_ADDR, &[host_flow(port, 200)])?;
        thread::sleep(Duration::from_millis(400));
        let sent = t.stop()?;
        thread::sleep(Duration::from_millis(100));
        let after = per_queue()?;
        let deltas: BTreeMap<usize, u64> = after
            .iter()
            .map(|(q, n)| (*q, n.saturating_sub(before.get(q).copied().unwrap_or(0))))
            .collect();
        seen.push(format!("port {port}: sent {sent}, per queue {deltas:?}"));
        let best = deltas.iter().max_by_key(|(_, d)| **d);
        if let Some((q, d)) = best
            && *d >= 20
        {
            found.entry(*q).or_insert(port);
        }
        if found.len() >= want {
            break;
        }
    }
    if found.is_empty() {
        bail!(
            "no source port's datagrams landed on one rx queue of {}: {}",
            dut.name,
            seen.join("; ")
        );
    }
    Ok(found)
}

/// The requested affinity (`smp_affinity`) of each IRQ, as a list: what the daemon writes
/// (the effective one follows at the IRQ's next interrupt on x86 without remapping).
fn requested(irqs: &BTreeSet<u32>) -> Result<BTreeMap<u32, String>> {
    irqs.iter()
        .map(|i| {
            let m = read_trimmed(&format!("/proc/irq/{i}/smp_affinity"))?;
            Ok((*i, CpuSet::parse_mask(&m)?.to_string()))
        })
        .collect()
}

/// Softirq NAPI (not threaded) of a saturated rx queue keeps polling on its old CPU after a
/// direct write moved its IRQ: the daemon reports it stuck (its log line names the queue's
/// IRQ, the old CPU and that its load is booked at the IRQ's new CPU), does not move the
/// stuck IRQ, moves no IRQ off the old CPU and moves no IRQ back and forth over 30 s.
///
/// One flow from outside the guest (the host-side traffic server, so the sender does not
/// share the guest's vCPUs; inside the guest two sender threads did not saturate a queue:
/// 8 packets per interrupt on 6.1), [`SAT_PPS`] datagrams/s from a source port whose
/// datagrams land on queue q (found with the per-queue counters); q's IRQ on CPU 2, every
/// other dut IRQ on CPU 3. Where the kernel links NAPI
/// instances exactly (netdev netlink), a second, paced flow on another queue r has its IRQ
/// on CPU 2 as well: an active IRQ the daemon could move off CPU 2 if it counted the stuck
/// load there (by co-occurrence, r's interrupts would be paired with the stuck instance's
/// polls on the same CPU and link it to r's IRQ, so there CPU 2 carries q alone).
/// Where the guest keeps up with the flow, [`CostlyTaps`] make each packet dearer until q
/// takes no interrupt. Saturation is checked from the kernel's counters: q's IRQ must take at
/// most one interrupt per 640 packets, else the check SKIPs with the figures. After the move,
/// packets processed per CPU (/proc/net/softnet_stat) show where the polls run.
pub(super) fn saturation_sticking(g: &mut Guest) -> Result<Outcome> {
    let dut_irqs = g.dut.all_irqs();
    let generator = generator_irqs(&g.dut)?;
    let mut paths: Vec<String> = dut_irqs
        .iter()
        .chain(&generator)
        .map(|i| format!("proc/irq/{i}/smp_affinity"))
        .collect();
    paths.sort();
    let boot = raw_values(&paths)?;
    let all_cpus: Vec<usize> = (0..64).collect();
    let result = sticking_run(g, &generator);
    let _ = pin_this_thread(&all_cpus);
    put_back(&boot);
    result
}

/// What [`sticking_run`] saw before the daemon stopped.
enum Observed {
    Skip(String),
    Seen {
        detail: String,
        /// Moves the daemon should not have made.
        problems: Vec<String>,
        /// The kernel's counters say the rule's condition held over the 30 s.
        sustained: bool,
    },
}

/// Datagrams per second of the saturating flow.
const SAT_PPS: u32 = 100_000;
const OLD_CPU: u32 = 2;
const NEW_CPU: u32 = 3;
/// Most costly taps opened to saturate the queue.
const MAX_TAPS: usize = 512;
/// Moves tried while saturated before the check SKIPs because the polls followed each time.
const MOVE_TRIES: u32 = 5;
/// Longest wait for a paused queue to drain.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Packets rx-`q` of `dev` took so far: its `ethtool -S` counter where `counted`, else what
/// CPU 2 processed (q's IRQ is alone there but for r's 200/s).
fn q_packets(dev: &str, q: usize, counted: bool) -> Result<u64> {
    Ok(if counted {
        queue_packets(dev)?.get(&q).copied().unwrap_or(0)
    } else {
        softnet_processed()?
            .get(OLD_CPU as usize)
            .copied()
            .unwrap_or(0)
    })
}

/// Waits until rx-`q` of `dev` takes no more packets (its ring and the host's queue for it
/// emptied, so its NAPI completed and its interrupt is on); false if it still took some after
/// [`DRAIN_WAIT`].
fn wait_drained(dev: &str, q: usize, counted: bool) -> Result<bool> {
    let deadline = Instant::now() + DRAIN_WAIT;
    let mut last = q_packets(dev, q, counted)?;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
        let now = q_packets(dev, q, counted)?;
        if now == last {
            return Ok(true);
        }
        last = now;
    }
    Ok(false)
}

fn sticking_run(g: &mut Guest, generator: &[u32]) -> Result<Outcome> {
    let bin = g.args.balancer.clone();
    let dev = g.dut.name.clone();
    let threaded = format!("/sys/class/net/{dev}/threaded");
    if Path::new(&threaded).exists() && read_trimmed(&threaded)? != "0" {
        fs::write(&threaded, "0").context("turning threaded NAPI off")?;
    }
    let exact = match offered_links(&dev)? {
        Offered::Links { napi_irq, rx_napi } => !napi_irq.is_empty() || !rx_napi.is_empty(),
        Offered::None(_) => false,
    };
    run(Command::new(IP).args(["link", "set", "lo", "up"]))?;
    // The generator's IRQs and this test's threads on node 0, away from the CPUs watched.
    for i in generator {
        write_value(&format!("proc/irq/{i}/smp_affinity"), "1")?;
    }
    pin_this_thread(&[0, 1])?;
    if !HostTraffic::available() {
        return Ok(Outcome::Skip(
            "no host-side traffic server (guest-checks --serve-traffic) answers: the senders \
             inside the guest share its vCPUs and do not saturate a queue"
                .into(),
        ));
    }
    // Bound and never read: datagrams are dropped at the full socket, not answered by ICMP.
    let rx = UdpSocket::bind(SocketAddrV4::new(DUT_ADDR, SAT_PORT)).context("binding on dut")?;
    let mut flows = flows_by_queue(&g.dut, if exact { 2 } else { 1 })?;
    let Some((&q, _)) = flows.iter().next() else {
        bail!("no source port's datagrams landed on one rx queue of {dev}");
    };
    let q_port = flows.remove(&q).context("flow of q")?;
    let light = if exact { flows.pop_first() } else { None };
    let q_irq = *g.dut.input_irqs.get(&q).context("q's IRQ")?;
    let r_irq = light
        .as_ref()
        .map(|(r, _)| g.dut.input_irqs.get(r).copied().context("r's IRQ"))
        .transpose()?;
    for i in g.dut.all_irqs() {
        let on_old = i == q_irq || Some(i) == r_irq;
        write_value(
            &format!("proc/irq/{i}/smp_affinity"),
            if on_old { "4" } else { "8" },
        )?;
    }

    let dir = PathBuf::from("/tmp/balancer-sticking");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let journal = dir.join("journal.json");
    let config = dir.join("balancer.toml");
    let metrics = "127.0.0.1:9719";
    // RPS off: the sticking rule reads where q's packets are processed from softnet_stat,
    // and packets RPS steers count on the CPU they are steered to. With RPS on, a daemon that
    // spread a saturated rx-3 from CPU 3 to CPU 2 once the polls had followed the IRQ made
    // CPU 2 "process" 9x what CPU 3 did, and 5.10 and 6.12 FAILed on sticking that was RPS.
    let write_config = |banned: &[u32]| {
        fs::write(
            &config,
            format!(
                "short-interval = 1\nlong-interval = 1\nmeasure-share = 1\nrps = false\n\
                 metrics = \"{metrics}\"\nlog-level = \"debug\"\nthreshold = 50\n\
                 banned-irqs = {banned:?}\njournal = \"{}\"\nlock-file = \"{}\"\n",
                journal.display(),
                dir.join("lock").display()
            ),
        )
    };
    // The dut's IRQs banned until the test moved q's: the daemon would relieve CPU 2 by
    // moving it itself (a move of its own, booked as pending until the IRQ fires).
    let mut banned = generator.to_vec();
    banned.extend(g.dut.all_irqs());
    write_config(&banned)?;
    let log = dir.join("daemon.log");
    let mut daemon = spawn_daemon(&bin, &config, &log)?;
    let mut traffic: Option<HostTraffic> = None;
    // Datagrams sent by the flows before a pause.
    let mut sent_before = 0u64;
    // Per-queue packets from `ethtool -S`; where it gives none, CPU 2's and 3's processed
    // packets (q's IRQ is alone there but for r's 200/s).
    let counted = !queue_packets(&dev)?.is_empty();
    let outcome = (|| -> Result<Observed> {
        wait_metrics(metrics, |m| m.intervals >= 1, Duration::from_secs(60))?;
        let mut wanted = vec![host_flow(q_port, SAT_PPS)];
        if let Some((_, port)) = &light {
            wanted.push(host_flow(*port, 200));
        }
        traffic = Some(HostTraffic::start(DUT_ADDR, &wanted)?);
        thread::sleep(Duration::from_secs(3));
        // Saturated? q's packets against its interrupts, before the move.
        let window = Duration::from_secs(2);
        let measure = || -> Result<(u64, u64)> {
            let (p0, i0) = (q_packets(&dev, q, counted)?, interrupts()?);
            thread::sleep(window);
            let (p1, i1) = (q_packets(&dev, q, counted)?, interrupts()?);
            let it = i1
                .get(&q_irq)
                .unwrap_or(&0)
                .saturating_sub(*i0.get(&q_irq).unwrap_or(&0));
            Ok((p1.saturating_sub(p0), it))
        };
        // Where the guest keeps up with the flow (a fast host day), taps that make each
        // packet dearer, doubled until q takes no interrupt in the window and at most 3,000
        // packets a second: a ring that slow to drain stays full through the gaps in qemu's
        // delivery (at 18,000 a second, 4 taps on 6.12 still drained once a second, and at
        // 15,000-27,000 with none in the window 6.1 and 7.x drained within a second of the
        // move). No doubling below 1,000 a second: the saturation test below wants 1,000
        // packets in its 2 s.
        let mut taps = CostlyTaps::on(&dev)?;
        let (mut pk, mut it) = measure()?;
        let (most, least) = (3000 * window.as_secs(), 1000 * window.as_secs());
        while (it > 0 || pk > most) && pk >= 2 * least && taps.len() < MAX_TAPS {
            taps.grow_to((taps.len() * 2).max(1))?;
            thread::sleep(Duration::from_secs(1));
            (pk, it) = measure()?;
        }
        // A doubling that overshot (the host slowed in between: 832 packets in 2 s with 256
        // taps on 6.1 once) gives a quarter of the taps back, up to three times (one quarter
        // was not enough under a host build: 960 packets in 2 s with 192 taps on 6.1).
        for _ in 0..3 {
            if pk >= least || taps.len() <= 1 {
                break;
            }
            taps.shrink_to(taps.len() * 3 / 4);
            thread::sleep(Duration::from_secs(1));
            (pk, it) = measure()?;
        }
        let figures = format!(
            "rx-{q} (IRQ {q_irq}, host flow from port {q_port} at {SAT_PPS}/s, {} costly \
             tap(s) on {dev}) took {pk} packets and {it} interrupts in {window:?} ({} packets \
             per interrupt)",
            taps.len(),
            pk.checked_div(it)
                .map_or("all".to_string(), |r| r.to_string())
        );
        println!("saturation-sticking: {figures}");
        if pk < 1000 || it * 640 > pk {
            g.facts
                .push(format!("saturation-sticking: not saturated: {figures}"));
            return Ok(Observed::Skip(format!(
                "rx-{q} not saturated: {figures}; wanted at most 1 interrupt per 640 packets \
                 (10 full polls)"
            )));
        }
        // The move, while saturated. Where the vector moves at the write, the saturated
        // queue takes no interrupt to bring its NAPI over. On x86 without interrupt remapping
        // it moves only at the IRQ's next interrupt, and then the move is undone, the flows
        // pause until the queue drained and its interrupt is back on, the move is made again
        // while nothing arrives (on 7.x an interrupt during the drain made a move pending
        // since the saturation land on the old CPU, and the first one after the pause on the
        // new), and the flows resume: their first interrupt lands on the old CPU, moves the
        // vector and schedules the NAPI there, where the saturated queue keeps it. Where a
        // poll completed before the ring filled again (5.10 once), the polls followed the
        // IRQ: then IRQ and polls are brought back and the move is tried again.
        let affinity = format!("proc/irq/{q_irq}/smp_affinity");
        let eff_path = format!("/proc/irq/{q_irq}/effective_affinity_list");
        let pause = |traffic: &mut Option<HostTraffic>, sent: &mut u64| -> Result<bool> {
            if let Some(t) = traffic.take() {
                *sent += t.stop()?;
            }
            wait_drained(&dev, q, counted)
        };
        let mut tries = Vec::new();
        let polls = loop {
            if !tries.is_empty() {
                // Back to the start: the vector to the old CPU at a slow flow's interrupt
                // (on the new CPU, whose quick polls complete), so the polls return at the
                // next one; then the saturating flows again.
                write_value(&affinity, "4")?;
                pause(&mut traffic, &mut sent_before)?;
                let mut slow = wanted.clone();
                slow[0] = host_flow(q_port, 200);
                let t = HostTraffic::start(DUT_ADDR, &slow)?;
                thread::sleep(Duration::from_secs(2));
                sent_before += t.stop()?;
                traffic = Some(HostTraffic::start(DUT_ADDR, &wanted)?);
                thread::sleep(Duration::from_secs(2));
            }
            write_value(&affinity, "8")?;
            thread::sleep(Duration::from_secs(1));
            let mut how = "the vector moved at the write".to_string();
            if read_trimmed(&eff_path)? != NEW_CPU.to_string() {
                write_value(&affinity, "4")?;
                let drained = pause(&mut traffic, &mut sent_before)?;
                write_value(&affinity, "8")?;
                let pending = read_trimmed(&eff_path)?;
                traffic = Some(HostTraffic::start(DUT_ADDR, &wanted)?);
                thread::sleep(Duration::from_secs(1));
                how = format!(
                    "it waited for an interrupt, so the flows paused until rx-{q} {}, the \
                     move was made again (effective {pending} after it), and the flows resumed",
                    if drained {
                        "drained".to_string()
                    } else {
                        format!("still took packets after {DRAIN_WAIT:?}")
                    }
                );
            }
            let (s0, i0) = (softnet_processed()?, interrupts()?);
            thread::sleep(window);
            let (s1, i1) = (softnet_processed()?, interrupts()?);
            let on = |c: u32| {
                let c = c as usize;
                s1.get(c).unwrap_or(&0) - s0.get(c).unwrap_or(&0)
            };
            let it_after = i1.get(&q_irq).unwrap_or(&0) - i0.get(&q_irq).unwrap_or(&0);
            let eff = read_trimmed(&eff_path)?;
            let polls = format!(
                "after moving IRQ {q_irq} to CPU {NEW_CPU} (try {} of {MOVE_TRIES}: {how}; \
                 effective {eff}): CPU {OLD_CPU} processed {} packets, CPU {NEW_CPU} {}, IRQ \
                 {q_irq} took {it_after} interrupts in {window:?}",
                tries.len() + 1,
                on(OLD_CPU),
                on(NEW_CPU)
            );
            println!("saturation-sticking: {polls}");
            if on(OLD_CPU) > on(NEW_CPU) && eff == NEW_CPU.to_string() {
                break polls;
            }
            tries.push(polls);
            if tries.len() == MOVE_TRIES as usize {
                return Ok(Observed::Skip(format!(
                    "{figures}; but the polls did not stay behind the IRQ in {MOVE_TRIES} \
                     tries: {}",
                    tries.join("; ")
                )));
            }
        };
        write_config(generator)?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(daemon.id() as i32, libc::SIGHUP) };
        let moved_at = read_metrics(metrics)?;
        // 30 s of the daemon: where every dut IRQ is sent, each second, and whether the
        // kernel's counters met the sticking rule in that second: q's IRQ effectively on
        // CPU 3 (x86 without interrupt remapping moves it at its next interrupt, which lands
        // on the old CPU and schedules the NAPI there), at most 1 interrupt per 6400 packets
        // (1% of the polls at budget 64), CPU 2 processing 9x what CPU 3 does.
        let irqs = g.dut.all_irqs();
        let mut seen: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let (mut run, mut longest, mut stuck_secs) = (0u32, 0u32, 0u32);
        let (mut pk, mut it, mut on_old, mut on_new) = (0u64, 0u64, 0u64, 0u64);
        let mut last = (queue_packets(&dev)?, interrupts()?, softnet_processed()?);
        // The daemon's first interval after the reload began before it, with the IRQ still
        // banned: only a second that starts after that interval ended can fall in one the
        // daemon judged whole with the ban lifted. At TCG's stretched 1 s intervals the
        // first plan can come after a short sticking is over; such seconds are not counted.
        let mut intervals = moved_at.intervals;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let judged = intervals > moved_at.intervals;
            thread::sleep(Duration::from_secs(1));
            // A reading missed (the daemon busy past the timeout) keeps the last one.
            intervals = read_metrics(metrics).map_or(intervals, |m| m.intervals);
            for (i, e) in requested(&irqs)? {
                let v = seen.entry(i).or_default();
                if v.last() != Some(&e) {
                    v.push(e);
                }
            }
            let now = (queue_packets(&dev)?, interrupts()?, softnet_processed()?);
            let d = |a: Option<&u64>, b: Option<&u64>| {
                a.copied()
                    .unwrap_or(0)
                    .saturating_sub(b.copied().unwrap_or(0))
            };
            let dp = d(now.0.get(&q), last.0.get(&q));
            let di = d(now.1.get(&q_irq), last.1.get(&q_irq));
            let old = d(now.2.get(OLD_CPU as usize), last.2.get(OLD_CPU as usize));
            let new = d(now.2.get(NEW_CPU as usize), last.2.get(NEW_CPU as usize));
            let eff = read_trimmed(&format!("/proc/irq/{q_irq}/effective_affinity_list"))?;
            let dp = if counted { dp } else { old + new };
            (pk, it, on_old, on_new) = (pk + dp, it + di, on_old + old, on_new + new);
            last = now;
            if eff == NEW_CPU.to_string() && dp > 0 && di * 6400 <= dp && old > 9 * new {
                stuck_secs += 1;
                if judged {
                    run += 1;
                    longest = longest.max(run);
                }
            } else {
                run = 0;
            }
        }
        let end = read_metrics(metrics)?;
        // Three seconds in a row hold a whole daemon interval (1 s, slower under TCG).
        let sustained = longest >= 3;
        let over30 = format!(
            "over the 30 s rx-{q} took {pk} packets and {it} interrupts, CPU {OLD_CPU} \
             processed {on_old} packets and CPU {NEW_CPU} {on_new}; the kernel's counters met \
             the sticking rule in {stuck_secs} second(s), at most {longest} in a row once \
             the daemon had planned since the reload"
        );
        let sent = sent_before
            + traffic
                .take()
                .map(HostTraffic::stop)
                .transpose()?
                .unwrap_or(0);
        let mut problems = Vec::new();
        let moved: Vec<String> = seen
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(i, v)| format!("IRQ {i}: {}", v.join(" -> ")))
            .collect();
        for (i, v) in &seen {
            if v.first().map(String::as_str) == Some(&OLD_CPU.to_string()) && v.len() > 1 {
                problems.push(format!(
                    "IRQ {i} moved off CPU {OLD_CPU}: {}",
                    v.join(" -> ")
                ));
            }
            let mut left = BTreeSet::new();
            for w in v.windows(2) {
                left.insert(w[0].clone());
                if left.contains(&w[1]) {
                    problems.push(format!("IRQ {i} went back and forth: {}", v.join(" -> ")));
                    break;
                }
            }
        }
        if seen.get(&q_irq).is_some_and(|v| v.len() > 1) {
            problems.push(format!("the stuck IRQ {q_irq} was moved"));
        }
        let detail = format!(
            "{figures}; {polls}; {over30} (packets counted by {}); {} sticking event(s) ({} before the move), {} move(s) in the daemon's \
             metrics ({} before the 30 s), IRQ changes: {}; {sent} datagrams sent; second \
             IRQ on CPU {OLD_CPU}: {}",
            if counted {
                "ethtool -S"
            } else {
                "softnet_stat: ethtool -S gave no per-queue counters"
            },
            end.sticking_events,
            moved_at.sticking_events,
            end.moves,
            moved_at.moves,
            if moved.is_empty() {
                "none".to_string()
            } else {
                moved.join("; ")
            },
            match (&light, r_irq) {
                (Some((r, _)), Some(i)) => format!("rx-{r} (IRQ {i}, paced flow)"),
                _ => "none (no exact links on this kernel: co-occurrence would pair it with \
                         the stuck instance)"
                    .into(),
            }
        );
        Ok(Observed::Seen {
            detail,
            problems,
            sustained,
        })
    })();
    if let Some(t) = traffic.take() {
        let _ = t.stop();
    }
    drop(rx);
    thread::sleep(Duration::from_secs(1));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let text = show_log("balancer daemon", &log);
    let _ = Command::new(&bin)
        .args(["restore", "--config"])
        .arg(&config)
        .arg("--journal")
        .arg(&journal)
        .output();
    let (detail, problems, sustained) =
        match outcome.map_err(|e| anyhow!("{e:#}\ndaemon log:\n{text}"))? {
            Observed::Skip(why) => return Ok(Outcome::Skip(why)),
            Observed::Seen {
                detail,
                problems,
                sustained,
            } => (detail, problems, sustained),
        };
    if !problems.is_empty() {
        bail!("{}; {detail}\ndaemon log:\n{text}", problems.join("; "));
    }
    // The finding: the queue's IRQ, the old CPU, booked at the new one.
    let line = text.lines().find(|l| {
        l.contains(&format!("IRQ {q_irq} ("))
            && l.contains("is stuck")
            && l.contains(&format!("polls on CPU {OLD_CPU} "))
    });
    let Some(line) = line else {
        if !sustained {
            g.facts.push(format!(
                "saturation-sticking: the queue drained now and then: {detail}"
            ));
            return Ok(Outcome::Skip(format!(
                "the queue drained now and then (the sticking rule wants at most 1 interrupt \
                 per 6400 packets), and the daemon reported no sticking: {detail}"
            )));
        }
        bail!(
            "{detail}; the daemon's log has no line saying IRQ {q_irq} is stuck polling on \
             CPU {OLD_CPU}:\n{text}"
        );
    };
    if !line.contains(&format!("its load is booked at {NEW_CPU}")) {
        bail!("{detail}; the stuck line does not book the load at CPU {NEW_CPU}: {line}");
    }
    Ok(Outcome::Pass(format!(
        "{detail}; daemon: {}",
        line.trim_start_matches("balancer: warn: ")
    )))
}
