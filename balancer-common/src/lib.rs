//! Types shared by the kernel programs (`balancer-ebpf`) and userspace (`balancer`).
//!
//! Every type here is `#[repr(C)]` plain data: the same bytes are written by the eBPF side and
//! read by userspace through the maps. Field order keeps 8-byte values aligned without padding
//! surprises between the two compilers.
#![no_std]

/// Number of softirq vectors the kernel defines (HI..RCU).
pub const NR_SOFTIRQS: usize = 10;
/// Softirq vector of NET_RX, where NAPI polls run.
pub const NET_RX_SOFTIRQ: u32 = 3;
/// Kernel names of the softirq vectors, indexed by vector number.
pub const SOFTIRQ_NAMES: [&str; NR_SOFTIRQS] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];
/// IFNAMSIZ: the longest device name the kernel stores, with its NUL.
pub const DEV_NAME_LEN: usize = 16;
/// Marks "no offset known" in [`Offsets`] for optional fields.
pub const NO_OFFSET: u32 = u32::MAX;

/// Where the programs find their inputs. Tracepoint field offsets come from the tracefs
/// `format` files and struct offsets from the kernel's BTF, both read at start-up: the same
/// object runs on kernels whose layouts differ.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    /// Offset in its record of each of [`RECORD_FIELDS`] (from tracefs), or [`NO_OFFSET`]
    /// where the tracepoint is absent.
    pub record: [u32; NR_RECORD_FIELDS],
    /// `irq` in struct napi_struct (kernel 6.8+), or [`NO_OFFSET`].
    pub napi_struct_irq: u32,
    /// `napi_id` in struct napi_struct, or [`NO_OFFSET`].
    pub napi_struct_napi_id: u32,
    /// `dev` (struct net_device *) in struct napi_struct, or [`NO_OFFSET`]: raw and BTF
    /// tracepoints get the instance, not the record's device name.
    pub napi_struct_dev: u32,
    /// `name` (char[IFNAMSIZ]) in struct net_device, or [`NO_OFFSET`].
    pub net_device_name: u32,
    /// Size of `IRQ_STATS` (IRQ numbers at or above it are counted in `ERR_IRQ_RANGE`).
    pub max_irqs: u32,
    /// Non-zero: a record field whose offset equals its [`RecordField::compiled_at`] is loaded
    /// straight from the record; otherwise, and always when zero, with
    /// `bpf_probe_read_kernel` at the offset above.
    pub direct_loads: u32,
    /// `pid` in struct task_struct (BTF), or [`NO_OFFSET`]: raw and BTF-typed `sched_switch`
    /// programs get the next task, not a record with its pid.
    pub task_struct_pid: u32,
    /// `nvcsw` and `nivcsw` in struct task_struct (BTF), or [`NO_OFFSET`]: a busy-poll loop
    /// whose task was switched out between two polls must not time the time away.
    pub task_struct_nvcsw: u32,
    pub task_struct_nivcsw: u32,
    /// `se.sum_exec_runtime` and `se.prev_sum_exec_runtime` in struct task_struct (BTF), or
    /// [`NO_OFFSET`]: a NAPI kthread's run as the scheduler counts it, which begins before
    /// the `sched_switch` event that starts its timing.
    pub task_struct_sum_exec: u32,
    pub task_struct_prev_sum_exec: u32,
    /// Non-zero when the kernel has no IRQ time accounting: a task's run time then
    /// includes the interrupts inside it.
    pub runtime_has_irqs: u32,
}

/// A field of a classic tracepoint's record that the programs read, declared once for the
/// loader (which looks its offset up in the tracefs `format` file) and the programs (which
/// load it).
#[derive(Clone, Copy, Debug)]
pub struct RecordField {
    pub category: &'static str,
    pub event: &'static str,
    pub field: &'static str,
    /// Bytes the program loads; the format file must say the same.
    pub size: u32,
    /// Where the field sits on the kernels balancer is tested on (6.1, 6.12, 6.18; any
    /// kernel without `common_padding` in its records), or [`NO_OFFSET`] for a field always
    /// read the generic way. The verifier lets a program load from its context only at an
    /// offset fixed in the instruction, so the programs carry a direct load at this offset
    /// and take it only when tracefs says the field is there; another layout takes the
    /// generic path, one `bpf_probe_read_kernel` per field (about 40 ns more each, see
    /// docs/benchmarks.md). It never supplies an offset.
    pub compiled_at: u32,
}

