//! The kernel side: loads the eBPF programs, attaches what this kernel has, and reads the
//! counters they keep.
//!
//! Each event is attached with the cheapest program type the kernel takes: a BTF-typed
//! tracepoint (`tp_btf`, needs kernel BTF), else a raw tracepoint, else a classic one. The
//! first two get the tracepoint's arguments instead of a record built for them and are
//! guarded against recursion per program; classic programs share one per-CPU guard, so an
//! IRQ that arrives while any of them runs goes unseen. Offsets of classic record fields come
//! from tracefs, offsets inside kernel structs from BTF, both at start-up. A tracepoint this
//! kernel lacks or missing BTF switches off only the part that needs it; [`ProbeStatus`] says
//! what runs, how, and what does not, for the report's `meta`.
mod btf;
pub(crate) mod tracefs;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
    sync::Mutex,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, Stack},
    programs::{
        BtfTracePoint, FEntry, FExit, ProgramError, RawTracePoint, TracePoint,
        fentry::FEntryLinkId, fexit::FExitLinkId, raw_trace_point::RawTracePointLinkId,
        tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId,
    },
};
use balancer_common::{
    CpuState, IrqStat, MAX_NAPI_THREADS, NO_OFFSET, NR_ERRORS, NR_SOFTIRQS, NR_SYSVECS, NapiKey,
    NapiStat, Offsets, PairKey, RECORD_FIELDS, SYSVEC_NAMES, SoftirqStat,
};
use serde::Serialize;

use tracefs::{Format, Tracefs, TracefsError};

/// Why the probes could not be loaded: what a command tells apart (missing privileges and
/// an unmountable tracefs are the user's to fix; the rest is the kernel refusing).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Privileges or capabilities missing: one line naming them.
    #[error("{0}")]
    Permission(String),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error("loading the eBPF programs into the kernel")]
    Load(#[source] aya::EbpfError),
    /// No program type of an event the measurement needs attached; `tried` says why each
    /// failed.
    #[error("attaching {event}: {tried}")]
    Attach { event: String, tried: String },
    #[error("setting up map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

impl ProbeError {
    /// Whether the user fixes it by running with more privileges (root, capabilities, a
    /// tracefs only root may mount).
    pub(crate) fn is_permission(&self) -> bool {
        matches!(
            self,
            ProbeError::Permission(_)
                | ProbeError::Tracefs(TracefsError::NotMounted { .. } | TracefsError::NoEvents)
        )
    }
}

/// The compiled programs, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// Reads with no change in a NAPI instance's counters before its entry is deleted from the
/// kernel map: instances of deleted devices stop polling, and their slots are needed.
const NAPI_PRUNE_AFTER: u32 = 3;

/// End-to-end cost of one event (dispatch and program) by program type, from the probe
/// benchmark on the development machine (docs/benchmarks.md, `cargo xtask bench probes`):
/// the report's estimate of what the probes cost when `kernel.bpf_stats` is off.
pub(crate) fn calibrated_ns_per_event(t: ProgramType) -> f64 {
    match t {
        ProgramType::BtfTracePoint => CALIBRATED_NS[0],
        ProgramType::RawTracePoint => CALIBRATED_NS[1],
        ProgramType::TracePoint => CALIBRATED_NS[2],
    }
}

/// Per NET_RX softirq (4 events) end to end, divided by 4: tp_btf, raw_tp, tracepoint
/// (+286.1, +285.3, +452.4 ns per softirq, 2026-12-01, docs/benchmarks.md).
const CALIBRATED_NS: [f64; 3] = [72.0, 71.0, 113.0];

/// Headroom of the NAPI map over the machine's queues: devices and queues come and go
/// (veths of containers, ethtool -L), and pruned instances free their slot only after
/// [`NAPI_PRUNE_AFTER`] reads.
const NAPI_HEADROOM: u32 = 4;
/// The smallest NAPI map: small machines still get room for short-lived devices.
const NAPI_MAP_FLOOR: u32 = 1024;

/// Size of the NAPI map for a machine with `queues` netdev queues (rx + tx: a driver may
/// give each its own instance) and `cpus` possible CPUs (one backlog instance each).
pub(crate) fn napi_map_size(queues: u32, cpus: u32) -> u32 {
    queues
        .saturating_mul(NAPI_HEADROOM)
        .saturating_add(cpus)
        .max(NAPI_MAP_FLOOR)
}

/// What the caller can tune.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Kernel BTF to read struct offsets and tracepoint types from.
    pub btf: PathBuf,
    /// Size of the per-IRQ array: above the highest IRQ number the machine will have.
    pub max_irqs: u32,
    /// Size of the NAPI map: instances (netdev queues, per-CPU backlogs) with headroom.
    pub max_napi: u32,
    /// Load tracepoint fields straight from the record where the kernel's layout allows
    /// (see [`balancer_common::RecordField::compiled_at`]); off, every field costs a `bpf_probe_read_kernel`. Tests and
    /// the probe benchmark turn it off to exercise and measure the generic path.
    pub direct_loads: bool,
    /// The most capable program type to try; tests and the benchmark force lesser ones.
    pub program_type: ProgramType,
    /// Attach programs that do nothing (BTF-typed only) to the same events: the cost floor
    /// the probe benchmark compares with. Nothing is measured.
    pub empty: bool,
    /// With `empty`: the programs of softirq entry and exit and of polls read the clock once
    /// and store it, as the real ones do at each boundary (the floor with the clock reads).
    pub clock_floor: bool,
}

impl Default for ProbeOptions {
    /// `BALANCER_BTF` overrides the BTF path (tests use it to play a kernel without BTF).
    fn default() -> Self {
        ProbeOptions {
            btf: std::env::var_os("BALANCER_BTF")
                .map_or_else(|| PathBuf::from(btf::VMLINUX_BTF), PathBuf::from),
            max_irqs: 4096,
            max_napi: 1024,
            direct_loads: true,
            program_type: ProgramType::BtfTracePoint,
            empty: false,
            clock_floor: false,
        }
    }
}

/// How a program is attached, from the cheapest to the last resort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ProgramType {
    /// BPF_TRACE_RAW_TP with the tracepoint's BTF type (5.5+, needs kernel BTF).
    #[serde(rename = "tp_btf")]
    BtfTracePoint,
    /// BPF_PROG_TYPE_RAW_TRACEPOINT (4.17+).
    #[serde(rename = "raw_tp")]
    RawTracePoint,
    /// BPF_PROG_TYPE_TRACEPOINT: pays for the record and shares the recursion guard.
    #[serde(rename = "tracepoint")]
    TracePoint,
}

impl ProgramType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramType::BtfTracePoint => "tp_btf",
            ProgramType::RawTracePoint => "raw_tp",
            ProgramType::TracePoint => "tracepoint",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            ProgramType::BtfTracePoint => "btf_",
            ProgramType::RawTracePoint => "raw_",
            ProgramType::TracePoint => "tp_",
        }
    }
}

/// Whether one part of the measurement runs, and how or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Feature {
    pub active: bool,
    pub detail: String,
}

impl Feature {
    fn on(detail: impl Into<String>) -> Self {
        Feature {
            active: true,
            detail: detail.into(),
        }
    }
    fn off(detail: impl Into<String>) -> Self {
        Feature {
            active: false,
            detail: detail.into(),
        }
    }
}

/// What this kernel let us measure.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeStatus {
    /// irq:irq_handler_entry/exit: handler time per IRQ.
    pub hardirq: Feature,
    /// irq:softirq_entry/exit: run time per softirq vector.
    pub softirq: Feature,
    /// irq:softirq_raise: raises, and which IRQ raised NET_RX (co-occurrence links).
    pub(crate) softirq_raise: Feature,
    /// napi:napi_poll: poll time per NAPI instance.
    pub napi: Feature,
    /// `napi_struct.irq` from BTF: the exact NAPI -> IRQ link.
    pub napi_irq_exact: Feature,
    /// irq_vectors:*_entry/_exit (x86): time in the local timer, IPIs and other system
    /// vectors, which never pass through irq_handler_entry.
    pub(crate) system_vectors: Feature,
    /// sched:sched_switch, attached while NAPI kthreads exist: poll time of threaded NAPI.
    pub threaded_napi: Feature,
    /// fentry/fexit on the busy-poll loop (`__napi_busy_loop`, or `napi_busy_loop` before
    /// 6.8): poll time of busy polling.
    pub busy_poll: Feature,
    /// The program type of each attached event, e.g. `"napi:napi_poll": "tp_btf"`.
    pub program_types: BTreeMap<String, ProgramType>,
    /// One line: the type every event uses, or which ones differ and why.
    pub programs: String,
    /// Entries of the NAPI map (instances x CPUs it can hold); past it polls are counted
    /// in the events as lost.
    pub(crate) napi_map_entries: u32,
    /// How the classic programs read record fields: "direct", or why not; "no classic
    /// programs" when none is attached.
    pub field_reads: String,
}

