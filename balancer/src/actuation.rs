//! The only code that writes to the kernel: IRQ affinities (`proc/irq/N/smp_affinity`, or
//! `smp_affinity_list` where only that exists), `rps_cpus` of rx queues, and the CPU affinity
//! of threaded-NAPI kthreads. Everything goes through [`Sys`] under a root path, so tests run
//! against a copy of a fixture tree with injected errors.
//!
//! - Before the first change of anything, its original value goes into a [`Journal`] written
//!   atomically (temporary file, fsync, rename), stamped with the boot id; `balancer restore`
//!   writes those values back, after checking the whole journal (format version, boot, and
//!   that every entry is a target of the kinds written here). A journal left by a crashed run
//!   of this boot is kept: its originals are the real ones.
//! - Each action is one transaction: the tx IRQ moving with its rx IRQ, for instance. A write
//!   that fails rolls back the ones before it, so nothing is left half-applied.
//! - EIO or EPERM (a managed IRQ: Debian's 5.10 and 6.1 answer EIO, 6.12 and later EPERM, seen
//!   in the kernel VM) marks the IRQ unmovable with one log line; ENOSPC (the target CPU's
//!   vectors are full) marks that CPU full and tries the next candidate.
//! - One process at a time writes: whoever does holds the [`Lock`] (flock on the config's
//!   `lock-file`).
use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    cpumask::CpuSet,
    policy::{ActionKind, Outcome, Plan, Refusals},
};

/// How the kernel is read and written. [`RealSys`] for the machine; tests wrap it.
pub trait Sys {
    fn read(&mut self, path: &Path) -> io::Result<String>;
    /// One write of the whole value (the kernel parses each write on its own).
    fn write(&mut self, path: &Path, value: &str) -> io::Result<()>;
    fn thread_affinity(&mut self, pid: u32) -> io::Result<CpuSet>;
    fn set_thread_affinity(&mut self, pid: u32, cpus: &CpuSet) -> io::Result<()>;
}

/// The real thing: files and sched_{get,set}affinity.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSys;

impl Sys for RealSys {
    fn read(&mut self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        // No create: these are kernel attributes, and a missing one is an error. Truncate
        // as a shell's `>` does (the kernel ignores it; plain files in fixtures need it).
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        f.write_all(value.as_bytes())
    }

    fn thread_affinity(&mut self, pid: u32) -> io::Result<CpuSet> {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok((0..libc::CPU_SETSIZE as u32)
                .filter(|c| libc::CPU_ISSET(*c as usize, &set))
                .collect())
        }
    }

    fn set_thread_affinity(&mut self, pid: u32, cpus: &CpuSet) -> io::Result<()> {
        // SAFETY: as above; CPU_SET is only called below CPU_SETSIZE.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for c in cpus
                .iter()
                .filter(|c| (*c as usize) < libc::CPU_SETSIZE as usize)
            {
                libc::CPU_SET(c as usize, &mut set);
            }
            if libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Errors of the journal (actuation's other failures are [`Outcome`]s). Each message says
/// what to do: these reach the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal {path} is not a balancer journal ({message}); nothing was restored. It is \
         written atomically, so it was damaged or edited: inspect it (it holds the original \
         values), then fix it or remove it"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "journal {path} has format version {found}; this balancer reads versions \
         1 to {JOURNAL_VERSION}; nothing was restored. Restore with the balancer that wrote \
         it, or inspect it and remove it"
    )]
    Version { path: PathBuf, found: u64 },
    #[error("journal {path} {}", boot_mismatch(.written, .now))]
    OtherBoot {
        path: PathBuf,
        written: Option<String>,
        now: Option<String>,
    },
    #[error(
        "journal {path}, entry {index}: {why}; balancer only changes IRQ affinities \
         (/proc/irq/N/smp_affinity, smp_affinity_list), rps_cpus of rx queues and the \
         affinity of NAPI threads. Nothing was restored: inspect the journal, balancer did \
         not write it as it is"
    )]
    ForeignTarget {
        path: PathBuf,
        index: usize,
        why: String,
    },
}