/// Indexes of [`RECORD_FIELDS`] (and of [`Offsets::record`]).
pub mod field {
    pub const HANDLER_ENTRY_IRQ: usize = 0;
    pub const HANDLER_EXIT_IRQ: usize = 1;
    pub const SOFTIRQ_RAISE_VEC: usize = 2;
    pub const SOFTIRQ_ENTRY_VEC: usize = 3;
    pub const SOFTIRQ_EXIT_VEC: usize = 4;
    /// `struct napi_struct *`.
    pub const NAPI_POLL_NAPI: usize = 5;
    /// `__data_loc char[]`: offset and length of the name inside the record.
    pub const NAPI_POLL_DEV_NAME: usize = 6;
    pub const NAPI_POLL_WORK: usize = 7;
    pub const NAPI_POLL_BUDGET: usize = 8;
    pub const SCHED_SWITCH_NEXT_PID: usize = 9;
    /// `long`: the outgoing task's state as the event reports it.
    pub const SCHED_SWITCH_PREV_STATE: usize = 10;
}

pub const NR_RECORD_FIELDS: usize = 11;

const fn record_field(
    category: &'static str,
    event: &'static str,
    field: &'static str,
    size: u32,
    compiled_at: u32,
) -> RecordField {
    RecordField {
        category,
        event,
        field,
        size,
        compiled_at,
    }
}

/// Every record field the classic programs read, in [`field`] order.
pub const RECORD_FIELDS: [RecordField; NR_RECORD_FIELDS] = [
    record_field("irq", "irq_handler_entry", "irq", 4, 8),
    record_field("irq", "irq_handler_exit", "irq", 4, 8),
    record_field("irq", "softirq_raise", "vec", 4, 8),
    record_field("irq", "softirq_entry", "vec", 4, 8),
    record_field("irq", "softirq_exit", "vec", 4, 8),
    record_field("napi", "napi_poll", "napi", 8, 8),
    record_field("napi", "napi_poll", "dev_name", 4, 16),
    record_field("napi", "napi_poll", "work", 4, 20),
    record_field("napi", "napi_poll", "budget", 4, 24),
    record_field("sched", "sched_switch", "next_pid", 4, NO_OFFSET),
    record_field("sched", "sched_switch", "prev_state", 8, NO_OFFSET),
];

impl Offsets {
    /// Placeholder compiled into the object; the loader always overrides it.
    pub const UNSET: Offsets = Offsets {
        record: [NO_OFFSET; NR_RECORD_FIELDS],
        napi_struct_irq: NO_OFFSET,
        napi_struct_napi_id: NO_OFFSET,
        napi_struct_dev: NO_OFFSET,
        net_device_name: NO_OFFSET,
        max_irqs: 0,
        direct_loads: 0,
        task_struct_pid: NO_OFFSET,
        task_struct_nvcsw: NO_OFFSET,
        task_struct_nivcsw: NO_OFFSET,
        task_struct_sum_exec: NO_OFFSET,
        task_struct_prev_sum_exec: NO_OFFSET,
        runtime_has_irqs: 0,
    };
}

/// Per (IRQ, CPU): handler invocations and nanoseconds in the handler.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqStat {
    pub runs: u64,
    pub ns: u64,
}

/// Per (softirq vector, CPU). `ns` excludes hardirq time that interrupted the softirq.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SoftirqStat {
    pub raises: u64,
    pub runs: u64,
    pub ns: u64,
}