impl ProbeStatus {
    /// One line per part that does not run, for warnings.
    pub(crate) fn missing(&self) -> Vec<String> {
        [
            ("hardirq", &self.hardirq),
            ("softirq", &self.softirq),
            ("softirq_raise", &self.softirq_raise),
            ("napi", &self.napi),
            ("napi_irq_exact", &self.napi_irq_exact),
            ("system_vectors", &self.system_vectors),
            ("threaded_napi", &self.threaded_napi),
            ("busy_poll", &self.busy_poll),
        ]
        .into_iter()
        .filter(|(_, f)| !f.active)
        .map(|(name, f)| format!("{name}: {}", f.detail))
        .collect()
    }
}

/// Cumulative counters read from the maps, zero entries left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// (IRQ, CPU) -> handler runs and time.
    pub irqs: BTreeMap<(u32, u32), IrqStat>,
    /// (CPU, system vector) -> runs and time; the vector indexes `SYSVEC_NAMES`.
    pub sysvecs: BTreeMap<(u32, u32), IrqStat>,
    /// (CPU, vector) -> raises, runs and time.
    pub softirqs: BTreeMap<(u32, u32), SoftirqStat>,
    /// (NAPI instance, CPU) -> polls and time.
    pub napi: BTreeMap<(NapiKey, u32), NapiStat>,
    /// (NAPI instance, IRQ) -> polls in a NET_RX softirq that IRQ's handler raised, all CPUs.
    pub(crate) pairs: BTreeMap<(NapiKey, u32), u64>,
    /// Map-full, read and other health counters of the programs, all CPUs.
    pub(crate) errors: [u64; NR_ERRORS as usize],
}

/// Counts of `a` and `b` added; the identity of `b` where it has one (the newer entry), else
/// `a`'s.
fn napi_sum(a: &NapiStat, b: &NapiStat) -> NapiStat {
    let named = b.dev_name[0] != 0;
    let id = if named { b } else { a };
    NapiStat {
        polls: a.polls + b.polls,
        work: a.work + b.work,
        budget_exhausted: a.budget_exhausted + b.budget_exhausted,
        ns: a.ns + b.ns,
        first_work: a.first_work + b.first_work,
        first_ns: a.first_ns + b.first_ns,
        untimed_polls: a.untimed_polls + b.untimed_polls,
        untimed_work: a.untimed_work + b.untimed_work,
        irq: id.irq,
        napi_id: id.napi_id,
        dev_name: id.dev_name,
        threaded_polls: a.threaded_polls + b.threaded_polls,
        threaded_work: a.threaded_work + b.threaded_work,
        threaded_ns: a.threaded_ns + b.threaded_ns,
        busy_polls: a.busy_polls + b.busy_polls,
        busy_work: a.busy_work + b.busy_work,
        busy_ns: a.busy_ns + b.busy_ns,
        napi: id.napi,
    }
}

/// Says how the classic programs read record fields with these offsets.
fn field_reads(o: &Offsets) -> String {
    if o.direct_loads == 0 {
        return "bpf_probe_read_kernel (direct loads turned off)".to_string();
    }
    let off_layout: Vec<String> = RECORD_FIELDS
        .iter()
        .zip(o.record)
        .filter(|&(f, at)| f.compiled_at != NO_OFFSET && at != NO_OFFSET && at != f.compiled_at)
        .map(|(f, at)| format!("{}.{} at {at}, not {}", f.event, f.field, f.compiled_at))
        .collect();
    if off_layout.is_empty() {
        "direct".to_string()
    } else {
        format!(
            "direct, except bpf_probe_read_kernel for {}",
            off_layout.join("; ")
        )
    }
}

/// Which part of the measurement an event feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Hardirq,
    Softirq,
    SoftirqRaise,
    Napi,
    SystemVector,
}

/// One tracepoint; its programs are `btf_<name>`, `raw_<name>` and `tp_<name>`.
#[derive(Clone, Debug)]
struct Event {
    category: &'static str,
    name: String,
    part: Part,
}

impl Event {
    fn id(&self) -> String {
        format!("{}:{}", self.category, self.name)
    }
}

fn events() -> Vec<Event> {
    let ev = |category, name: &str, part| Event {
        category,
        name: name.to_string(),
        part,
    };
    let mut v = vec![
        ev("irq", "irq_handler_entry", Part::Hardirq),
        ev("irq", "irq_handler_exit", Part::Hardirq),
        ev("irq", "softirq_raise", Part::SoftirqRaise),
        ev("irq", "softirq_entry", Part::Softirq),
        ev("irq", "softirq_exit", Part::Softirq),
        ev("napi", "napi_poll", Part::Napi),
    ];
    for name in SYSVEC_NAMES {
        for end in ["entry", "exit"] {
            v.push(ev(
                "irq_vectors",
                &format!("{name}_{end}"),
                Part::SystemVector,
            ));
        }
    }
    v
}

/// An attached program's link, for detaching.
enum LinkId {
    Btf(BtfTracePointLinkId),
    Raw(RawTracePointLinkId),
    Classic(TracePointLinkId),
    FEntry(FEntryLinkId),
    FExit(FExitLinkId),
}

/// How a program outside the per-event set attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ExtraKind {
    Event(ProgramType),
    FEntry,
    FExit,
}

/// A program timing task-context polls: `sched_switch` (attached only while NAPI kthreads
/// exist, so machines without threaded NAPI pay nothing per context switch) and the busy-poll
/// loop's fentry/fexit (which cost only when a loop runs).
struct Extra {
    program: String,
    /// What [`ProgramStats::event`] calls it.
    event: String,
    kind: ExtraKind,
    link: Option<LinkId>,
    /// Attached while the probe is; `sched_switch` only while it has pids.
    wanted: bool,
}

/// The NAPI kthreads `NAPI_THREADS` holds, and the generation they were written with: the
/// programs time a kthread's poll only from a mark made under the generation its map entry
/// has, so a mark left from before `sched_switch` was detached is never used.
#[derive(Default)]
struct Threads {
    pids: BTreeSet<u32>,
    generation: u32,
}

/// A program attached to one event.
struct Attached {
    program: String,
    link: Option<LinkId>,
    /// Everything [`Probe::attach`] needs to attach it again.
    event: Event,
    kind: ProgramType,
}

/// What [`Probe::read`] remembers between reads to prune dead NAPI instances.
#[derive(Default)]
struct NapiSeen {
    /// Instance -> (polls over all CPUs at the last read, reads since that changed).
    polls: BTreeMap<NapiKey, (u64, u32)>,
    /// Instances deleted from the kernel map, over the probe's life.
    pruned: u64,
    /// Final per-CPU counts of pruned instances, added to every read until the interval that
    /// holds them has started ([`Probe::checkpoint`]); an instance that polls again after its
    /// prune keeps them as a base under its new kernel entry, so its counters never go back.
    retired_napi: BTreeMap<(NapiKey, u32), NapiStat>,
    retired_pairs: BTreeMap<(NapiKey, u32), u64>,
}

impl NapiSeen {
    /// Instances of `c` (the kernel map's contents) whose polls did not move for
    /// [`NAPI_PRUNE_AFTER`] reads; the rest are remembered for the next read.
    fn idle_out(&mut self, c: &Counters) -> BTreeSet<NapiKey> {
        let mut totals: BTreeMap<NapiKey, u64> = BTreeMap::new();
        for ((key, _), v) in &c.napi {
            *totals.entry(*key).or_default() += v.polls + v.untimed_polls;
        }
        let mut dead = BTreeSet::new();
        let mut next = BTreeMap::new();
        for (key, polls) in totals {
            let idle = match self.polls.get(&key) {
                Some(&(before, idle)) if before == polls => idle + 1,
                _ => 0,
            };
            if idle >= NAPI_PRUNE_AFTER {
                dead.insert(key);
            } else {
                next.insert(key, (polls, idle));
            }
        }
        self.polls = next;
        self.pruned += dead.len() as u64;
        dead
    }

    /// Moves the counts of `dead` instances out of `c` into the kept counts: what the
    /// kernel forgets is kept here, so nothing an interval counted is lost.
    fn retire(&mut self, c: &mut Counters, dead: &BTreeSet<NapiKey>) {
        let (napi, pairs) = (std::mem::take(&mut c.napi), std::mem::take(&mut c.pairs));
        for ((key, cpu), v) in napi {
            if dead.contains(&key) {
                let base = self
                    .retired_napi
                    .entry((key, cpu))
                    .or_insert(NapiStat::EMPTY);
                *base = napi_sum(base, &v);
            } else {
                c.napi.insert((key, cpu), v);
            }
        }
        for ((key, irq), n) in pairs {
            if dead.contains(&key) {
                *self.retired_pairs.entry((key, irq)).or_default() += n;
            } else {
                c.pairs.insert((key, irq), n);
            }
        }
    }