fn boot_mismatch(written: &Option<String>, now: &Option<String>) -> String {
    let what = match (written, now) {
        (Some(w), Some(n)) => format!("was written during another boot ({w}; this boot is {n})"),
        (None, _) => "records no boot (an older balancer wrote it)".to_string(),
        (Some(w), None) => format!("was written during boot {w}, and this boot's id is unreadable"),
    };
    format!(
        "{what}: after a reboot IRQs may be numbered differently and devices named otherwise, \
         so its values may not belong to the IRQs they would be written to; nothing was \
         restored. A reboot already put the kernel's defaults back: remove the journal, or, \
         if the machine has not rebooted since it was written, pass --force to `balancer \
         restore`"
    )
}

/// The current journal format: 2 added the boot id.
const JOURNAL_VERSION: u32 = 2;

/// Where the kernel says which boot this is, relative to the root.
const BOOT_ID: &str = "proc/sys/kernel/random/boot_id";

/// This boot's id under `root`; None where the file is missing (fixture roots) or unreadable.
fn boot_id<S: Sys>(root: &Path, sys: &mut S) -> Option<String> {
    let id = sys.read(&root.join(BOOT_ID)).ok()?;
    Some(id.trim().to_string()).filter(|s| !s.is_empty())
}

/// What was changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Target {
    /// A file relative to the root.
    File { path: String },
    /// A kthread's CPU affinity; `comm` guards against pid reuse.
    Thread { pid: u32, comm: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::File { path } => write!(f, "/{path}"),
            Target::Thread { pid, comm } => write!(f, "affinity of {comm} (pid {pid})"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    target: Target,
    /// The original value as read (file text, or a cpulist for threads).
    original: String,
}

/// Which kind of value a target holds.
enum Syntax {
    /// A hex cpumask (smp_affinity, rps_cpus).
    Mask,
    /// A cpulist (smp_affinity_list, thread affinities).
    List,
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Target {
    /// What this target holds when it is one of the kinds balancer changes; why not
    /// otherwise. The path is relative to the root, and only exact shapes pass, so no
    /// `..`, absolute path or other file can be named.
    fn syntax(&self) -> Result<Syntax, String> {
        match self {
            Target::File { path } => {
                let parts: Vec<&str> = path.split('/').collect();
                if parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == "..")
                {
                    return Err(format!(
                        "path {path:?} is not a plain relative path (absolute, empty, `.` or \
                         `..` component)"
                    ));
                }
                match parts.as_slice() {
                    ["proc", "irq", n, "smp_affinity"] if is_number(n) => Ok(Syntax::Mask),
                    ["proc", "irq", n, "smp_affinity_list"] if is_number(n) => Ok(Syntax::List),
                    // IFNAMSIZ: 15 bytes and the NUL.
                    ["sys", "class", "net", dev, "queues", q, "rps_cpus"]
                        if dev.len() <= 15 && q.strip_prefix("rx-").is_some_and(is_number) =>
                    {
                        Ok(Syntax::Mask)
                    }
                    _ => Err(format!(
                        "path {path:?} is none of the files balancer changes"
                    )),
                }
            }
            Target::Thread { pid, comm } => {
                if *pid == 0 || !comm.starts_with("napi/") {
                    Err(format!("thread {comm:?} (pid {pid}) is not a NAPI thread"))
                } else {
                    Ok(Syntax::List)
                }
            }
        }
    }
}

impl Entry {
    /// Whether balancer could have written this entry: a target of its own kinds with a
    /// value of that target's syntax.
    fn check(&self) -> Result<(), String> {
        let ok = match self.target.syntax()? {
            Syntax::Mask => CpuSet::parse_mask(self.original.trim()).is_ok(),
            Syntax::List => CpuSet::parse_list(self.original.trim()).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} holds {:?}, which is not a CPU mask or list",
                self.target, self.original
            ))
        }
    }
}

/// Each target a journal at `path` holds with its original value, in the order written; None
/// when there is no journal. For checks that a restore put everything back.
pub fn journal_entries(path: &Path) -> Result<Option<Vec<(Target, String)>>, JournalError> {
    Ok(Journal::load_opt(path)?.map(|j| {
        j.entries
            .into_iter()
            .map(|e| (e.target, e.original))
            .collect()
    }))
}

