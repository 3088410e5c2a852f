//! Kernel programs of balancer.
//!
//! Per-CPU counters only: handler time per IRQ, time per x86 system vector, run time per
//! softirq vector, poll time per NAPI instance, and which IRQ's handler raised the NET_RX
//! softirq in which a NAPI instance was polled. Nothing is sent per event: userspace reads the
//! maps once per interval. One per-CPU state slot carries the timestamps between entry and exit
//! events; hardirqs do not nest and softirqs do not nest on one CPU, so one slot is enough.
//!
//! Hardirq time (device handlers and system vectors) that interrupts a softirq or a poll is
//! subtracted from it, so a CPU's times add up without counting anything twice.
//!
//! Polls outside a NET_RX softirq run in a task: a NAPI kthread (threaded NAPI) or a task in a
//! busy-poll loop. Their time runs from the task's mark on the CPU (the kthread's switch-in
//! from `sched_switch`, attached only while userspace lists NAPI kthreads; the loop's entry
//! from an fentry program) or the task's previous poll, less the hardirqs and softirqs that
//! ran in between (softirqs run inside the task at `local_bh_enable` and are counted as
//! softirq time already). A kthread's run also gets what the scheduler charged it before
//! its switch-in event (the pick and the switch), so its polls add up to its run time.
//!
//! Every event has three programs with one body: a BTF-typed tracepoint (`btf_*`), a raw
//! tracepoint (`raw_*`) and a classic one (`tp_*`). The loader attaches the cheapest this
//! kernel takes. BTF-typed and raw programs get the tracepoint's arguments, not a record built
//! for them, and the kernel guards each of them on its own against recursion; classic programs
//! share one per-CPU guard, so an IRQ that arrives while any of them runs is not seen.
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes,
    },
    macros::{btf_tracepoint, fentry, fexit, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, Stack},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, RawTracePointContext, TracePointContext,
    },
};
use balancer_common::{
    COUNTED_SLOTS, CpuState, DEV_NAME_LEN, ERR_AMBIGUOUS_RAISE, ERR_IRQ_RANGE, ERR_NAPI_FULL,
    ERR_PAIRS_FULL, ERR_READ, ERR_UNPAIRED_HANDLER, IrqStat, MAX_NAPI_THREADS, NET_RX_SOFTIRQ,
    NO_OFFSET, NR_ERRORS, NR_SOFTIRQS, NR_SYSVECS, NapiKey, NapiStat, Offsets, PairKey,
    RECORD_FIELDS, SoftirqStat, TASK_BUSY, TASK_THREADED, field,
};

/// Overridden by the loader with offsets read from tracefs and BTF.
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets::UNSET;

/// Indexed by IRQ number: IRQ numbers are dense, an array needs no hashing. Resized by the
/// loader to the machine's IRQ space.
#[map]
static IRQ_STATS: PerCpuArray<IrqStat> = PerCpuArray::with_max_entries(4096, 0);
#[map]
static SYSVEC_STATS: PerCpuArray<IrqStat> = PerCpuArray::with_max_entries(NR_SYSVECS as u32, 0);
#[map]
static SOFTIRQ_STATS: PerCpuArray<SoftirqStat> =
    PerCpuArray::with_max_entries(NR_SOFTIRQS as u32, 0);
/// NAPI instance -> its slot in `NAPI_STATS`, the same on every CPU. Resized by the loader,
/// as the two below, to the machine's queues x headroom.
#[map]
static NAPI_SLOTS: HashMap<NapiKey, u32> = HashMap::with_max_entries(1024, 0);
/// Per-CPU counts of each slot's instance. An array, not a hash keyed by instance: a poll of
/// the instance its CPU polled last (`CpuState::napi_slot`) needs no hash lookup, which was
/// a sixth of the probes' cost per softirq (docs/benchmarks.md).
#[map]
static NAPI_STATS: PerCpuArray<NapiStat> = PerCpuArray::with_max_entries(1024, 0);
/// Free slots of `NAPI_STATS`: all of them pushed by the loader, a pruned instance's given
/// back by userspace after it zeroed its counts. A stack, so the slots in use stay low and
/// userspace reads one short prefix of the array.
#[map]
static NAPI_FREE: Stack<u32> = Stack::with_max_entries(1024, 0);
#[map]
static NAPI_IRQ_PAIRS: PerCpuHashMap<PairKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);
#[map]
static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_ERRORS, 0);
#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);
/// 1 while the daemon is between windows. The system-vector programs stay attached then:
/// toggling a tracepoint rewrites kernel text (a static key and a static call, each a round
/// of synchronising IPIs to every CPU), and 18 of them cost more to toggle each interval
/// than their events (a few hundred a second per CPU) cost to ignore.
#[map]
static PAUSED: Array<u32> = Array::with_max_entries(1, 0);
/// Pids of NAPI kthreads (`napi/<dev>-<id>`), filled by userspace, to the generation of
/// the `sched_switch` attach they belong to (`CpuState::task_gen`).
#[map]
static NAPI_THREADS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_NAPI_THREADS, 0);