    /// Adds the kept counts to `c`, under any new kernel entry of the same instance.
    fn add_retired(&self, c: &mut Counters) {
        for (k, base) in &self.retired_napi {
            let v = c.napi.entry(*k).or_insert(NapiStat::EMPTY);
            *v = napi_sum(base, v);
        }
        for (k, base) in &self.retired_pairs {
            *c.pairs.entry(*k).or_default() += base;
        }
    }

    /// Forgets the kept counts of instances that are not in the kernel map any more.
    fn checkpoint(&mut self) {
        let polls = &self.polls;
        self.retired_napi.retain(|(k, _), _| polls.contains_key(k));
        self.retired_pairs.retain(|(k, _), _| polls.contains_key(k));
    }
}

/// The loaded, attached programs. Dropping it detaches them.
pub struct Probe {
    ebpf: Ebpf,
    attached: Vec<Attached>,
    extras: Vec<Extra>,
    threads: Threads,
    seen: Mutex<NapiSeen>,
    max_irqs: u32,
    /// Whether the softirq_raise program is wanted (see [`Probe::set_raise_counting`]).
    raise_counting: bool,
    pub status: ProbeStatus,
}

impl Probe {
    /// Checks privileges, reads the offsets, loads and attaches the programs.
    // Long (about 195 lines): one sequence (formats, record offsets, BTF offsets, load,
    // attach per event with its fallbacks, extras, status), each step feeding the next with
    // the locals it made; split, the pieces would pass most of them along.
    pub fn load(opts: &ProbeOptions) -> Result<Probe, ProbeError> {
        check_privileges()?;
        raise_memlock_limit();
        let tracefs = Tracefs::find_or_mount()?;

        let events = events();
        let mut formats: BTreeMap<String, Option<Format>> = BTreeMap::new();
        for ev in &events {
            formats.insert(ev.name.clone(), tracefs.format(ev.category, &ev.name)?);
        }
        let sched_switch = tracefs.format("sched", SCHED_SWITCH)?;
        formats.insert(SCHED_SWITCH.to_string(), sched_switch.clone());
        let mut offsets = Offsets::UNSET;
        for (slot, f) in offsets.record.iter_mut().zip(RECORD_FIELDS) {
            if let Some(format) = formats.get(f.event).and_then(Option::as_ref) {
                *slot = tracefs.offset(format, f.category, f.event, f.field, f.size)?;
            }
        }
        offsets.direct_loads = opts.direct_loads.into();
        offsets.max_irqs = opts.max_irqs.max(64);

        let (napi_irq_exact, struct_offsets) = match btf::napi_offsets(&opts.btf) {
            Ok(n) => {
                offsets.napi_struct_napi_id = n.napi_id.unwrap_or(NO_OFFSET);
                offsets.napi_struct_dev = n.dev.unwrap_or(NO_OFFSET);
                offsets.net_device_name = n.dev_name.unwrap_or(NO_OFFSET);
                offsets.task_struct_pid = n.task_pid.unwrap_or(NO_OFFSET);
                offsets.task_struct_nvcsw = n.task_nvcsw.unwrap_or(NO_OFFSET);
                offsets.task_struct_sum_exec = n.task_sum_exec.unwrap_or(NO_OFFSET);
                offsets.task_struct_prev_sum_exec = n.task_prev_sum_exec.unwrap_or(NO_OFFSET);
                offsets.runtime_has_irqs = u32::from(!n.irq_time_accounting);
                offsets.task_struct_nivcsw = n.task_nivcsw.unwrap_or(NO_OFFSET);
                let exact = match n.irq {
                    Some(off) => {
                        offsets.napi_struct_irq = off;
                        Feature::on(format!("napi_struct.irq at byte {off} (BTF)"))
                    }
                    None => Feature::off(
                        "struct napi_struct has no irq field (kernel before 6.8); \
                         NAPI instances are linked to IRQs by co-occurrence",
                    ),
                };
                (exact, Some(n))
            }
            Err(why) => (
                Feature::off(format!(
                    "kernel BTF unavailable ({why}); NAPI instances are linked to IRQs by \
                     co-occurrence"
                )),
                None,
            ),
        };
        // Arguments give the napi_struct, not its device's name: raw and BTF-typed napi_poll
        // programs need the struct offsets to find it.
        let napi_by_args = struct_offsets.is_some_and(|n| n.dev.is_some() && n.dev_name.is_some());

        // The tracepoints' BTF types, for tp_btf only. aya parses the whole of it; it is
        // dropped once the programs are loaded.
        let kernel_btf = if opts.program_type == ProgramType::BtfTracePoint {
            Btf::parse_file(&opts.btf, Endianness::default()).ok()
        } else {
            None
        };

        // The programs carry no CO-RE relocations: nothing to relocate against the kernel's
        // BTF (aya's loader parses it anyway when constructed; see docs/benchmarks.md).
        let napi_slots = opts.max_napi.max(64);
        let empty = match (opts.empty, opts.clock_floor) {
            (false, _) => Empty::No,
            (true, false) => Empty::Yes,
            (true, true) => Empty::Clock,
        };
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("IRQ_STATS", offsets.max_irqs)
            .map_max_entries("NAPI_SLOTS", napi_slots)
            .map_max_entries("NAPI_STATS", napi_slots)
            .map_max_entries("NAPI_FREE", napi_slots)
            .map_max_entries("NAPI_IRQ_PAIRS", napi_slots.saturating_mul(4))
            .load(OBJECT)
            .map_err(ProbeError::Load)?;
        free_slots(&mut ebpf, napi_slots)?;

        let mut attached = Vec::new();
        let mut absent: BTreeMap<String, String> = BTreeMap::new();
        let mut fallbacks: Vec<String> = Vec::new();
        for ev in &events {
            if formats.get(&ev.name).is_none_or(Option::is_none) {
                absent.insert(
                    ev.id(),
                    format!("tracepoint {} not in this kernel", ev.id()),
                );
                continue;
            }
            let mut tried = Vec::new();
            for kind in [
                ProgramType::BtfTracePoint,
                ProgramType::RawTracePoint,
                ProgramType::TracePoint,
            ] {
                if kind < opts.program_type || (opts.empty && kind != ProgramType::BtfTracePoint) {
                    continue;
                }
                if kind == ProgramType::BtfTracePoint && kernel_btf.is_none() {
                    tried.push("tp_btf: no kernel BTF".to_string());
                    continue;
                }
                if ev.part == Part::Napi && kind != ProgramType::TracePoint && !napi_by_args {
                    tried.push(format!(
                        "{}: napi_struct.dev or net_device.name not in BTF",
                        kind.as_str()
                    ));
                    continue;
                }
                match attach_one(&mut ebpf, ev, kind, kernel_btf.as_ref(), empty) {
                    Ok(a) => {
                        if !tried.is_empty() {
                            fallbacks.push(format!(
                                "{} {} ({})",
                                ev.id(),
                                kind.as_str(),
                                tried.join(", ")
                            ));
                        }
                        attached.push(a);
                        break;
                    }
                    Err(e) => tried.push(format!("{}: {e:#}", kind.as_str())),
                }
            }
            if !attached.iter().any(|a: &Attached| a.event.name == ev.name) {
                // A system vector is one row of the report; the rest is the measurement.
                if ev.part == Part::SystemVector {
                    absent.insert(ev.id(), format!("{}: {}", ev.id(), tried.join("; ")));
                } else {
                    return Err(ProbeError::Attach {
                        event: ev.id(),
                        tried: tried.join("; "),
                    });
                }
            }
        }
        let (extras, threaded_napi, busy_poll) = if opts.empty {
            let off = || Feature::off("empty programs (benchmark floor)");
            (Vec::new(), off(), off())
        } else {
            load_extras(
                &mut ebpf,
                opts.program_type,
                kernel_btf.as_ref(),
                &offsets,
                sched_switch.is_some(),
            )
        };
        drop(kernel_btf);

        let program_types: BTreeMap<String, ProgramType> =
            attached.iter().map(|a| (a.event.id(), a.kind)).collect();
        let kinds: BTreeSet<ProgramType> = program_types.values().copied().collect();
        let programs = match (kinds.len(), kinds.first()) {
            (1, Some(k)) => k.as_str().to_string(),
            _ => format!("mixed: {}", fallbacks.join("; ")),
        };
        let classic = kinds.contains(&ProgramType::TracePoint);
        let status = ProbeStatus {
            hardirq: part_feature(&events, &absent, Part::Hardirq, "handler time per IRQ"),
            softirq: part_feature(&events, &absent, Part::Softirq, "run time per vector"),
            softirq_raise: part_feature(
                &events,
                &absent,
                Part::SoftirqRaise,
                "raises, NET_RX raised by IRQ handlers",
            ),
            napi: part_feature(
                &events,
                &absent,
                Part::Napi,
                "poll time per NAPI instance, a NET_RX round's preamble (before its first \
                 poll) shared by packets",
            ),
            napi_irq_exact,
            system_vectors: sysvec_feature(&events, &absent),
            threaded_napi,
            busy_poll,
            program_types,
            programs,
            napi_map_entries: napi_slots,
            field_reads: if classic {
                field_reads(&offsets)
            } else {
                "no classic programs: arguments, no records".to_string()
            },
        };
        let mut probe = Probe {
            ebpf,
            attached,
            extras,
            threads: Threads::default(),
            seen: Mutex::new(NapiSeen::default()),
            max_irqs: offsets.max_irqs,
            raise_counting: true,
            status,
        };
        for i in 0..probe.extras.len() {
            if probe.extras[i].wanted {
                probe.attach_extra(i).map_err(|e| ProbeError::Attach {
                    event: probe.extras[i].event.to_string(),
                    tried: format!("{e:#}"),
                })?;
            }
        }
        Ok(probe)
    }