/// Original values of everything changed, in the order first changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    version: u32,
    /// The boot it was written in (absent in version 1, and where the root has no boot id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    entries: Vec<Entry>,
}

impl Journal {
    /// An empty journal of this format for boot `boot_id`.
    fn new(boot_id: Option<String>) -> Journal {
        Journal {
            version: JOURNAL_VERSION,
            boot_id,
            entries: Vec::new(),
        }
    }

    /// Loads `path`; an absent file is an empty journal of no boot. (The balancer itself
    /// needs to tell an absent journal apart: [`Journal::load_opt`].)
    #[cfg(test)]
    fn load(path: &Path) -> Result<Journal, JournalError> {
        Ok(Journal::load_opt(path)?.unwrap_or_else(|| Journal::new(None)))
    }

    /// Loads `path`, None when it does not exist. The version is checked before the rest, so
    /// a newer format is reported as such rather than as a parse error.
    fn load_opt(path: &Path) -> Result<Option<Journal>, JournalError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(JournalError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let corrupt = |message: String| JournalError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        if text.trim().is_empty() {
            return Err(corrupt("the file is empty".into()));
        }
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let found = value
            .get("version")
            .ok_or_else(|| corrupt("no `version` key".into()))?
            .as_u64()
            .ok_or_else(|| corrupt("`version` is not a number".into()))?;
        if !(1..=u64::from(JOURNAL_VERSION)).contains(&found) {
            return Err(JournalError::Version {
                path: path.to_path_buf(),
                found,
            });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Writes `path` atomically: a reader sees the old journal or the new one, never half.
    fn save(&self, path: &Path) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub(crate) fn contains(&self, t: &Target) -> bool {
        self.entries.iter().any(|e| &e.target == t)
    }
}

/// One write of a transaction.
#[derive(Clone, Debug)]
struct Write {
    target: Target,
    value: String,
}

/// A failed transaction: which write, and why. Earlier writes were rolled back.
#[derive(Debug)]
struct Failed {
    index: usize,
    error: io::Error,
}

pub struct Actuator<S: Sys> {
    root: PathBuf,
    sys: S,
    journal_path: PathBuf,
    journal: Journal,
    /// IRQs whose EIO was logged (one line per IRQ, ever).
    logged_unmovable: BTreeSet<u32>,
}

impl<S: Sys> Actuator<S> {
    /// Keeps an existing journal's originals (a previous run may have crashed), when it is
    /// of this boot. One of another boot names IRQs as they were numbered then, and the
    /// reboot put the defaults back: it is set aside as `<journal>.previous-boot` and a new
    /// one starts. One that records no boot is refused (it may be either).
    pub fn new(root: &Path, journal_path: &Path, mut sys: S) -> Result<Actuator<S>, JournalError> {
        let now = boot_id(root, &mut sys);
        let journal = match Journal::load_opt(journal_path)? {
            None => Journal::new(now),
            Some(j) if j.boot_id == now => j,
            Some(j) if j.boot_id.is_some() && now.is_some() => {
                let aside = previous_boot_path(journal_path);
                fs::rename(journal_path, &aside).map_err(|source| JournalError::Io {
                    path: journal_path.to_path_buf(),
                    source,
                })?;
                log::warn!(
                    "journal {} is from another boot ({}): its values belong to IRQs as \
                     numbered then; set aside as {} and starting a new one",
                    journal_path.display(),
                    j.boot_id.as_deref().unwrap_or_default(),
                    aside.display()
                );
                Journal::new(now)
            }
            Some(j) => {
                return Err(JournalError::OtherBoot {
                    path: journal_path.to_path_buf(),
                    written: j.boot_id,
                    now,
                });
            }
        };
        Ok(Actuator {
            root: root.to_path_buf(),
            sys,
            journal_path: journal_path.to_path_buf(),
            journal,
            logged_unmovable: BTreeSet::new(),
        })
    }

    /// Carries out every action of `plan`, one [`Outcome`] per action. `nr_cpu_ids` is the
    /// width of the masks written.
    pub fn apply(&mut self, plan: &Plan, nr_cpu_ids: u32) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(plan.actions.len());
        let mut i = 0;
        while let Some(a) = plan.actions.get(i) {
            if plan.swaps.contains(&i)
                && let Some(b) = plan.actions.get(i + 1)
                && let Some(both) = self.apply_swap(&a.kind, &b.kind, nr_cpu_ids)
            {
                out.extend(both);
                i += 2;
                continue;
            }
            out.push(self.apply_one(&a.kind, nr_cpu_ids));
            i += 1;
        }
        out
    }

    /// Two moves that exchange IRQs between two CPUs, in one transaction: both are written
    /// or, when any write fails, none stays (one half alone makes the busier CPU busier).
    /// A refusal is booked on the half whose write met it. `None` when these are not two
    /// moves to one CPU each.
    fn apply_swap(&mut self, a: &ActionKind, b: &ActionKind, nr: u32) -> Option<[Outcome; 2]> {
        let halves = [a, b].map(|k| match k {
            ActionKind::Move {
                irq,
                companions,
                targets,
                ..
            } if targets.len() == 1 => Some((*irq, companions.clone(), targets[0])),
            _ => None,
        });
        let [Some(ha), Some(hb)] = halves else {
            return None;
        };
        let mut writes = Vec::new();
        let mut half_of = Vec::new();
        for (h, (irq, companions, cpu)) in [&ha, &hb].into_iter().enumerate() {
            let set = CpuSet::from_cpus([*cpu]);
            for n in std::iter::once(*irq).chain(companions.iter().copied()) {
                writes.push(self.affinity_write(n, &set, nr));
                half_of.push((h, n, *cpu));
            }
        }
        let f = match self.transaction(&writes) {
            Ok(()) => {
                return Some([Outcome::applied(Some(ha.2)), Outcome::applied(Some(hb.2))]);
            }
            Err(f) => f,
        };
        let (h, n, cpu) = half_of[f.index];
        let mut refused = [Refusals::default(), Refusals::default()];
        match f.error.raw_os_error() {
            Some(libc::EIO | libc::EPERM) => {
                refused[h].unmovable.push((n, f.error.to_string()));
            }
            Some(libc::ENOSPC) => refused[h].full_cpus.push(cpu),
            _ => {}
        }
        let error = format!(
            "swap of IRQ {} and IRQ {} not made, nothing changed: {}: {}",
            ha.0, hb.0, writes[f.index].target, f.error
        );
        let [ra, rb] = refused;
        Some([
            Outcome::NotApplied {
                refused: ra,
                error: Some(error.clone()),
            },
            Outcome::NotApplied {
                refused: rb,
                error: Some(error),
            },
        ])
    }

    fn apply_one(&mut self, kind: &ActionKind, nr: u32) -> Outcome {
        match kind {
            ActionKind::Move {
                irq,
                companions,
                targets,
                ..
            } => self.apply_move(*irq, companions, targets, nr),
            ActionKind::SetRps {
                netdev,
                queue,
                cpus,
            } => self.simple(rps_path(netdev, *queue), cpus.to_mask_string(nr)),
            ActionKind::ClearRps { netdev, queue } => {
                self.simple(rps_path(netdev, *queue), CpuSet::new().to_mask_string(nr))
            }
            ActionKind::PinNapiThread {
                netdev,
                napi_id,
                cpus,
                ..
            } => {
                let comm = format!("napi/{netdev}-{napi_id}");
                match find_thread(&self.root, &comm) {
                    Some(pid) => self.run(&[Write {
                        target: Target::Thread { pid, comm },
                        value: cpus.to_list_string(),
                    }]),
                    None => Outcome::failed(format!("no thread named {comm} under /proc")),
                }
            }
        }
    }

    fn simple(&mut self, path: String, value: String) -> Outcome {
        self.run(&[Write {
            target: Target::File { path },
            value,
        }])
    }

    fn run(&mut self, writes: &[Write]) -> Outcome {
        match self.transaction(writes) {
            Ok(()) => Outcome::applied(None),
            Err(f) => Outcome::failed(format!("{}: {}", writes[f.index].target, f.error)),
        }
    }

    fn apply_move(&mut self, irq: u32, companions: &[u32], targets: &[u32], nr: u32) -> Outcome {
        let mut refused = Refusals::default();
        let mut group: Vec<u32> = std::iter::once(irq)
            .chain(companions.iter().copied())
            .collect();
        let mut i = 0;
        while let Some(&cpu) = targets.get(i) {
            let set = CpuSet::from_cpus([cpu]);
            let writes: Vec<Write> = group
                .iter()
                .map(|n| self.affinity_write(*n, &set, nr))
                .collect();
            let f = match self.transaction(&writes) {
                Ok(()) => {
                    return Outcome::Applied {
                        cpu: Some(cpu),
                        refused,
                    };
                }
                Err(f) => f,
            };
            match f.error.raw_os_error() {
                Some(code @ (libc::EIO | libc::EPERM)) => {
                    let n = group[f.index];
                    if self.logged_unmovable.insert(n) {
                        let errno = if code == libc::EIO { "EIO" } else { "EPERM" };
                        log::warn!(
                            "IRQ {n}: the kernel refuses affinity changes ({errno}: managed \
                             IRQ); leaving it where it is"
                        );
                    }
                    refused.unmovable.push((n, f.error.to_string()));
                    if f.index == 0 {
                        return Outcome::NotApplied {
                            refused,
                            error: None,
                        };
                    }
                    // A managed companion stays; the rest still moves.
                    group.remove(f.index);
                }
                Some(libc::ENOSPC) => {
                    log::info!(
                        "CPU {cpu} has no free interrupt vector (ENOSPC) for IRQ {}; \
                         trying the next CPU",
                        group[f.index]
                    );
                    refused.full_cpus.push(cpu);
                    i += 1;
                }
                _ => {
                    let error = format!("{}: {}", writes[f.index].target, f.error);
                    return Outcome::NotApplied {
                        refused,
                        error: Some(error),
                    };
                }
            }
        }
        // A managed companion says why already; otherwise every target was full.
        let error = refused.unmovable.is_empty().then(|| {
            format!(
                "IRQ {irq}: every candidate CPU refused ({})",
                CpuSet::from_cpus(targets.iter().copied())
            )
        });
        Outcome::NotApplied { refused, error }
    }

    /// The write pointing IRQ `n` at `cpus`: the hex file when it exists, else the list one.
    fn affinity_write(&self, n: u32, cpus: &CpuSet, nr: u32) -> Write {
        let hex = format!("proc/irq/{n}/smp_affinity");
        if self.root.join(&hex).exists() || !self.root.join(format!("{hex}_list")).exists() {
            Write {
                target: Target::File { path: hex },
                value: cpus.to_mask_string(nr),
            }
        } else {
            Write {
                target: Target::File {
                    path: format!("{hex}_list"),
                },
                value: cpus.to_list_string(),
            }
        }
    }

    fn read_target(&mut self, t: &Target) -> io::Result<String> {
        match t {
            Target::File { path } => self.sys.read(&self.root.join(path)),
            Target::Thread { pid, .. } => {
                self.sys.thread_affinity(*pid).map(|s| s.to_list_string())
            }
        }
    }

    fn write_target(&mut self, t: &Target, value: &str) -> io::Result<()> {
        match t {
            Target::File { path } => self.sys.write(&self.root.join(path), value),
            Target::Thread { pid, .. } => {
                let set = CpuSet::parse_list(value)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                self.sys.set_thread_affinity(*pid, &set)
            }
        }
    }

    /// Journals the originals of every target not journaled yet, then writes in order; on a
    /// failure, writes back what this transaction changed, last first.
    fn transaction(&mut self, writes: &[Write]) -> Result<(), Failed> {
        let mut before = Vec::with_capacity(writes.len());
        let mut new_entries = false;
        for (index, w) in writes.iter().enumerate() {
            let current = self
                .read_target(&w.target)
                .map_err(|error| Failed { index, error })?;
            if !self.journal.contains(&w.target) {
                self.journal.entries.push(Entry {
                    target: w.target.clone(),
                    original: current.clone(),
                });
                new_entries = true;
            }
            before.push(current);
        }
        if new_entries {
            self.journal.version = JOURNAL_VERSION;
            self.journal.save(&self.journal_path).map_err(|e| Failed {
                index: 0,
                error: io::Error::other(e.to_string()),
            })?;
        }
        for (index, w) in writes.iter().enumerate() {
            if let Err(error) = self.write_target(&w.target, &w.value) {
                for (j, done) in writes[..index].iter().enumerate().rev() {
                    if let Err(e) = self.write_target(&done.target, before[j].trim_end()) {
                        log::error!("rolling back {}: {e}", done.target);
                    }
                }
                return Err(Failed { index, error });
            }
        }
        Ok(())
    }
}

/// Where [`Actuator::new`] puts a journal of another boot.
fn previous_boot_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".previous-boot");
    journal.with_file_name(name)
}