/// IRQ slots in [`CpuState`] hold the IRQ number plus one, so the zeroed initial state
/// means "none" rather than IRQ 0.
const NO_IRQ: u32 = 0;
/// `CpuState::napi_slot` and `task_napi_slot` hold the slot plus one, 0 for none.
const NO_SLOT: u32 = 0;
/// `raiser_irq` when more than one IRQ raised NET_RX before the softirq ran.
const AMBIGUOUS: u32 = u32::MAX;
const BPF_NOEXIST: u64 = 1;

#[inline(always)]
fn off(field: &u32) -> u32 {
    // Volatile: the value is patched at load time, the compiler must not fold the placeholder.
    unsafe { read_volatile(field) }
}

/// `record!(ctx, T, FIELD)`: one of [`RECORD_FIELDS`] of the record, by its [`field`] index.
macro_rules! record {
    ($ctx:expr, $t:ty, $f:ident) => {
        read_field::<$t, { RECORD_FIELDS[field::$f].compiled_at }>(
            $ctx,
            off(&OFFSETS.record[field::$f]),
        )
    };
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn count_error(which: u32) {
    if let Some(e) = ERRORS.get_ptr_mut(which) {
        unsafe { *e += 1 };
    }
}

#[inline(always)]
fn state() -> Option<&'static mut CpuState> {
    CPU_STATE.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

// ---- The bodies, shared by the three program types. ----

#[inline(always)]
fn on_handler_entry(irq: u32) {
    if let Some(st) = state() {
        if st.irq_start != 0 {
            count_error(ERR_UNPAIRED_HANDLER);
        }
        st.irq = irq;
        st.irq_start = now();
    }
}

#[inline(always)]
fn on_handler_exit(irq: u32) {
    let Some(st) = state() else { return };
    // An exit without its entry (programs attached mid-handler) is skipped.
    if st.irq_start == 0 || st.irq != irq {
        st.irq_start = 0;
        count_error(ERR_UNPAIRED_HANDLER);
        return;
    }
    let ns = now().wrapping_sub(st.irq_start);
    st.irq_start = 0;
    st.hardirq_ns += ns;
    if irq >= off(&OFFSETS.max_irqs) {
        count_error(ERR_IRQ_RANGE);
        return;
    }
    if let Some(s) = IRQ_STATS.get_ptr_mut(irq) {
        unsafe {
            (*s).runs += 1;
            (*s).ns += ns;
        }
    }
}

#[inline(always)]
fn on_sysvec_entry(which: u32) {
    // An exit pairs only with an entry seen: nothing is counted while paused.
    if PAUSED.get(0).is_some_and(|p| *p != 0) {
        return;
    }
    if let Some(st) = state() {
        st.sysvec = which;
        st.sysvec_start = now();
    }
}

#[inline(always)]
fn on_sysvec_exit(which: u32) {
    let Some(st) = state() else { return };
    if st.sysvec_start == 0 || st.sysvec != which {
        st.sysvec_start = 0;
        return;
    }
    let ns = now().wrapping_sub(st.sysvec_start);
    st.sysvec_start = 0;
    st.hardirq_ns += ns;
    if let Some(s) = SYSVEC_STATS.get_ptr_mut(which) {
        unsafe {
            (*s).runs += 1;
            (*s).ns += ns;
        }
    }
}

#[inline(always)]
fn on_softirq_raise(vec: u32) {
    if vec >= NR_SOFTIRQS as u32 {
        return;
    }
    if let Some(s) = SOFTIRQ_STATS.get_ptr_mut(vec) {
        unsafe { (*s).raises += 1 };
    }
    if vec == NET_RX_SOFTIRQ
        && let Some(st) = state()
        && st.irq_start != 0
    {
        let me = st.irq.wrapping_add(1);
        // Every raiser is kept (two of them): an instance polled in the softirq pairs with
        // both, and the link's rules (the IRQ's device must be the instance's, the dominant
        // pair wins, ties say nothing) sort them out. A third raiser: ambiguous.
        if st.raiser_irq == NO_IRQ || st.raiser_irq == me {
            st.raiser_irq = me;
        } else if st.raiser_irq != AMBIGUOUS && (st.raiser_irq2 == NO_IRQ || st.raiser_irq2 == me) {
            st.raiser_irq2 = me;
        } else {
            st.raiser_irq = AMBIGUOUS;
        }
    }
}

#[inline(always)]
fn on_softirq_entry(vec: u32) {
    let Some(st) = state() else { return };
    let t = now();
    st.softirq_vec = vec;
    st.softirq_start = t;
    st.softirq_hardirq_base = st.hardirq_ns;
    if vec == NET_RX_SOFTIRQ {
        (st.netrx_cause, st.netrx_cause2) = match st.raiser_irq {
            AMBIGUOUS => {
                count_error(ERR_AMBIGUOUS_RAISE);
                (NO_IRQ, NO_IRQ)
            }
            r => (r, st.raiser_irq2),
        };
        st.raiser_irq = NO_IRQ;
        st.raiser_irq2 = NO_IRQ;
        st.ncounted = 0;
        st.poll_mark = t;
        st.poll_hardirq_base = st.hardirq_ns;
    }
}

#[inline(always)]
fn on_softirq_exit(vec: u32) {
    let Some(st) = state() else { return };
    let start = st.softirq_start;
    st.softirq_start = 0;
    st.netrx_cause = NO_IRQ;
    st.netrx_cause2 = NO_IRQ;
    if start == 0 || st.softirq_vec != vec || vec >= NR_SOFTIRQS as u32 {
        return;
    }
    let wall = now().wrapping_sub(start);
    let ns = wall.saturating_sub(st.hardirq_ns.wrapping_sub(st.softirq_hardirq_base));
    if let Some(s) = SOFTIRQ_STATS.get_ptr_mut(vec) {
        unsafe {
            (*s).runs += 1;
            (*s).ns += ns;
        }
    }
}

/// Where a poll event's device name comes from: the classic record carries it, the raw and
/// BTF-typed programs follow `napi->dev->name` at offsets from BTF.
enum DevName<'a> {
    Record(&'a TracePointContext),
    Struct,
}

#[inline(always)]
fn on_napi_poll(napi: u64, napi_id: u32, work: i32, budget: i32, dev: DevName) {
    let work = if work > 0 { work as u64 } else { 0 };
    let exhausted = (budget > 0 && work >= budget as u64) as u64;
    let nkey = NapiKey {
        napi,
        napi_id,
        _pad: 0,
    };

    let Some(st) = state() else { return };
    // Polls of one NET_RX softirq run back to back: each one's time runs from the previous
    // poll event (or the softirq's entry) to its own event.
    let timed = st.softirq_start != 0 && st.softirq_vec == NET_RX_SOFTIRQ;
    let mut ns = 0;
    // The round's first poll: its time since the softirq's entry also holds the round's
    // preamble (the deferred skb frees), which userspace spreads over the CPU's instances.
    let first = timed && st.poll_mark == st.softirq_start;
    if timed {
        let t = now();
        let hard = st.hardirq_ns.wrapping_sub(st.poll_hardirq_base);
        ns = t.wrapping_sub(st.poll_mark).saturating_sub(hard);
        st.poll_mark = t;
        st.poll_hardirq_base = st.hardirq_ns;
    }
    // Outside NET_RX: a NAPI kthread's or a busy-polling task's poll, timed when its task
    // has a start mark on this CPU.
    let task = if timed { 0 } else { task_poll(st, &mut ns) };
    if task == TASK_THREADED {
        st.task_napi = napi;
        st.task_napi_id = nkey.napi_id;
    }
    let (cause, cause2) = if timed && st.netrx_cause != NO_IRQ && first_in_softirq(st, napi) {
        (st.netrx_cause, st.netrx_cause2)
    } else {
        (NO_IRQ, NO_IRQ)
    };

    match napi_stat(st, &nkey, dev) {
        Some((s, slot)) => {
            add_poll(s, timed, first, task, work, exhausted, ns);
            if task == TASK_THREADED {
                st.task_napi_slot = slot + 1;
            }
        }
        None => count_error(ERR_NAPI_FULL),
    }

    count_pair(napi, nkey.napi_id, cause);
    count_pair(napi, nkey.napi_id, cause2);
}

/// The counts of instance `key` on this CPU and their slot: the slot this CPU polled last
/// when it is still that instance's (no hash lookup), else the instance's slot, found or
/// taken from the free ones. A slot's copy on this CPU that holds another instance (a slot
/// freed and reused) or none starts again with this one's identity.
#[inline(always)]
fn napi_stat(
    st: &mut CpuState,
    key: &NapiKey,
    dev: DevName,
) -> Option<(&'static mut NapiStat, u32)> {
    let last = st.napi_slot;
    if last != NO_SLOT
        && let Some(p) = NAPI_STATS.get_ptr_mut(last - 1)
    {
        // SAFETY: a per-CPU array value of this CPU, valid for the program's run.
        let s = unsafe { &mut *p };
        if s.is(key) {
            return Some((s, last - 1));
        }
    }
    let slot = match unsafe { NAPI_SLOTS.get(key) } {
        Some(slot) => *slot,
        None => new_slot(key)?,
    };
    // SAFETY: as above.
    let s = unsafe { &mut *NAPI_STATS.get_ptr_mut(slot)? };
    if !s.is(key) {
        *s = NapiStat::EMPTY;
        s.napi = key.napi;
        read_identity(&OFFSETS, key.napi, key.napi_id, dev, s);
    }
    st.napi_slot = slot + 1;
    Some((s, slot))
}

/// A free slot for instance `key`, recorded in `NAPI_SLOTS`; `None` when none is free.
#[inline(always)]
fn new_slot(key: &NapiKey) -> Option<u32> {
    let slot = NAPI_FREE.pop().ok().flatten()?;
    if NAPI_SLOTS.insert(key, slot, BPF_NOEXIST).is_ok() {
        return Some(slot);
    }
    // Another CPU recorded the instance first: its slot is the one.
    let _ = NAPI_FREE.push(slot, 0);
    unsafe { NAPI_SLOTS.get(key) }.copied()
}

/// One more NET_RX softirq that IRQ `cause - 1` raised and in which the instance polled.
#[inline(always)]
fn count_pair(napi: u64, napi_id: u32, cause: u32) {
    if cause == NO_IRQ {
        return;
    }
    let key = PairKey {
        napi,
        irq: cause - 1,
        napi_id,
    };
    if let Some(c) = NAPI_IRQ_PAIRS.get_ptr_mut(key) {
        unsafe { *c += 1 };
    } else if NAPI_IRQ_PAIRS.insert(key, 1, BPF_NOEXIST).is_err() {
        match NAPI_IRQ_PAIRS.get_ptr_mut(key) {
            Some(c) => unsafe { *c += 1 },
            None => count_error(ERR_PAIRS_FULL),
        }
    }
}

/// Whether `napi` is polled for the first time in the current NET_RX softirq; remembers it.
/// Past [`COUNTED_SLOTS`] instances in one softirq every poll counts (rare: a softirq
/// polls that many instances only on a busy CPU, where the link is learned elsewhere).
#[inline(always)]
fn first_in_softirq(st: &mut CpuState, napi: u64) -> bool {
    let n = st.ncounted as usize;
    for i in 0..COUNTED_SLOTS {
        if i < n && st.counted[i] == napi {
            return false;
        }
    }
    if n < COUNTED_SLOTS {
        st.counted[n] = napi;
        st.ncounted += 1;
    }
    true
}

#[inline(always)]
fn add_poll(
    s: &mut NapiStat,
    timed: bool,
    first: bool,
    task: u32,
    work: u64,
    exhausted: u64,
    ns: u64,
) {
    if timed {
        s.polls += 1;
        s.work += work;
        s.ns += ns;
        if first {
            s.first_work += work;
            s.first_ns += ns;
        }
    } else {
        s.untimed_polls += 1;
        s.untimed_work += work;
        if task == TASK_THREADED {
            s.threaded_polls += 1;
            s.threaded_work += work;
            s.threaded_ns += ns;
        } else if task == TASK_BUSY {
            s.busy_polls += 1;
            s.busy_work += work;
            s.busy_ns += ns;
        }
    }
    s.budget_exhausted += exhausted;
}

// ---- Polls in task context: threaded NAPI and busy polling. ----

/// Softirq nanoseconds run on this CPU so far (all vectors, hardirq time inside excluded).
/// Read only where a task's poll is timed, never in the softirq path.
#[inline(always)]
fn softirq_total() -> u64 {
    let mut t = 0u64;
    for vec in 0..NR_SOFTIRQS as u32 {
        if let Some(s) = SOFTIRQ_STATS.get_ptr(vec) {
            t += unsafe { (*s).ns };
        }
    }
    t
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Context switches of the current task, or 0 where BTF lacks the fields.
#[inline(always)]
fn current_switches() -> u64 {
    let o = &OFFSETS;
    let task = unsafe { bpf_get_current_task() };
    let v = read_struct::<u64>(task, off(&o.task_struct_nvcsw)).unwrap_or(0);
    let iv = read_struct::<u64>(task, off(&o.task_struct_nivcsw)).unwrap_or(0);
    v.wrapping_add(iv)
}

/// Starts timing polls of `pid` on this CPU now.
#[inline(always)]
fn task_mark(st: &mut CpuState, pid: u32, kind: u32, switches: u64) {
    st.task_pid = pid;
    st.task_gen = 0;
    st.task_napi = 0;
    st.task_napi_slot = NO_SLOT;
    st.task_in = 0;
    st.task_kind = kind;
    st.task_mark = now();
    st.task_hardirq_base = st.hardirq_ns;
    st.task_softirq_base = softirq_total();
    st.task_switches = switches;
}

/// A poll outside NET_RX by the current task: when that task has a mark on this CPU, the
/// poll's time (into `ns`) runs from the mark to now less the hardirqs and softirqs that ran
/// in between, and the mark moves here. Returns the kind of the task, or 0 when untimed.
#[inline(always)]
fn task_poll(st: &mut CpuState, ns: &mut u64) -> u32 {
    if st.task_mark == 0 || st.task_pid != current_tid() {
        return 0;
    }
    let kind = st.task_kind;
    if kind == TASK_THREADED {
        // A kthread no longer listed, or a mark from before `sched_switch` was detached.
        let listed = unsafe { NAPI_THREADS.get(st.task_pid) }.copied();
        if listed != Some(st.task_gen) {
            st.task_mark = 0;
            st.task_kind = 0;
            st.task_pid = 0;
            return 0;
        }
    }
    if kind == TASK_BUSY {
        // Switched out since the mark (a loop that rescheduled): the time away is not the
        // poll's. This poll stays untimed; the next one in the loop is timed from here.
        let sw = current_switches();
        if sw != st.task_switches {
            task_mark(st, st.task_pid, kind, sw);
            return 0;
        }
    }
    let t = now();
    let soft = softirq_total();
    let away = st
        .hardirq_ns
        .wrapping_sub(st.task_hardirq_base)
        .wrapping_add(soft.wrapping_sub(st.task_softirq_base));
    *ns = t.wrapping_sub(st.task_mark).saturating_sub(away);
    st.task_mark = t;
    st.task_hardirq_base = st.hardirq_ns;
    st.task_softirq_base = soft;
    kind
}

/// A context switch to `next_pid`: a NAPI kthread switched in gets a mark; any other task
/// ends the kthread's. `prev_blocked` says whether the outgoing task went to sleep (neither
/// preempted nor the idle task), asked only when a kthread comes in.
#[inline(always)]
fn on_sched_switch(next_pid: u32, prev_blocked: impl FnOnce() -> bool) {
    let Some(st) = state() else { return };
    // A mark is cleared at every switch away, so a kthread mark here is the outgoing task's:
    // its tail since its last poll goes to the instance it polled.
    if st.task_kind == TASK_THREADED && st.task_mark != 0 && st.task_napi != 0 {
        let mut tail = 0;
        if task_poll(st, &mut tail) == TASK_THREADED {
            tail += switch_in_cost(st);
            let key = NapiKey {
                napi: st.task_napi,
                napi_id: st.task_napi_id,
                _pad: 0,
            };
            if let Some(s) = NAPI_STATS.get_ptr_mut(st.task_napi_slot.wrapping_sub(1)) {
                // SAFETY: a per-CPU array value of this CPU, valid for the program's run.
                let s = unsafe { &mut *s };
                if s.is(&key) {
                    s.threaded_ns += tail;
                }
            }
        }
    }
    if let Some(generation) = unsafe { NAPI_THREADS.get(next_pid) }.copied() {
        task_mark(st, next_pid, TASK_THREADED, 0);
        st.task_gen = generation;
        // A switch-in that preempts a task (or the idle task) follows the kthread's wakeup,
        // and the scheduler then charges the kthread from that wakeup (the wakeup skips the
        // next rq clock update): time its waker spent, often in the interrupt handler the
        // probe books already. Only after a task that slept is the scheduler's extra the
        // pick and switch alone.
        st.task_in = if prev_blocked() { st.task_mark } else { 0 };
        st.task_in_hardirq = st.task_hardirq_base;
        st.task_in_softirq = st.task_softirq_base;
    } else if st.task_kind == TASK_THREADED {
        st.task_mark = 0;
        st.task_kind = 0;
        st.task_pid = 0;
    }
}

/// The most a kthread's switch-in may add: a few microseconds are the scheduler's pick and
/// switch; more means the run counters did not start at this run (a class that does not
/// reset `prev_sum_exec_runtime`), and nothing is added.
const MAX_SWITCH_IN_NS: u64 = 50_000;

/// At the outgoing NAPI kthread's `sched_switch`, its `task_poll` just done: what the
/// scheduler counted of this run before the switch-in event opened the probe's window (the
/// pick and the switch itself, charged to the kthread), so that its time adds up to its
/// run time. The scheduler's run is `sum_exec_runtime - prev_sum_exec_runtime` (reset when
/// the task is picked), plus the interrupts inside it where IRQ time accounting takes them
/// out; the window runs from the switch-in to now.
#[inline(always)]
fn switch_in_cost(st: &CpuState) -> u64 {
    let o = &OFFSETS;
    if st.task_in == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    let (Some(sum), Some(prev)) = (
        read_struct::<u64>(task, off(&o.task_struct_sum_exec)),
        read_struct::<u64>(task, off(&o.task_struct_prev_sum_exec)),
    ) else {
        return 0;
    };
    let irqs = if off(&o.runtime_has_irqs) != 0 {
        0
    } else {
        // task_poll left the bases at now.
        st.task_hardirq_base
            .wrapping_sub(st.task_in_hardirq)
            .wrapping_add(st.task_softirq_base.wrapping_sub(st.task_in_softirq))
    };
    let ran = sum.wrapping_sub(prev).wrapping_add(irqs);
    let window = st.task_mark.wrapping_sub(st.task_in);
    match ran.checked_sub(window) {
        Some(extra) if extra <= MAX_SWITCH_IN_NS => extra,
        _ => 0,
    }
}

#[inline(always)]
fn on_busy_loop_entry() {
    // Attached through the daemon's pauses (see `Probe::pause`): no mark is made then.
    if PAUSED.get(0).is_some_and(|p| *p != 0) {
        return;
    }
    let Some(st) = state() else { return };
    let pid = current_tid();
    // A NAPI kthread's polls are timed from its switch-in.
    if st.task_kind == TASK_THREADED && st.task_pid == pid {
        return;
    }
    task_mark(st, pid, TASK_BUSY, current_switches());
}

#[inline(always)]
fn on_busy_loop_exit() {
    let Some(st) = state() else { return };
    if st.task_kind == TASK_BUSY && st.task_pid == current_tid() {
        st.task_mark = 0;
        st.task_kind = 0;
        st.task_pid = 0;
    }
}

/// A field of a kernel struct at an offset from BTF.
#[inline(always)]
fn read_struct<T>(base: u64, offset: u32) -> Option<T> {
    if offset == NO_OFFSET {
        return None;
    }
    let p = (base as usize + offset as usize) as *const T;
    match unsafe { bpf_probe_read_kernel(p) } {
        Ok(v) => Some(v),
        Err(_) => {
            count_error(ERR_READ);
            None
        }
    }
}

/// Device name and the IRQ the kernel recorded in the NAPI instance: read once per instance
/// and CPU, not per poll.
#[inline(always)]
fn read_identity(o: &Offsets, napi: u64, napi_id: u32, dev: DevName, s: &mut NapiStat) {
    s.napi_id = napi_id;
    match dev {
        DevName::Record(ctx) => {
            if let Some(loc) = record!(ctx, u32, NAPI_POLL_DEV_NAME) {
                // __data_loc: low 16 bits are the offset in the record, high 16 bits the length.
                let at = (loc & 0xffff) as usize;
                let src = unsafe { (ctx.as_ptr() as *const u8).add(at) };
                if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut s.dev_name) }.is_err() {
                    count_error(ERR_READ);
                }
            }
        }
        DevName::Struct => {
            // The backlog NAPI of RPS and loopback has no device; the classic record names it
            // "(no_device)", and so do we.
            match read_struct::<u64>(napi, off(&o.napi_struct_dev)) {
                Some(0) => s.dev_name[..11].copy_from_slice(b"(no_device)"),
                Some(dev) => {
                    let name_off = off(&o.net_device_name);
                    if name_off != NO_OFFSET {
                        let src = (dev as usize + name_off as usize) as *const u8;
                        let mut buf = [0u8; DEV_NAME_LEN];
                        match unsafe { bpf_probe_read_kernel_str_bytes(src, &mut buf) } {
                            Ok(_) => s.dev_name = buf,
                            Err(_) => count_error(ERR_READ),
                        }
                    }
                }
                None => {}
            }
        }
    }
    if let Some(irq) = read_struct::<i32>(napi, off(&o.napi_struct_irq)) {
        s.irq = irq;
    }
}