    /// Detaches every program; the maps and their counts stay.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        self.detach_where(|_| true)?;
        self.detach_extras()
    }

    /// Between the daemon's windows: every program detached but the system vectors', which
    /// stay attached and paused; the maps and their counts stay. Toggling a tracepoint
    /// rewrites kernel text (a static key and a static call, each a round of synchronising
    /// IPIs to every CPU: 45% of the dry-run daemon's CPU on this machine with all 25
    /// toggled each interval, and under single-threaded TCG each round waits for every vCPU
    /// to be scheduled), while the 18 system-vector tracepoints see a few hundred events a
    /// second per CPU, each returning at the flag. The busy-poll loop's fentry/fexit stay
    /// too: a trampoline is kernel text as well, the loop runs only on busy-polling sockets,
    /// and 5.10 cannot attach a tracing program again once it was detached (`ENOENT`: its
    /// target is released at the first attach), which stopped every window after the first.
    /// [`Probe::attach`] resumes.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.set_paused(true)?;
        self.detach_where(|a| a.event.part != Part::SystemVector)?;
        for i in 0..self.extras.len() {
            if matches!(self.extras[i].kind, ExtraKind::Event(_)) {
                self.detach_extra(i)?;
            }
        }
        Ok(())
    }

    fn detach_extras(&mut self) -> anyhow::Result<()> {
        for i in 0..self.extras.len() {
            self.detach_extra(i)?;
        }
        Ok(())
    }

    /// Attaches again what [`Probe::detach`] or [`Probe::pause`] detached (except events
    /// switched off with [`Probe::set_raise_counting`]), and resumes what was paused. The
    /// per-CPU entry/exit state is cleared first: an entry seen before the detach must not
    /// pair with an exit after it. When one program fails to attach, what this call attached
    /// is detached again and the system vectors stay paused: half the programs running
    /// unread would cost on every event and measure nothing.
    pub fn attach(&mut self) -> anyhow::Result<()> {
        self.reset_cpu_state()?;
        let raise = self.raise_counting;
        let attached = self
            .attach_where(|a| raise || a.event.part != Part::SoftirqRaise)
            .and_then(|()| {
                for i in 0..self.extras.len() {
                    if self.extras[i].wanted {
                        self.attach_extra(i)?;
                    }
                }
                Ok(())
            });
        match attached {
            Ok(()) => self.set_paused(false),
            Err(e) => match self.pause() {
                Ok(()) => Err(e),
                Err(undo) => Err(e.context(format!("and detaching again failed: {undo:#}"))),
            },
        }
    }

    /// Pauses the programs [`Probe::pause`] leaves attached (the system vectors').
    fn set_paused(&mut self, paused: bool) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut("PAUSED")
            .ok_or_else(|| anyhow!("map PAUSED missing from the eBPF object"))?;
        let mut flag: Array<&mut MapData, u32> = Array::try_from(map)?;
        flag.set(0, u32::from(paused), 0)
            .context("writing the PAUSED flag")?;
        Ok(())
    }

    /// Counts NET_RX raises (and learns co-occurrence links) or not. Where every NIC queue
    /// is linked exactly, the raise program only costs: one event fewer per softirq.
    pub fn set_raise_counting(&mut self, on: bool, why: &str) -> anyhow::Result<()> {
        if on == self.raise_counting {
            return Ok(());
        }
        let raise = |a: &Attached| a.event.part == Part::SoftirqRaise;
        let attached = self.is_attached();
        if on && attached {
            self.attach_where(raise)?;
        } else if !on {
            self.detach_where(raise)?;
        }
        self.raise_counting = on;
        if self.status.softirq_raise.active != on
            && self
                .attached
                .iter()
                .any(|a| a.event.part == Part::SoftirqRaise)
        {
            self.status.softirq_raise = if on {
                Feature::on("irq:softirq_raise: raises, NET_RX raised by IRQ handlers")
            } else {
                Feature::off(format!("not attached: {why}"))
            };
        }
        Ok(())
    }

    fn detach_where(&mut self, pick: impl Fn(&Attached) -> bool) -> anyhow::Result<()> {
        for a in self.attached.iter_mut().filter(|a| pick(a)) {
            if let Some(link) = a.link.take() {
                detach_link(&mut self.ebpf, &a.program, link)?;
            }
        }
        Ok(())
    }

    fn attach_where(&mut self, pick: impl Fn(&Attached) -> bool) -> anyhow::Result<()> {
        for a in self.attached.iter_mut().filter(|a| pick(a)) {
            if a.link.is_some() {
                continue;
            }
            let prog = self
                .ebpf
                .program_mut(&a.program)
                .ok_or_else(|| anyhow!("program {} missing", a.program))?;
            let link = (|| -> anyhow::Result<LinkId> {
                Ok(match a.kind {
                    ProgramType::BtfTracePoint => {
                        LinkId::Btf(<&mut BtfTracePoint>::try_from(prog)?.attach()?)
                    }
                    ProgramType::RawTracePoint => {
                        LinkId::Raw(<&mut RawTracePoint>::try_from(prog)?.attach(&a.event.name)?)
                    }
                    ProgramType::TracePoint => LinkId::Classic(
                        <&mut TracePoint>::try_from(prog)?
                            .attach(a.event.category, &a.event.name)?,
                    ),
                })
            })()
            .with_context(|| format!("attaching {} to {}", a.program, a.event.id()))?;
            a.link = Some(link);
        }
        Ok(())
    }

    fn detach_extra(&mut self, i: usize) -> anyhow::Result<()> {
        let x = &mut self.extras[i];
        match x.link.take() {
            Some(link) => detach_link(&mut self.ebpf, &x.program, link),
            None => Ok(()),
        }
    }

    fn attach_extra(&mut self, i: usize) -> anyhow::Result<()> {
        let x = &mut self.extras[i];
        if x.link.is_some() {
            return Ok(());
        }
        let prog = self
            .ebpf
            .program_mut(&x.program)
            .ok_or_else(|| anyhow!("program {} missing", x.program))?;
        let link = (|| -> anyhow::Result<LinkId> {
            Ok(match x.kind {
                ExtraKind::Event(ProgramType::BtfTracePoint) => {
                    LinkId::Btf(<&mut BtfTracePoint>::try_from(prog)?.attach()?)
                }
                ExtraKind::Event(ProgramType::RawTracePoint) => {
                    LinkId::Raw(<&mut RawTracePoint>::try_from(prog)?.attach(SCHED_SWITCH)?)
                }
                ExtraKind::Event(ProgramType::TracePoint) => LinkId::Classic(
                    <&mut TracePoint>::try_from(prog)?.attach("sched", SCHED_SWITCH)?,
                ),
                ExtraKind::FEntry => LinkId::FEntry(<&mut FEntry>::try_from(prog)?.attach()?),
                ExtraKind::FExit => LinkId::FExit(<&mut FExit>::try_from(prog)?.attach()?),
            })
        })()
        .with_context(|| format!("attaching {} to {}", x.program, x.event))?;
        x.link = Some(link);
        Ok(())
    }

    /// Tells the programs which pids are NAPI kthreads, and attaches `sched_switch` while
    /// there are any (detached, a context switch costs nothing). Cheap when nothing changed.
    pub(crate) fn set_napi_threads(&mut self, pids: &BTreeSet<u32>) -> anyhow::Result<()> {
        let Some(i) = self.extras.iter().position(|x| x.event == SCHED_SWITCH_ID) else {
            return Ok(());
        };
        let mut pids = pids.clone();
        if pids.len() > MAX_NAPI_THREADS as usize {
            log::warn!(
                "{} NAPI kthreads, timing the first {MAX_NAPI_THREADS}",
                pids.len()
            );
            pids = pids.into_iter().take(MAX_NAPI_THREADS as usize).collect();
        }
        let attaching = !pids.is_empty() && self.extras[i].link.is_none() && self.is_attached();
        if pids == self.threads.pids && !attaching {
            return Ok(());
        }
        let mut map: BpfHashMap<&mut MapData, u32, u32> = BpfHashMap::try_from(
            self.ebpf
                .map_mut("NAPI_THREADS")
                .ok_or_else(|| anyhow!("map NAPI_THREADS missing from the eBPF object"))?,
        )?;
        for gone in self.threads.pids.difference(&pids) {
            // Already gone is fine: only this code writes the map.
            let _ = map.remove(gone);
        }
        if attaching {
            // A new generation: marks made before this attach no longer time anything.
            self.threads.generation = self.threads.generation.wrapping_add(1).max(1);
            for pid in &pids {
                map.insert(pid, self.threads.generation, 0)
                    .context("writing NAPI_THREADS")?;
            }
        } else {
            for pid in pids.difference(&self.threads.pids) {
                map.insert(pid, self.threads.generation.max(1), 0)
                    .context("writing NAPI_THREADS")?;
            }
        }
        self.threads.pids = pids;
        self.extras[i].wanted = !self.threads.pids.is_empty();
        if self.extras[i].wanted && self.is_attached() {
            self.attach_extra(i)?;
        } else if !self.extras[i].wanted {
            self.detach_extra(i)?;
        }
        Ok(())
    }

    /// NAPI kthreads the programs know of, and whether `sched_switch` is attached now.
    pub fn napi_threads(&self) -> (usize, bool) {
        let on = self
            .extras
            .iter()
            .any(|x| x.event == SCHED_SWITCH_ID && x.link.is_some());
        (self.threads.pids.len(), on)
    }

    /// Whether the programs are attached now (the raise program aside, which
    /// [`Probe::set_raise_counting`] may have switched off).
    /// The events whose programs are attached now (`category:name`), paused or not.
    pub fn attached_events(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter(|a| a.link.is_some())
            .map(|a| a.event.id())
            .chain(
                self.extras
                    .iter()
                    .filter(|x| x.link.is_some())
                    .map(|x| x.event.clone()),
            )
            .collect()
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.attached
            .iter()
            .filter(|a| !matches!(a.event.part, Part::SoftirqRaise | Part::SystemVector))
            .all(|a| a.link.is_some())
    }

    fn reset_cpu_state(&mut self) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut("CPU_STATE")
            .ok_or_else(|| anyhow!("map CPU_STATE missing from the eBPF object"))?;
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let mut state: PerCpuArray<&mut MapData, CpuState> = PerCpuArray::try_from(map)?;
        let zero = aya::maps::PerCpuValues::try_from(vec![CpuState::default(); ncpus])?;
        state.set(0, zero, 0)?;
        Ok(())
    }

    /// Reads every counter, and prunes NAPI instances that stopped polling. Cheap enough for
    /// once a second: one pass over each map. Pruned instances' counts stay in what it
    /// returns until [`Probe::checkpoint`].
    pub fn read(&self) -> anyhow::Result<Counters> {
        let mut c = Counters::default();

        // One batch syscall for the whole array; one lookup per IRQ number where the kernel
        // has no batch operations (before 5.6). Each syscall is expensive under emulation.
        let irq_map = match self.map("IRQ_STATS")? {
            aya::maps::Map::PerCpuArray(m) => m,
            _ => anyhow::bail!("IRQ_STATS is not a per-CPU array"),
        };
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        match lookup_batch::<IrqStat>(irq_map.fd().as_fd().as_raw_fd(), self.max_irqs, ncpus) {
            Some(all) => {
                for (irq, values) in all.chunks(ncpus).enumerate() {
                    for (cpu, v) in values.iter().enumerate() {
                        if v.runs != 0 {
                            c.irqs.insert((irq as u32, cpu as u32), *v);
                        }
                    }
                }
            }
            None => {
                let irqs: PerCpuArray<&MapData, IrqStat> =
                    PerCpuArray::try_from(self.map("IRQ_STATS")?)?;
                for irq in 0..self.max_irqs {
                    let values = irqs.get(&irq, 0).context("reading IRQ_STATS")?;
                    for (cpu, v) in values.iter().enumerate() {
                        if v.runs != 0 {
                            c.irqs.insert((irq, cpu as u32), *v);
                        }
                    }
                }
            }
        }

        let sysvecs: PerCpuArray<&MapData, IrqStat> =
            PerCpuArray::try_from(self.map("SYSVEC_STATS")?)?;
        for vec in 0..NR_SYSVECS as u32 {
            let values = sysvecs.get(&vec, 0).context("reading SYSVEC_STATS")?;
            for (cpu, v) in values.iter().enumerate() {
                if v.runs != 0 {
                    c.sysvecs.insert((cpu as u32, vec), *v);
                }
            }
        }

        let softirqs: PerCpuArray<&MapData, SoftirqStat> =
            PerCpuArray::try_from(self.map("SOFTIRQ_STATS")?)?;
        for vec in 0..NR_SOFTIRQS as u32 {
            let values = softirqs.get(&vec, 0).context("reading SOFTIRQ_STATS")?;
            for (cpu, v) in values.iter().enumerate() {
                if v.raises != 0 || v.runs != 0 {
                    c.softirqs.insert((cpu as u32, vec), *v);
                }
            }
        }

        let slots: BpfHashMap<&MapData, NapiKey, u32> =
            BpfHashMap::try_from(self.map("NAPI_SLOTS")?)?;
        let live: BTreeMap<NapiKey, u32> = slots
            .iter()
            .collect::<Result<_, _>>()
            .context("reading NAPI_SLOTS")?;
        self.read_napi(&live, ncpus, &mut c)?;

        let pairs: PerCpuHashMap<&MapData, PairKey, u64> =
            PerCpuHashMap::try_from(self.map("NAPI_IRQ_PAIRS")?)?;
        for entry in pairs.iter() {
            let (key, values) = entry.context("reading NAPI_IRQ_PAIRS")?;
            let n: u64 = values.iter().sum();
            if n != 0 {
                let napi = NapiKey {
                    napi: key.napi,
                    napi_id: key.napi_id,
                    _pad: 0,
                };
                c.pairs.insert((napi, key.irq), n);
            }
        }

        let errors: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map("ERRORS")?)?;
        for (i, slot) in c.errors.iter_mut().enumerate() {
            *slot = errors.get(&(i as u32), 0)?.iter().sum();
        }
        self.prune(&mut c, &live)?;
        Ok(c)
    }

    /// The counts of the instances in `live` (instance -> slot): one batch read of the
    /// slots in use (the lowest: free slots are taken from the bottom of a stack), or one
    /// lookup per instance where the kernel has no batch operations. A CPU's copy of a slot
    /// counts only when it is the instance's (a reused slot's copy on a CPU that has not
    /// polled the new instance is the old one's, or zeroes).
    fn read_napi(
        &self,
        live: &BTreeMap<NapiKey, u32>,
        ncpus: usize,
        c: &mut Counters,
    ) -> anyhow::Result<()> {
        let Some(len) = live.values().max().map(|m| m + 1) else {
            return Ok(());
        };
        let mut add = |key: &NapiKey, values: &[NapiStat]| add_napi_copies(c, key, values);
        let map = match self.map("NAPI_STATS")? {
            aya::maps::Map::PerCpuArray(m) => m,
            _ => anyhow::bail!("NAPI_STATS is not a per-CPU array"),
        };
        if let Some(all) = lookup_batch::<NapiStat>(map.fd().as_fd().as_raw_fd(), len, ncpus) {
            for (key, &slot) in live {
                let at = slot as usize * ncpus;
                if let Some(values) = all.get(at..at + ncpus) {
                    add(key, values);
                }
            }
            return Ok(());
        }
        let stats: PerCpuArray<&MapData, NapiStat> =
            PerCpuArray::try_from(self.map("NAPI_STATS")?)?;
        for (key, &slot) in live {
            let values = stats.get(&slot, 0).context("reading NAPI_STATS")?;
            add(key, &values);
        }
        Ok(())
    }

    /// Deletes NAPI instances whose counters did not move for [`NAPI_PRUNE_AFTER`] reads, and
    /// their pairs, from the kernel maps, and keeps their counts in the probe until the next
    /// [`Probe::checkpoint`], so that an interval spanning many reads (a long `report`) still
    /// counts instances that came and went inside it. A deleted instance that polls again
    /// starts a new kernel entry from zero on top of its kept counts; only polls between this
    /// read and the delete are lost.
    fn prune(&self, c: &mut Counters, live: &BTreeMap<NapiKey, u32>) -> anyhow::Result<()> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| anyhow!("NAPI prune state poisoned"))?;
        let dead = seen.idle_out(c);
        if !dead.is_empty() {
            self.delete_napi(&dead, live)?;
            seen.retire(c, &dead);
        }
        seen.add_retired(c);
        Ok(())
    }

    /// Deletes instances and their pairs from the kernel maps and frees their slots: out of
    /// `NAPI_SLOTS` first (a poll from now on takes a new slot), then zeroed on every CPU
    /// (a CPU whose last poll was in the slot no longer takes it for the instance's), then
    /// given back.
    fn delete_napi(
        &self,
        dead: &BTreeSet<NapiKey>,
        live: &BTreeMap<NapiKey, u32>,
    ) -> anyhow::Result<()> {
        // Deleting needs the maps mutably; they are shared kernel objects, so a second
        // handle from the same fd is as good.
        let mut slots: BpfHashMap<MapData, NapiKey, u32> =
            BpfHashMap::try_from(self.owned_map("NAPI_SLOTS")?)?;
        let mut stats: PerCpuArray<MapData, NapiStat> =
            PerCpuArray::try_from(self.owned_map("NAPI_STATS")?)?;
        let mut free: Stack<MapData, u32> = Stack::try_from(self.owned_map("NAPI_FREE")?)?;
        let mut pairs: PerCpuHashMap<MapData, PairKey, u64> =
            PerCpuHashMap::try_from(self.owned_map("NAPI_IRQ_PAIRS")?)?;
        let ncpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for key in dead {
            let Some(&slot) = live.get(key) else { continue };
            // Already gone is fine: nothing else deletes. A slot whose delete or zeroing
            // failed is not given back (one slot fewer, never two instances in one).
            if slots.remove(key).is_err() {
                continue;
            }
            let zero = aya::maps::PerCpuValues::try_from(vec![NapiStat::EMPTY; ncpus])?;
            if stats.set(slot, zero, 0).is_ok() {
                free.push(slot, 0).context("freeing a NAPI_STATS slot")?;
            }
        }
        let pair_keys: Vec<PairKey> = pairs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                dead.contains(&NapiKey {
                    napi: k.napi,
                    napi_id: k.napi_id,
                    _pad: 0,
                })
            })
            .collect();
        for k in &pair_keys {
            let _ = pairs.remove(k);
        }
        Ok(())
    }

    /// The last [`Probe::read`] starts an interval: the counts of instances pruned before it,
    /// and not polling again, are in that interval's start and leave the probe's memory (an
    /// interval's delta of an instance absent at its end is nothing, as it should be).
    pub(crate) fn checkpoint(&self) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.checkpoint();
        }
    }

    /// NAPI instances deleted from the kernel map because they stopped polling.
    pub(crate) fn napi_pruned(&self) -> u64 {
        self.seen.lock().map_or(0, |s| s.pruned)
    }

    fn map(&self, name: &str) -> anyhow::Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
    }

    /// An owned handle on a map (a duplicate of its fd), for the writes `read` makes.
    fn owned_map(&self, name: &str) -> anyhow::Result<aya::maps::Map> {
        use aya::maps::Map;
        let (data, wrap): (&MapData, fn(MapData) -> Map) = match self.map(name)? {
            Map::PerCpuHashMap(m) => (m, Map::PerCpuHashMap),
            Map::HashMap(m) => (m, Map::HashMap),
            Map::PerCpuArray(m) => (m, Map::PerCpuArray),
            Map::Stack(m) => (m, Map::Stack),
            _ => anyhow::bail!("{name}: no owned handle for this map type"),
        };
        Ok(wrap(MapData::from_id(data.info()?.id())?))
    }

    /// Per program: (name, run count, run time in ns, recursion misses). Run count and time
    /// are valid while `kernel.bpf_stats_enabled` is on; misses are always counted.
    pub fn program_stats(&self) -> anyhow::Result<Vec<ProgramStats>> {
        let mut out = Vec::new();
        for a in &self.attached {
            let prog = self
                .ebpf
                .program(&a.program)
                .ok_or_else(|| anyhow!("program {} missing", a.program))?;
            let info = prog.info()?;
            let fd = prog.fd()?;
            out.push(ProgramStats {
                event: a.event.id(),
                run_count: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
                recursion_misses: recursion_misses(fd.as_fd().as_raw_fd()).unwrap_or(0),
            });
        }
        for x in self.extras.iter().filter(|x| x.link.is_some()) {
            let prog = self
                .ebpf
                .program(&x.program)
                .ok_or_else(|| anyhow!("program {} missing", x.program))?;
            let info = prog.info()?;
            let fd = prog.fd()?;
            out.push(ProgramStats {
                event: x.event.clone(),
                run_count: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
                recursion_misses: recursion_misses(fd.as_fd().as_raw_fd()).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

/// Detaches one link of `program`, whatever its kind.
fn detach_link(ebpf: &mut Ebpf, program: &str, link: LinkId) -> anyhow::Result<()> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing"))?;
    match link {
        LinkId::Btf(l) => <&mut BtfTracePoint>::try_from(prog)?.detach(l)?,
        LinkId::Raw(l) => <&mut RawTracePoint>::try_from(prog)?.detach(l)?,
        LinkId::Classic(l) => <&mut TracePoint>::try_from(prog)?.detach(l)?,
        LinkId::FEntry(l) => <&mut FEntry>::try_from(prog)?.detach(l)?,
        LinkId::FExit(l) => <&mut FExit>::try_from(prog)?.detach(l)?,
    }
    Ok(())
}

/// What the kernel counts for one attached program.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    pub event: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    /// Runs the kernel skipped because a BPF program was already running on that CPU.
    pub recursion_misses: u64,
}

/// Adds the per-CPU copies of `key`'s slot to `c`: those that are `key`'s and have polled.
/// A copy naming another instance is a reused slot's stale copy on a CPU that has not
/// polled the new instance yet; one naming none was zeroed when the slot was freed.
fn add_napi_copies(c: &mut Counters, key: &NapiKey, values: &[NapiStat]) {
    for (cpu, v) in values.iter().enumerate() {
        if v.is(key) && (v.polls != 0 || v.untimed_polls != 0) {
            c.napi.insert((*key, cpu as u32), *v);
        }
    }
}

/// Pushes every slot of `NAPI_STATS` on the free stack, the highest first, so the programs
/// take the lowest.
fn free_slots(ebpf: &mut Ebpf, n: u32) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Map {
        map: "NAPI_FREE",
        source,
    };
    let map = ebpf.map_mut("NAPI_FREE").ok_or_else(|| {
        err(aya::maps::MapError::InvalidName {
            name: "NAPI_FREE".into(),
        })
    })?;
    let mut free: Stack<&mut MapData, u32> = Stack::try_from(map).map_err(err)?;
    for slot in (0..n).rev() {
        free.push(slot, 0).map_err(err)?;
    }
    Ok(())
}

/// Every entry of a per-CPU array of `len` entries with BPF_MAP_LOOKUP_BATCH (5.6+): entry
/// `i`'s value on CPU `c` at `i * ncpus + c`. `None` when the kernel refuses (no batch
/// operations); the caller then looks entries up one by one. `V` must be 8-byte sized, as
/// the kernel lays per-CPU values out in 8-byte steps.
fn lookup_batch<V: aya::Pod + Default>(fd: i32, len: u32, ncpus: usize) -> Option<Vec<V>> {
    use aya_obj::generated::{bpf_attr, bpf_cmd};
    if !std::mem::size_of::<V>().is_multiple_of(8) {
        return None;
    }
    let mut keys = vec![0u32; len as usize];
    let mut values = vec![V::default(); len as usize * ncpus];
    let mut out_batch = 0u32;
    let mut done = 0u32;
    while done < len {
        // SAFETY: all zeroes is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.batch.in_batch = if done == 0 {
            0
        } else {
            &out_batch as *const u32 as u64
        };
        attr.batch.out_batch = &mut out_batch as *mut u32 as u64;
        attr.batch.keys = keys[done as usize..].as_mut_ptr() as u64;
        attr.batch.values = values[done as usize * ncpus..].as_mut_ptr() as u64;
        attr.batch.count = len - done;
        attr.batch.map_fd = fd as u32;
        // SAFETY: the buffers hold `count` keys and `count * ncpus` values and outlive the
        // call; the kernel writes the number it filled into `count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                bpf_cmd::BPF_MAP_LOOKUP_BATCH as i32,
                &mut attr as *mut bpf_attr,
                std::mem::size_of::<bpf_attr>() as u32,
            )
        };
        // SAFETY: reading back the field the kernel wrote.
        let got = unsafe { attr.batch.count };
        let err = std::io::Error::last_os_error().raw_os_error();
        done += got;
        if rc != 0 {
            // ENOENT: the end of the array was reached.
            if err == Some(libc::ENOENT) && done == len {
                break;
            }
            return None;
        }
        if got == 0 {
            return None;
        }
    }
    // Arrays answer in index order from 0.
    keys.iter()
        .enumerate()
        .all(|(i, k)| *k == i as u32)
        .then_some(values)
}