fn rps_path(netdev: &str, queue: u32) -> String {
    format!("sys/class/net/{netdev}/queues/rx-{queue}/rps_cpus")
}

/// The rx queues, (netdev, queue), whose `rps_cpus` journal `entries` hold: RPS a previous
/// run of the daemon set, which a restarted daemon takes back as its own when the queue
/// shrinks (rather than leaving it to `restore` as someone else's).
pub(crate) fn journaled_rps(entries: &[(Target, String)]) -> Vec<(String, u32)> {
    entries
        .iter()
        .filter_map(|(target, _)| {
            let Target::File { path } = target else {
                return None;
            };
            let rest = path.strip_prefix("sys/class/net/")?;
            let (dev, rest) = rest.split_once("/queues/rx-")?;
            let queue = rest.strip_suffix("/rps_cpus")?.parse().ok()?;
            (!dev.contains('/')).then(|| (dev.to_owned(), queue))
        })
        .collect()
}

/// The pid of the thread whose `comm` is `name` (kthreads are processes of their own).
pub(crate) fn find_thread(root: &Path, name: &str) -> Option<u32> {
    let dir = fs::read_dir(root.join("proc")).ok()?;
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(root.join(format!("proc/{pid}/comm")))
                .is_ok_and(|c| c.trim_end() == name)
        })
}