/// Per (NAPI instance, CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NapiStat {
    /// Polls inside a NET_RX softirq, whose time is measured.
    pub polls: u64,
    /// Packets the polls processed (`work`).
    pub work: u64,
    /// Polls that used their whole budget: the queue had more than one poll could take.
    pub budget_exhausted: u64,
    /// Nanoseconds in measured polls, hardirq time inside them excluded.
    pub ns: u64,
    /// The part of `work` and `ns` from polls that were the first of their NET_RX softirq:
    /// a round frees the skbs other CPUs handed back before its first poll
    /// (`skb_defer_free_flush`), and no event splits that from the poll, so userspace
    /// estimates it from these (`attribution::first_poll_spread`).
    pub first_work: u64,
    pub first_ns: u64,
    /// Polls outside NET_RX softirq (threaded NAPI, busy polling), timed or not; those timed
    /// are also counted in `threaded_*` or `busy_*`.
    pub untimed_polls: u64,
    /// Packets of the polls outside NET_RX.
    pub untimed_work: u64,
    /// `napi_struct.irq` as read on first sight; -1 where the kernel lacks the field.
    pub irq: i32,
    /// `napi_struct.napi_id` as read on first sight; 0 where unknown.
    pub napi_id: u32,
    /// `dev_name` of the poll event, NUL-padded; "(no_device)" for the backlog NAPI.
    pub dev_name: [u8; DEV_NAME_LEN],
    /// Polls in a NAPI kthread (threaded NAPI) that were timed: from the later of the
    /// kthread's switch-in and its previous poll, hardirq and softirq time inside excluded.
    pub threaded_polls: u64,
    pub threaded_work: u64,
    pub threaded_ns: u64,
    /// Busy polls (process context, inside `__napi_busy_loop`) that were timed: from the
    /// loop's entry or the task's previous poll in it, hardirq and softirq time excluded.
    pub busy_polls: u64,
    pub busy_work: u64,
    pub busy_ns: u64,
    /// The instance's `struct napi_struct *`: with `napi_id`, whose counts a slot of
    /// `NAPI_STATS` holds on this CPU (a slot freed and given to another instance keeps a
    /// stale copy on a CPU until that CPU polls the new one).
    pub napi: u64,
}

impl NapiStat {
    /// No polls yet, no identity read.
    pub const EMPTY: NapiStat = NapiStat {
        polls: 0,
        work: 0,
        budget_exhausted: 0,
        ns: 0,
        first_work: 0,
        first_ns: 0,
        untimed_polls: 0,
        untimed_work: 0,
        irq: -1,
        napi_id: 0,
        dev_name: [0; DEV_NAME_LEN],
        threaded_polls: 0,
        threaded_work: 0,
        threaded_ns: 0,
        busy_polls: 0,
        busy_work: 0,
        busy_ns: 0,
        napi: 0,
    };

    /// Whether this slot's copy belongs to instance `key`.
    #[inline(always)]
    pub fn is(&self, key: &NapiKey) -> bool {
        self.napi == key.napi && self.napi_id == key.napi_id
    }
}

impl Default for NapiStat {
    fn default() -> NapiStat {
        NapiStat::EMPTY
    }
}

/// Key of `NAPI_SLOTS`: the `struct napi_struct *` of the poll event and the instance's
/// `napi_id` (0 where BTF is missing). A freed instance's address is often reused by the next
/// one; its new `napi_id` makes it a new key, so it gets its own identity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct NapiKey {
    pub napi: u64,
    pub napi_id: u32,
    #[cfg_attr(feature = "user", serde(skip))]
    pub _pad: u32,
}

impl NapiKey {
    pub const fn new(napi: u64, napi_id: u32) -> NapiKey {
        NapiKey {
            napi,
            napi_id,
            _pad: 0,
        }
    }
}

/// x86 system vectors, which never pass through `irq_handler_entry`: each has its own
/// `irq_vectors:<name>_entry/_exit` tracepoint pair. Indexed in `SYSVEC_STATS`.
pub const SYSVEC_NAMES: [&str; NR_SYSVECS] = [
    "local_timer",
    "reschedule",
    "call_function",
    "call_function_single",
    "irq_work",
    "x86_platform_ipi",
    "thermal_apic",
    "error_apic",
    "spurious_apic",
];
pub const NR_SYSVECS: usize = 9;

/// Key of the co-occurrence map: a NAPI instance polled in a NET_RX softirq that `irq`'s
/// handler raised on the same CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    pub napi: u64,
    pub irq: u32,
    /// The instance's `napi_id`, as in [`NapiKey`].
    pub napi_id: u32,
}