/// `bpf_prog_info.recursion_misses` (5.12+) through BPF_OBJ_GET_INFO_BY_FD; aya does not
/// expose it.
fn recursion_misses(fd: i32) -> Option<u64> {
    use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
    // SAFETY: both are plain C structs for which all zeroes is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // The union member for this command; the kernel writes at most info_len bytes.
    attr.info.bpf_fd = fd as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut _ as u64;
    // SAFETY: a valid attr for BPF_OBJ_GET_INFO_BY_FD, pointing at `info`, which outlives it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as i32,
            &mut attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as u32,
        )
    };
    (rc == 0).then_some(info.recursion_misses)
}

const SCHED_SWITCH: &str = "sched_switch";
const SCHED_SWITCH_ID: &str = "sched:sched_switch";
/// Under both `napi_busy_loop` and `napi_busy_loop_rcu`.
/// The busy-poll loop: `__napi_busy_loop` under `napi_busy_loop` and `napi_busy_loop_rcu`
/// (6.8+); before, `napi_busy_loop` was the loop itself (Debian's 5.10 and 6.1).
const BUSY_LOOP_FNS: [&str; 2] = ["__napi_busy_loop", "napi_busy_loop"];

/// Loads the task-context programs: `sched_switch` in the cheapest type the kernel takes
/// (not attached: [`Probe::set_napi_threads`] does that while NAPI kthreads exist), and the
/// busy-poll loop's fentry/fexit, attached at once. Failing either only turns its feature off:
/// those polls stay counted, untimed.
fn load_extras(
    ebpf: &mut Ebpf,
    least: ProgramType,
    kernel_btf: Option<&Btf>,
    o: &Offsets,
    have_sched_switch: bool,
) -> (Vec<Extra>, Feature, Feature) {
    let mut extras = Vec::new();
    let threaded = load_sched_switch(ebpf, least, kernel_btf, o, have_sched_switch, &mut extras);
    let busy = load_busy_loop(ebpf, kernel_btf, &mut extras);
    (extras, threaded, busy)
}