/// Holds the single-instance lock while alive: one process at a time writes affinities (the
/// daemon, `top --balance`, or `restore`). The file holds the holder's pid, for the message
/// of whoever is refused.
pub struct Lock(fs::File);

impl Lock {
    /// Writes this process's pid into the lock file (again after a fork: the child holds
    /// the lock then).
    pub(crate) fn record_pid(&self) -> io::Result<()> {
        let mut f = &self.0;
        f.set_len(0)?;
        io::Seek::rewind(&mut f)?;
        writeln!(f, "{}", std::process::id())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("opening the lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another process holds it; `pid` as it wrote it, when it did.
    #[error(
        "another balancer (daemon or top --balance) holds {path}{}: one balancer at a time",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { path: PathBuf, pid: Option<u32> },
}

/// Takes the lock without waiting, and records our pid in it.
pub fn try_lock(path: &Path) -> Result<Lock, LockError> {
    if let Some(dir) = path.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    // SAFETY: a valid fd; flock has no memory effects.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        return Err(LockError::Held {
            path: path.to_path_buf(),
            pid,
        });
    }
    let lock = Lock(f);
    // The pid only serves messages: the flock is what excludes.
    let _ = lock.record_pid();
    Ok(lock)
}

/// What `restore` did.
#[derive(Debug, Default)]
pub(crate) struct Restored {
    pub(crate) restored: Vec<Target>,
    /// Entries that could not be written back; they stay in the journal.
    pub(crate) failed: Vec<(Target, String)>,
    /// Targets that are gone (IRQ or device removed, thread exited or its pid reused):
    /// nothing to restore; dropped from the journal.
    pub(crate) gone: Vec<Target>,
}