// ---- Classic tracepoints: fields from the record. ----

/// Reads a tracepoint field at `offset` (from tracefs). `AT` is its
/// [`balancer_common::RecordField::compiled_at`]: when the two agree the field is loaded straight from the record, which the verifier
/// allows only at an offset fixed in the instruction; it knows `OFFSETS` (frozen read-only
/// data), so it drops whichever path this kernel does not take.
#[inline(always)]
fn read_field<T: Copy, const AT: u32>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    if offset == NO_OFFSET {
        return None;
    }
    if offset == AT && off(&OFFSETS.direct_loads) != 0 {
        return Some(unsafe { *((ctx.as_ptr() as *const u8).add(AT as usize) as *const T) });
    }
    match unsafe { ctx.read_at::<T>(offset as usize) } {
        Ok(v) => Some(v),
        Err(_) => {
            count_error(ERR_READ);
            None
        }
    }
}

#[tracepoint(category = "irq", name = "irq_handler_entry")]
pub fn tp_irq_handler_entry(ctx: TracePointContext) -> u32 {
    if let Some(irq) = record!(&ctx, u32, HANDLER_ENTRY_IRQ) {
        on_handler_entry(irq);
    }
    0
}

#[tracepoint(category = "irq", name = "irq_handler_exit")]
pub fn tp_irq_handler_exit(ctx: TracePointContext) -> u32 {
    if let Some(irq) = record!(&ctx, u32, HANDLER_EXIT_IRQ) {
        on_handler_exit(irq);
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_raise")]
pub fn tp_softirq_raise(ctx: TracePointContext) -> u32 {
    if let Some(vec) = record!(&ctx, u32, SOFTIRQ_RAISE_VEC) {
        on_softirq_raise(vec);
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_entry")]
pub fn tp_softirq_entry(ctx: TracePointContext) -> u32 {
    if let Some(vec) = record!(&ctx, u32, SOFTIRQ_ENTRY_VEC) {
        on_softirq_entry(vec);
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_exit")]
pub fn tp_softirq_exit(ctx: TracePointContext) -> u32 {
    if let Some(vec) = record!(&ctx, u32, SOFTIRQ_EXIT_VEC) {
        on_softirq_exit(vec);
    }
    0
}

#[tracepoint(category = "napi", name = "napi_poll")]
pub fn tp_napi_poll(ctx: TracePointContext) -> u32 {
    let Some(napi) = record!(&ctx, u64, NAPI_POLL_NAPI) else {
        return 0;
    };
    let work = record!(&ctx, u32, NAPI_POLL_WORK).unwrap_or(0) as i32;
    let budget = record!(&ctx, u32, NAPI_POLL_BUDGET).unwrap_or(0) as i32;
    let napi_id = read_struct::<u32>(napi, off(&OFFSETS.napi_struct_napi_id)).unwrap_or(0);
    on_napi_poll(napi, napi_id, work, budget, DevName::Record(&ctx));
    0
}

// ---- Raw and BTF-typed tracepoints: the tracepoint's arguments (TP_PROTO). ----

/// Defines the raw and the BTF-typed program of one event over the same body.
macro_rules! arg_programs {
    ($event:literal, $raw:ident, $btf:ident, |$a:ident| $body:expr) => {
        #[raw_tracepoint(tracepoint = $event)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            let $a = |n: usize| -> u64 { ctx.arg(n) };
            $body;
            0
        }

        #[btf_tracepoint(function = $event)]
        pub fn $btf(ctx: BtfTracePointContext) -> i32 {
            let $a = |n: usize| -> u64 { ctx.arg(n) };
            $body;
            0
        }
    };
}

// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...):
// attached only while NAPI_THREADS has pids.
arg_programs!("sched_switch", raw_sched_switch, btf_sched_switch, |a| {
    if let Some(pid) = read_struct::<u32>(a(2), off(&OFFSETS.task_struct_pid)) {
        on_sched_switch(pid, || {
            a(0) as u8 == 0
                && read_struct::<u32>(a(1), off(&OFFSETS.task_struct_pid)).is_some_and(|p| p != 0)
        })
    }
});

/// `prev_state` in the classic record: the task state bits below 0x100, 0 for runnable,
/// 0x100 (TASK_REPORT_MAX) set for a preemption.
const PREV_STATE_BITS: i64 = 0xff;
const PREV_STATE_PREEMPT: i64 = 0x100;

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn tp_sched_switch(ctx: TracePointContext) -> u32 {
    if let Some(pid) = record!(&ctx, u32, SCHED_SWITCH_NEXT_PID) {
        on_sched_switch(pid, || {
            record!(&ctx, i64, SCHED_SWITCH_PREV_STATE)
                .is_some_and(|s| s & PREV_STATE_BITS != 0 && s & PREV_STATE_PREEMPT == 0)
        });
    }
    0
}

/// The busy-poll loop (the loader attaches to `__napi_busy_loop`, under `napi_busy_loop` and
/// `napi_busy_loop_rcu`, or to `napi_busy_loop` before 6.8; sockets with
/// SO_BUSY_POLL, epoll, io_uring): its entry is where the loop's first poll starts.
#[fentry(function = "__napi_busy_loop")]
pub fn busy_loop_entry(_ctx: FEntryContext) -> u32 {
    on_busy_loop_entry();
    0
}

#[fexit(function = "__napi_busy_loop")]
pub fn busy_loop_exit(_ctx: FExitContext) -> u32 {
    on_busy_loop_exit();
    0
}

/// Programs that do nothing, one per event: the probe benchmark's floor, what attaching a
/// BTF-typed program to these events costs before any work (`ProbeOptions::empty`).
macro_rules! empty_programs {
    ($($event:literal => $name:ident),* $(,)?) => {
        $(
            #[btf_tracepoint(function = $event)]
            pub fn $name(_ctx: BtfTracePointContext) -> i32 {
                0
            }
        )*
    };
}

empty_programs!(
    "irq_handler_entry" => empty_irq_handler_entry,
    "irq_handler_exit" => empty_irq_handler_exit,
    "softirq_raise" => empty_softirq_raise,
    "softirq_entry" => empty_softirq_entry,
    "softirq_exit" => empty_softirq_exit,
    "napi_poll" => empty_napi_poll,
    "sched_switch" => empty_sched_switch,
    "local_timer_entry" => empty_local_timer_entry,
    "local_timer_exit" => empty_local_timer_exit,
    "reschedule_entry" => empty_reschedule_entry,
    "reschedule_exit" => empty_reschedule_exit,
    "call_function_entry" => empty_call_function_entry,
    "call_function_exit" => empty_call_function_exit,
    "call_function_single_entry" => empty_call_function_single_entry,
    "call_function_single_exit" => empty_call_function_single_exit,
    "irq_work_entry" => empty_irq_work_entry,
    "irq_work_exit" => empty_irq_work_exit,
    "x86_platform_ipi_entry" => empty_x86_platform_ipi_entry,
    "x86_platform_ipi_exit" => empty_x86_platform_ipi_exit,
    "thermal_apic_entry" => empty_thermal_apic_entry,
    "thermal_apic_exit" => empty_thermal_apic_exit,
    "error_apic_entry" => empty_error_apic_entry,
    "error_apic_exit" => empty_error_apic_exit,
    "spurious_apic_entry" => empty_spurious_apic_entry,
    "spurious_apic_exit" => empty_spurious_apic_exit,
);

/// The floor with the clock reads the measurement needs per NET_RX softirq: one at each
/// boundary (entry, each poll, exit), stored where the real programs keep it
/// (`ProbeOptions::clock_floor`).
macro_rules! clock_programs {
    ($($event:literal => $name:ident),* $(,)?) => {
        $(
            #[btf_tracepoint(function = $event)]
            pub fn $name(_ctx: BtfTracePointContext) -> i32 {
                if let Some(st) = state() {
                    st.poll_mark = now();
                }
                0
            }
        )*
    };
}

clock_programs!(
    "softirq_entry" => clock_softirq_entry,
    "softirq_exit" => clock_softirq_exit,
    "napi_poll" => clock_napi_poll,
);

// irq_handler_entry(int irq, struct irqaction *action), _exit(int irq, action, int ret).
arg_programs!(
    "irq_handler_entry",
    raw_irq_handler_entry,
    btf_irq_handler_entry,
    |a| { on_handler_entry(a(0) as u32) }
);
arg_programs!(
    "irq_handler_exit",
    raw_irq_handler_exit,
    btf_irq_handler_exit,
    |a| { on_handler_exit(a(0) as u32) }
);
// softirq_*(unsigned int vec_nr).
arg_programs!("softirq_raise", raw_softirq_raise, btf_softirq_raise, |a| {
    on_softirq_raise(a(0) as u32)
});
arg_programs!("softirq_entry", raw_softirq_entry, btf_softirq_entry, |a| {
    on_softirq_entry(a(0) as u32)
});
arg_programs!("softirq_exit", raw_softirq_exit, btf_softirq_exit, |a| {
    on_softirq_exit(a(0) as u32)
});
// napi_poll(struct napi_struct *napi, int work, int budget).
#[raw_tracepoint(tracepoint = "napi_poll")]
pub fn raw_napi_poll(ctx: RawTracePointContext) -> i32 {
    let napi: u64 = ctx.arg(0);
    let napi_id = read_struct::<u32>(napi, off(&OFFSETS.napi_struct_napi_id)).unwrap_or(0);
    on_napi_poll(napi, napi_id, ctx.arg(1), ctx.arg(2), DevName::Struct);
    0
}

/// The BTF-typed program gets `napi` as a typed kernel pointer: a field at an offset the
/// verifier knows (frozen read-only data) is a plain load, not a helper call. `napi_id` is
/// read on every poll (a freed instance's address is reused by the next one), so this is the
/// poll's most frequent read.
#[btf_tracepoint(function = "napi_poll")]
pub fn btf_napi_poll(ctx: BtfTracePointContext) -> i32 {
    let napi: *const u8 = ctx.arg(0);
    let id_off = off(&OFFSETS.napi_struct_napi_id);
    let napi_id = if id_off == NO_OFFSET {
        0
    } else {
        // SAFETY: the verifier checks the access against struct napi_struct's BTF and turns
        // it into a fault-safe load.
        unsafe { read_volatile(napi.add(id_off as usize) as *const u32) }
    };
    on_napi_poll(
        napi as u64,
        napi_id,
        ctx.arg(1),
        ctx.arg(2),
        DevName::Struct,
    );
    0
}

/// The entry and exit programs of one system vector (`irq_vectors:<name>_entry/_exit`, whose
/// only argument is the vector number), in all three program types. `$idx` is its slot in
/// `SYSVEC_STATS` (`balancer_common::SYSVEC_NAMES`).
macro_rules! sysvec_programs {
    ($idx:literal, $entry:literal, $exit:literal,
     $tp_e:ident, $tp_x:ident, $raw_e:ident, $raw_x:ident, $btf_e:ident, $btf_x:ident) => {
        #[tracepoint(category = "irq_vectors", name = $entry)]
        pub fn $tp_e(_ctx: TracePointContext) -> u32 {
            on_sysvec_entry($idx);
            0
        }
        #[tracepoint(category = "irq_vectors", name = $exit)]
        pub fn $tp_x(_ctx: TracePointContext) -> u32 {
            on_sysvec_exit($idx);
            0
        }
        arg_programs!($entry, $raw_e, $btf_e, |_a| on_sysvec_entry($idx));
        arg_programs!($exit, $raw_x, $btf_x, |_a| on_sysvec_exit($idx));
    };
}

sysvec_programs!(
    0,
    "local_timer_entry",
    "local_timer_exit",
    tp_local_timer_entry,
    tp_local_timer_exit,
    raw_local_timer_entry,
    raw_local_timer_exit,
    btf_local_timer_entry,
    btf_local_timer_exit
);
sysvec_programs!(
    1,
    "reschedule_entry",
    "reschedule_exit",
    tp_reschedule_entry,
    tp_reschedule_exit,
    raw_reschedule_entry,
    raw_reschedule_exit,
    btf_reschedule_entry,
    btf_reschedule_exit
);
sysvec_programs!(
    2,
    "call_function_entry",
    "call_function_exit",
    tp_call_function_entry,
    tp_call_function_exit,
    raw_call_function_entry,
    raw_call_function_exit,
    btf_call_function_entry,
    btf_call_function_exit
);
sysvec_programs!(
    3,
    "call_function_single_entry",
    "call_function_single_exit",
    tp_call_function_single_entry,
    tp_call_function_single_exit,
    raw_call_function_single_entry,
    raw_call_function_single_exit,
    btf_call_function_single_entry,
    btf_call_function_single_exit
);
sysvec_programs!(
    4,
    "irq_work_entry",
    "irq_work_exit",
    tp_irq_work_entry,
    tp_irq_work_exit,
    raw_irq_work_entry,
    raw_irq_work_exit,
    btf_irq_work_entry,
    btf_irq_work_exit
);
sysvec_programs!(
    5,
    "x86_platform_ipi_entry",
    "x86_platform_ipi_exit",
    tp_x86_platform_ipi_entry,
    tp_x86_platform_ipi_exit,
    raw_x86_platform_ipi_entry,
    raw_x86_platform_ipi_exit,
    btf_x86_platform_ipi_entry,
    btf_x86_platform_ipi_exit
);
sysvec_programs!(
    6,
    "thermal_apic_entry",
    "thermal_apic_exit",
    tp_thermal_apic_entry,
    tp_thermal_apic_exit,
    raw_thermal_apic_entry,
    raw_thermal_apic_exit,
    btf_thermal_apic_entry,
    btf_thermal_apic_exit
);
sysvec_programs!(
    7,
    "error_apic_entry",
    "error_apic_exit",
    tp_error_apic_entry,
    tp_error_apic_exit,
    raw_error_apic_entry,
    raw_error_apic_exit,
    btf_error_apic_entry,
    btf_error_apic_exit
);
sysvec_programs!(
    8,
    "spurious_apic_entry",
    "spurious_apic_exit",
    tp_spurious_apic_entry,
    tp_spurious_apic_exit,
    raw_spurious_apic_entry,
    raw_spurious_apic_exit,
    btf_spurious_apic_entry,
    btf_spurious_apic_exit
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects anything that could get here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