/// `sched_switch` in the cheapest program type that loads, into `extras`; its feature.
fn load_sched_switch(
    ebpf: &mut Ebpf,
    least: ProgramType,
    kernel_btf: Option<&Btf>,
    o: &Offsets,
    have_sched_switch: bool,
    extras: &mut Vec<Extra>,
) -> Feature {
    let mut tried = Vec::new();
    'found: {
        if !have_sched_switch {
            break 'found Feature::off(
                "no sched:sched_switch tracepoint: threaded NAPI polls counted, not timed",
            );
        }
        for kind in [
            ProgramType::BtfTracePoint,
            ProgramType::RawTracePoint,
            ProgramType::TracePoint,
        ] {
            if kind < least {
                continue;
            }
            if kind != ProgramType::TracePoint && o.task_struct_pid == NO_OFFSET {
                tried.push(format!("{}: task_struct.pid not in BTF", kind.as_str()));
                continue;
            }
            let program = format!("{}{SCHED_SWITCH}", kind.prefix());
            let loaded = (|| -> anyhow::Result<()> {
                let prog = ebpf
                    .program_mut(&program)
                    .ok_or_else(|| anyhow!("program {program} missing from the object"))?;
                match kind {
                    ProgramType::BtfTracePoint => {
                        let btf = kernel_btf.ok_or_else(|| anyhow!("no kernel BTF"))?;
                        let p: &mut BtfTracePoint = prog.try_into()?;
                        p.load(SCHED_SWITCH, btf).map_err(verifier)?;
                    }
                    ProgramType::RawTracePoint => {
                        let p: &mut RawTracePoint = prog.try_into()?;
                        p.load().map_err(verifier)?;
                    }
                    ProgramType::TracePoint => {
                        let p: &mut TracePoint = prog.try_into()?;
                        p.load().map_err(verifier)?;
                    }
                }
                Ok(())
            })();
            match loaded {
                Ok(()) => {
                    extras.push(Extra {
                        program,
                        event: SCHED_SWITCH_ID.to_string(),
                        kind: ExtraKind::Event(kind),
                        link: None,
                        wanted: false,
                    });
                    break 'found Feature::on(format!(
                        "{SCHED_SWITCH_ID} ({}), attached while NAPI kthreads exist: poll time \
                         of threaded NAPI from the kthread's switch-in",
                        kind.as_str()
                    ));
                }
                Err(e) => tried.push(format!("{}: {e:#}", kind.as_str())),
            }
        }
        Feature::off(format!(
            "{SCHED_SWITCH_ID}: {}; threaded NAPI polls counted, not timed",
            tried.join("; ")
        ))
    }
}