/// Whether a failed write means the target no longer exists.
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Writes every original value of the journal back (all of them, whatever fails), then
/// removes the journal, or keeps only the entries that failed; entries whose target is gone
/// are dropped.
///
/// Nothing is written unless the whole journal passes first: its version, its boot (this
/// one, unless `force`), and every entry naming a target of balancer's own kinds with a
/// value of its syntax. The caller holds the daemon's lock, so no daemon keeps a copy.
pub(crate) fn restore<S: Sys>(
    root: &Path,
    journal_path: &Path,
    sys: &mut S,
    force: bool,
) -> Result<Restored, JournalError> {
    let Some(journal) = Journal::load_opt(journal_path)? else {
        return Ok(Restored::default());
    };
    let now = boot_id(root, sys);
    if journal.boot_id != now && !force {
        return Err(JournalError::OtherBoot {
            path: journal_path.to_path_buf(),
            written: journal.boot_id,
            now,
        });
    }
    for (i, e) in journal.entries.iter().enumerate() {
        e.check().map_err(|why| JournalError::ForeignTarget {
            path: journal_path.to_path_buf(),
            index: i + 1,
            why,
        })?;
    }
    let mut r = Restored::default();
    let mut left = Vec::new();
    // Last changed first, as an undo.
    for e in journal.entries.iter().rev() {
        let res = match &e.target {
            Target::File { path } => {
                let full = root.join(path);
                // The IRQ's or queue's directory went with it; a write would only say ENOENT.
                if full.parent().is_some_and(|d| !d.is_dir()) {
                    r.gone.push(e.target.clone());
                    continue;
                }
                sys.write(&full, e.original.trim_end())
            }
            Target::Thread { pid, comm } => {
                let now = fs::read_to_string(root.join(format!("proc/{pid}/comm")));
                if now.as_deref().map(str::trim_end).ok() != Some(comm.as_str()) {
                    r.gone.push(e.target.clone());
                    continue;
                }
                CpuSet::parse_list(&e.original)
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
                    .and_then(|set| sys.set_thread_affinity(*pid, &set))
            }
        };
        match res {
            Ok(()) => r.restored.push(e.target.clone()),
            Err(err) if is_gone(&err) => r.gone.push(e.target.clone()),
            Err(err) => {
                r.failed.push((e.target.clone(), err.to_string()));
                left.push(e.clone());
            }
        }
    }
    if left.is_empty() {
        match fs::remove_file(journal_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(JournalError::Io {
                    path: journal_path.to_path_buf(),
                    source,
                });
            }
        }
    } else if !r.restored.is_empty() || !r.gone.is_empty() {
        left.reverse();
        // Still the boot it was written in: what is left needs --force as before.
        Journal {
            version: JOURNAL_VERSION,
            boot_id: journal.boot_id,
            entries: left,
        }
        .save(journal_path)?;
    }
    Ok(r)
}