/// What happens on one CPU right now, kept by the programs between entry and exit events
/// (`CPU_STATE`). Timestamps of 0 mean "not inside". Userspace only zeroes it, when it
/// attaches the programs again after a pause.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    /// Running total of hardirq nanoseconds (handlers and system vectors) on this CPU.
    pub hardirq_ns: u64,
    pub irq_start: u64,
    pub sysvec_start: u64,
    pub softirq_start: u64,
    /// `hardirq_ns` when the current softirq began.
    pub softirq_hardirq_base: u64,
    /// Where the time of the next poll in this NET_RX softirq starts.
    pub poll_mark: u64,
    pub poll_hardirq_base: u64,
    pub irq: u32,
    pub sysvec: u32,
    pub softirq_vec: u32,
    /// IRQ (+1) whose handler raised NET_RX here, until a NET_RX softirq takes it; a second
    /// IRQ raising before the softirq runs is `raiser_irq2`, a third marks the softirq
    /// `u32::MAX` (ambiguous: its polls pair with none).
    pub raiser_irq: u32,
    /// IRQ (+1) that raised the NET_RX softirq now running, or 0; `netrx_cause2` the second.
    pub netrx_cause: u32,
    pub ncounted: u32,
    /// NAPI instances already counted for `netrx_cause` in this softirq: a pair counts
    /// softirqs, not polls, so an instance repolled within one softirq counts once.
    pub counted: [u64; COUNTED_SLOTS],
    /// Where the time of the next poll by task `task_pid` starts: the NAPI kthread's
    /// switch-in, a busy-poll loop's entry, or that task's previous poll; 0 for none.
    pub task_mark: u64,
    /// `hardirq_ns` and the CPU's softirq total at `task_mark`: softirqs run inside the
    /// task (at `local_bh_enable`) are their own time, not the poll's.
    pub task_hardirq_base: u64,
    pub task_softirq_base: u64,
    /// The busy-polling task's context switches (`nvcsw + nivcsw`) at `task_mark`.
    pub task_switches: u64,
    pub task_pid: u32,
    /// [`TASK_THREADED`], [`TASK_BUSY`] or 0.
    pub task_kind: u32,
    /// A kthread's mark: the generation of its `NAPI_THREADS` entry when it was made. The
    /// entry's generation changes each time userspace attaches `sched_switch`, so a mark
    /// from before a detach times nothing.
    pub task_gen: u32,
    /// `napi_id` of `task_napi`.
    pub task_napi_id: u32,
    /// The instance the marked NAPI kthread last polled here, 0 for none: a kthread serves
    /// one instance, so its time from that poll to its switch-out (GRO flush, freeing, going
    /// to sleep) is that instance's too.
    pub task_napi: u64,
    /// See `raiser_irq` and `netrx_cause`.
    pub raiser_irq2: u32,
    pub netrx_cause2: u32,
    /// Slot (+1, 0 for none) in `NAPI_STATS` of the instance last polled here: the next poll
    /// of the same instance, the common case, needs no hash lookup.
    pub napi_slot: u32,
    /// Slot (+1) of `task_napi`.
    pub task_napi_slot: u32,
    /// The marked NAPI kthread's switch-in, and `hardirq_ns` and the softirq total then.
    pub task_in: u64,
    pub task_in_hardirq: u64,
    pub task_in_softirq: u64,
}

/// `CpuState::task_kind`: a NAPI kthread was switched in.
pub const TASK_THREADED: u32 = 1;
/// `CpuState::task_kind`: a task entered a busy-poll loop.
pub const TASK_BUSY: u32 = 2;
/// Size of the `NAPI_THREADS` map (pids of NAPI kthreads, filled by userspace).
pub const MAX_NAPI_THREADS: u32 = 4096;

/// Instances [`CpuState`] remembers per NET_RX softirq.
pub const COUNTED_SLOTS: usize = 4;

/// Per-CPU health counters of the programs, indexed by these constants in the `ERRORS` map.
/// Poll events whose instance found no free slot in `NAPI_STATS`.
pub const ERR_NAPI_FULL: u32 = 0;
/// A `bpf_probe_read_kernel` that failed.
pub const ERR_READ: u32 = 1;
/// Handler runs of an IRQ number at or above `Offsets::max_irqs`.
pub const ERR_IRQ_RANGE: u32 = 2;
/// Co-occurrence pairs that found no room in `NAPI_IRQ_PAIRS`.
pub const ERR_PAIRS_FULL: u32 = 3;
/// NET_RX softirqs raised by more than two IRQs: their polls pair with none of them.
pub const ERR_AMBIGUOUS_RAISE: u32 = 4;
/// Handler events that did not pair: an entry while another handler's was open on the CPU,
/// or an exit without its entry. Each loses one handler run from the coverage; attaching or
/// detaching the programs while a handler runs makes one too.
pub const ERR_UNPAIRED_HANDLER: u32 = 5;
pub const NR_ERRORS: u32 = 6;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C) structs of integers without padding holes that
    // userspace could read uninitialised; the kernel zero-fills map values.
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for IrqStat {}
    unsafe impl aya::Pod for SoftirqStat {}
    unsafe impl aya::Pod for NapiStat {}
    unsafe impl aya::Pod for PairKey {}
    unsafe impl aya::Pod for NapiKey {}
    unsafe impl aya::Pod for CpuState {}
}