/// fentry/fexit on the busy-poll loop, both or neither, into `extras`; their feature.
fn load_busy_loop(ebpf: &mut Ebpf, kernel_btf: Option<&Btf>, extras: &mut Vec<Extra>) -> Feature {
    match kernel_btf {
        None => Feature::off("fentry needs kernel BTF: busy polls counted, not timed"),
        Some(btf) => 'busy: {
            let Some(busy_fn) = BUSY_LOOP_FNS.into_iter().find(|f| {
                btf.id_by_type_name_kind(f, aya_obj::btf::BtfKind::Func)
                    .is_ok()
            }) else {
                break 'busy Feature::off(format!(
                    "no {} in the kernel's BTF: busy polls counted, not timed",
                    BUSY_LOOP_FNS.join(" or ")
                ));
            };
            let mut load = |program: &str, kind: ExtraKind| -> anyhow::Result<Extra> {
                let prog = ebpf
                    .program_mut(program)
                    .ok_or_else(|| anyhow!("program {program} missing from the object"))?;
                let end = if kind == ExtraKind::FEntry {
                    let p: &mut FEntry = prog.try_into()?;
                    p.load(busy_fn, btf).map_err(verifier)?;
                    "fentry"
                } else {
                    let p: &mut FExit = prog.try_into()?;
                    p.load(busy_fn, btf).map_err(verifier)?;
                    "fexit"
                };
                Ok(Extra {
                    program: program.to_string(),
                    event: format!("{end}:{busy_fn}"),
                    kind,
                    link: None,
                    wanted: true,
                })
            };
            // Both or neither: an entry without its exit would leave marks that never end.
            match (
                load("busy_loop_entry", ExtraKind::FEntry),
                load("busy_loop_exit", ExtraKind::FExit),
            ) {
                (Ok(entry), Ok(exit)) => {
                    extras.push(entry);
                    extras.push(exit);
                    Feature::on(format!(
                        "fentry/fexit {busy_fn}: busy polls timed from the loop's entry"
                    ))
                }
                (Err(e), _) | (_, Err(e)) => Feature::off(format!("fentry {busy_fn}: {e:#}")),
            }
        }
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    ev: &Event,
    kind: ProgramType,
    kernel_btf: Option<&Btf>,
    empty: Empty,
) -> anyhow::Result<Attached> {
    let clock = matches!(
        ev.name.as_str(),
        "softirq_entry" | "softirq_exit" | "napi_poll"
    );
    let prefix = match empty {
        Empty::No => kind.prefix(),
        Empty::Clock if clock => "clock_",
        Empty::Clock | Empty::Yes => "empty_",
    };
    let program = format!("{prefix}{}", ev.name);
    let prog = ebpf
        .program_mut(&program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?;
    let link = match kind {
        ProgramType::BtfTracePoint => {
            let btf = kernel_btf.ok_or_else(|| anyhow!("no kernel BTF"))?;
            let p: &mut BtfTracePoint = prog.try_into()?;
            p.load(&ev.name, btf).map_err(verifier)?;
            LinkId::Btf(p.attach()?)
        }
        ProgramType::RawTracePoint => {
            let p: &mut RawTracePoint = prog.try_into()?;
            p.load().map_err(verifier)?;
            LinkId::Raw(p.attach(&ev.name)?)
        }
        ProgramType::TracePoint => {
            let p: &mut TracePoint = prog.try_into()?;
            p.load().map_err(verifier)?;
            LinkId::Classic(p.attach(ev.category, &ev.name)?)
        }
    };
    Ok(Attached {
        program,
        link: Some(link),
        event: ev.clone(),
        kind,
    })
}

/// Which programs [`attach_one`] takes: the real ones, or a benchmark floor's.
#[derive(Clone, Copy)]
enum Empty {
    No,
    Yes,
    /// Empty but for one clock read at each boundary of a NET_RX softirq.
    Clock,
}

/// A load error with the verifier's last words, not its whole log.
fn verifier(e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            if tail.iter().all(|l| l.trim().is_empty()) {
                // Refused before the verifier ran (EPERM from lockdown or an LSM, ...).
                return anyhow!("{io_error}");
            }
            anyhow!(
                "{io_error}; verifier: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => other.into(),
    }
}

fn part_feature(
    events: &[Event],
    absent: &BTreeMap<String, String>,
    part: Part,
    what: &str,
) -> Feature {
    let ids: Vec<String> = events
        .iter()
        .filter(|e| e.part == part)
        .map(Event::id)
        .collect();
    match ids.iter().find_map(|id| absent.get(id)) {
        Some(why) => Feature::off(why.clone()),
        None => Feature::on(format!("{}: {what}", ids.join(", "))),
    }
}

/// System vectors are x86's: on by vector, off where a kernel (or architecture) lacks them.
fn sysvec_feature(events: &[Event], absent: &BTreeMap<String, String>) -> Feature {
    let have: Vec<&str> = SYSVEC_NAMES
        .iter()
        .copied()
        .filter(|name| {
            events
                .iter()
                .filter(|e| e.part == Part::SystemVector && e.name.starts_with(name))
                .all(|e| !absent.contains_key(&e.id()))
        })
        .collect();
    if have.is_empty() {
        Feature::off(
            "no irq_vectors:* tracepoints (not x86, or a kernel without them): local timer \
             and IPI time is not measured and not subtracted from softirq time",
        )
    } else {
        Feature::on(format!("irq_vectors: {}", have.join(", ")))
    }
}

// Capability numbers from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with one line naming what is missing: loading needs CAP_BPF and CAP_PERFMON (or
/// CAP_SYS_ADMIN on kernels before 5.8), and tracefs is only readable by root.
pub(crate) fn check_privileges() -> Result<(), ProbeError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = parse_cap_eff(&status);
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    missing_privileges(caps, euid).map_or(Ok(()), |msg| Err(ProbeError::Permission(msg)))
}