/// A [`Sys`] that fails chosen writes, for the tests.
#[cfg(test)]
struct Faults<S: Sys> {
    inner: S,
    /// (path suffix, errno): a write to a path ending so fails with that errno.
    write_errors: Vec<(String, i32)>,
    /// Thread affinities, by pid, instead of the real syscalls (fixture roots).
    threads: std::collections::BTreeMap<u32, CpuSet>,
    /// Every successful write, in order.
    log: Vec<(String, String)>,
}

#[cfg(test)]
impl<S: Sys> Faults<S> {
    fn new(inner: S) -> Self {
        Faults {
            inner,
            write_errors: Vec::new(),
            threads: Default::default(),
            log: Vec::new(),
        }
    }

    fn fail(mut self, suffix: &str, errno: i32) -> Self {
        self.write_errors.push((suffix.to_string(), errno));
        self
    }
}

#[cfg(test)]
impl<S: Sys> Sys for Faults<S> {
    fn read(&mut self, path: &Path) -> io::Result<String> {
        self.inner.read(path)
    }

    fn write(&mut self, path: &Path, value: &str) -> io::Result<()> {
        let p = path.to_string_lossy();
        if let Some((_, errno)) = self
            .write_errors
            .iter()
            .find(|(s, _)| p.ends_with(s.as_str()))
        {
            return Err(io::Error::from_raw_os_error(*errno));
        }
        self.inner.write(path, value)?;
        self.log.push((p.into_owned(), value.to_string()));
        Ok(())
    }

    fn thread_affinity(&mut self, pid: u32) -> io::Result<CpuSet> {
        self.threads
            .get(&pid)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))
    }

    fn set_thread_affinity(&mut self, pid: u32, cpus: &CpuSet) -> io::Result<()> {
        match self.threads.get_mut(&pid) {
            Some(t) => {
                *t = cpus.clone();
                self.log.push((format!("pid {pid}"), cpus.to_list_string()));
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }
}

#[cfg(test)]
mod tests;