fn parse_cap_eff(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn missing_privileges(caps: u64, euid: u32) -> Option<String> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if missing.is_empty() && euid == 0 {
        return None;
    }
    if missing.is_empty() {
        // Capabilities suffice for BPF, but tracefs (offsets, attach ids) is root's.
        return (fs::read_dir("/sys/kernel/tracing/events").is_err()
            && fs::read_dir("/sys/kernel/debug/tracing/events").is_err())
        .then(|| "cannot read tracefs (/sys/kernel/tracing): run as root".to_string());
    }
    Some(format!(
        "measuring needs root, or the capabilities CAP_BPF and CAP_PERFMON (missing: {}); \
         run with sudo",
        missing.join(", ")
    ))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so the maps fit.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure only matters on old kernels, where
    // the map creation error that follows says so.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer_common::field;

    fn key(id: u32) -> NapiKey {
        NapiKey {
            napi: 0xffff_0000,
            napi_id: id,
            _pad: 0,
        }
    }

    fn polled(polls: u64, name: &[u8]) -> NapiStat {
        let mut v = NapiStat::EMPTY;
        v.polls = polls;
        v.work = polls * 2;
        v.dev_name[..name.len()].copy_from_slice(name);
        v
    }

    /// A slot's copies on three CPUs: this instance's, a stale one of the slot's previous
    /// instance (the same address, another `napi_id`), and one zeroed when the slot was
    /// freed. Only the first is the instance's.
    #[test]
    fn a_reused_slot_counts_only_the_copies_of_its_instance() {
        let (old, new) = (key(7), key(8));
        let mut mine = polled(5, b"veth1");
        (mine.napi, mine.napi_id) = (new.napi, new.napi_id);
        let mut stale = polled(9, b"veth0");
        (stale.napi, stale.napi_id) = (old.napi, old.napi_id);
        let mut c = Counters::default();
        add_napi_copies(&mut c, &new, &[mine, stale, NapiStat::EMPTY]);
        assert_eq!(c.napi.len(), 1, "{:?}", c.napi);
        assert_eq!(c.napi.get(&(new, 0)).map(|v| v.polls), Some(5));
    }

    /// One read of the kernel map as `prune` does it, without the map.
    fn read(seen: &mut NapiSeen, kernel: &[(NapiKey, u64)]) -> Counters {
        let mut c = Counters::default();
        for (k, n) in kernel {
            c.napi.insert((*k, 0), polled(*n, b"veth0"));
            c.pairs.insert((*k, 30), *n);
        }
        let dead = seen.idle_out(&c);
        seen.retire(&mut c, &dead);
        seen.add_retired(&mut c);
        c
    }

    /// An instance that stops polling leaves the kernel map after NAPI_PRUNE_AFTER idle
    /// reads, but its counts stay in every read until the next checkpoint: a report whose
    /// interval spans those reads still counts it. After the checkpoint it is gone.
    #[test]
    fn pruned_instances_keep_their_counts_until_the_checkpoint() {
        let mut seen = NapiSeen::default();
        let (a, b) = (key(1), key(2));
        read(&mut seen, &[(a, 5), (b, 1)]);
        for _ in 0..NAPI_PRUNE_AFTER - 1 {
            read(&mut seen, &[(a, 9), (b, 1)]);
        }
        assert_eq!(seen.pruned, 0);
        let c = read(&mut seen, &[(a, 12), (b, 1)]);
        assert_eq!(seen.pruned, 1, "b idle for {NAPI_PRUNE_AFTER} reads");
        assert_eq!(c.napi[&(b, 0)].polls, 1, "b's counts kept");
        assert_eq!(c.pairs[&(b, 30)], 1);
        // Gone from the kernel map, still in the reads.
        let c = read(&mut seen, &[(a, 13)]);
        assert_eq!(c.napi[&(b, 0)].polls, 1);
        assert_eq!(&c.napi[&(b, 0)].dev_name[..5], b"veth0");
        seen.checkpoint();
        let c = read(&mut seen, &[(a, 14)]);
        assert!(!c.napi.contains_key(&(b, 0)));
        assert!(!c.pairs.contains_key(&(b, 30)));
        assert_eq!(c.napi[&(a, 0)].polls, 14);
    }

    /// A pruned instance that polls again counts on from its kept counts: never backwards,
    /// and the base survives checkpoints while it lives.
    #[test]
    fn an_instance_polling_after_its_prune_counts_on() {
        let mut seen = NapiSeen::default();
        let a = key(1);
        for _ in 0..=NAPI_PRUNE_AFTER {
            read(&mut seen, &[(a, 4)]);
        }
        assert_eq!(seen.pruned, 1);
        // The kernel entry starts again from zero.
        let c = read(&mut seen, &[(a, 3)]);
        assert_eq!(c.napi[&(a, 0)].polls, 7);
        assert_eq!(c.napi[&(a, 0)].work, 14);
        seen.checkpoint();
        let c = read(&mut seen, &[(a, 5)]);
        assert_eq!(c.napi[&(a, 0)].polls, 9);
        assert_eq!(c.pairs[&(a, 30)], 9);
    }

    #[test]
    fn napi_map_is_sized_from_queues_and_cpus() {
        // A small VM: the floor.
        assert_eq!(napi_map_size(4, 2), NAPI_MAP_FLOOR);
        // 4 NICs x 64 rx + 64 tx queues on 128 CPUs.
        assert_eq!(napi_map_size(512, 128), 512 * NAPI_HEADROOM + 128);
        assert_eq!(napi_map_size(u32::MAX, 8), u32::MAX);
    }

    #[test]
    fn cap_eff_is_parsed() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), 0x1ff_ffff_ffff);
        assert_eq!(parse_cap_eff("garbage"), 0);
    }

    #[test]
    fn privileges_name_what_is_missing() {
        assert_eq!(missing_privileges(0x1ff_ffff_ffff, 0), None);
        let msg = missing_privileges(0, 65534).unwrap();
        assert!(
            msg.contains("CAP_BPF") && msg.contains("CAP_PERFMON"),
            "{msg}"
        );
        let only_bpf = 1u64 << CAP_BPF;
        let msg = missing_privileges(only_bpf, 1000).unwrap();
        assert!(
            !msg.contains("CAP_BPF,") && msg.contains("CAP_PERFMON"),
            "{msg}"
        );
    }

    /// Offsets as tracefs gives them on 6.1 to 6.18.
    fn current() -> Offsets {
        let mut o = Offsets {
            direct_loads: 1,
            ..Offsets::UNSET
        };
        for (slot, f) in o.record.iter_mut().zip(RECORD_FIELDS) {
            *slot = f.compiled_at;
        }
        o.record[field::SCHED_SWITCH_NEXT_PID] = 56;
        o
    }

    #[test]
    fn field_reads_say_which_fields_take_the_generic_path() {
        assert_eq!(field_reads(&current()), "direct");
        // A kernel without napi:napi_poll: absent fields are not "off layout".
        let mut no_napi = current();
        for f in [
            field::NAPI_POLL_NAPI,
            field::NAPI_POLL_DEV_NAME,
            field::NAPI_POLL_WORK,
            field::NAPI_POLL_BUDGET,
        ] {
            no_napi.record[f] = NO_OFFSET;
        }
        assert_eq!(field_reads(&no_napi), "direct");
        // Records with a 4-byte common_padding (old kernels) move every field by 4.
        let mut padded = current();
        padded.record[field::SOFTIRQ_ENTRY_VEC] = 12;
        padded.record[field::NAPI_POLL_WORK] = 24;
        assert_eq!(
            field_reads(&padded),
            "direct, except bpf_probe_read_kernel for softirq_entry.vec at 12, not 8; \
             napi_poll.work at 24, not 20"
        );
        let off = Offsets {
            direct_loads: 0,
            ..current()
        };
        assert_eq!(
            field_reads(&off),
            "bpf_probe_read_kernel (direct loads turned off)"
        );
    }
}
