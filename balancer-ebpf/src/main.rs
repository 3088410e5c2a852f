//! Kernel programs of balancer.
//!
//! Six tracepoint programs keep per-CPU counters: handler time per IRQ, run time per softirq
//! vector, poll time per NAPI instance, and which IRQ's handler raised the NET_RX softirq in
//! which a NAPI instance was polled. Nothing is sent per event: userspace reads the maps once
//! per interval. One per-CPU state slot carries the timestamps between entry and exit events;
//! hardirqs do not nest and softirqs do not nest on one CPU, so one slot per CPU is enough.
//!
//! Hardirq time that interrupts a softirq or a poll is subtracted from it, so a CPU's times add
//! up without counting anything twice.
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use balancer_common::{
    CompiledLayout, ERR_MAP_FULL, ERR_READ, IrqStat, NET_RX_SOFTIRQ, NO_OFFSET, NR_ERRORS,
    NR_SOFTIRQS, NapiStat, Offsets, PairKey, SoftirqStat,
};

/// Overridden by the loader with offsets read from tracefs and BTF.
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets::UNSET;

/// Resized by the loader to the machine's IRQ count.
#[map]
static IRQ_STATS: PerCpuHashMap<u32, IrqStat> = PerCpuHashMap::with_max_entries(4096, 0);
#[map]
static SOFTIRQ_STATS: PerCpuArray<SoftirqStat> =
    PerCpuArray::with_max_entries(NR_SOFTIRQS as u32, 0);
/// Keyed by the `struct napi_struct *` of the poll event.
#[map]
static NAPI_STATS: PerCpuHashMap<u64, NapiStat> = PerCpuHashMap::with_max_entries(1024, 0);
#[map]
static NAPI_IRQ_PAIRS: PerCpuHashMap<PairKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);
#[map]
static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_ERRORS, 0);
#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// IRQ slots in [`CpuState`] hold the IRQ number plus one, so the zeroed initial state
/// means "none" rather than IRQ 0.
const NO_IRQ: u32 = 0;
const BPF_NOEXIST: u64 = 1;

/// What happens on this CPU right now. Timestamps of 0 mean "not inside".
#[repr(C)]
struct CpuState {
    /// Running total of handler nanoseconds on this CPU.
    hardirq_ns: u64,
    irq_start: u64,
    softirq_start: u64,
    /// `hardirq_ns` when the current softirq began.
    softirq_hardirq_base: u64,
    /// Where the time of the next poll in this NET_RX softirq starts.
    poll_mark: u64,
    poll_hardirq_base: u64,
    irq: u32,
    softirq_vec: u32,
    /// IRQ (+1) whose handler last raised NET_RX here, until a NET_RX softirq takes it.
    raiser_irq: u32,
    /// IRQ (+1) that raised the NET_RX softirq now running, or NO_IRQ.
    netrx_cause: u32,
    /// NAPI instances already counted for `netrx_cause` in this softirq: a pair counts
    /// softirqs, not polls, so an instance repolled within one softirq counts once.
    counted: [u64; COUNTED_SLOTS],
    ncounted: u32,
    _pad: u32,
}

const COUNTED_SLOTS: usize = 4;

#[inline(always)]
fn off(field: &u32) -> u32 {
    // Volatile: the value is patched at load time, the compiler must not fold the placeholder.
    unsafe { read_volatile(field) }
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

/// Reads a tracepoint field at `offset` (from tracefs). `AT` is where [`CompiledLayout`] puts
/// it: when the two agree the field is loaded straight from the record, which the verifier
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

#[inline(always)]
fn read_u32<const AT: u32>(ctx: &TracePointContext, offset: u32) -> Option<u32> {
    read_field::<u32, AT>(ctx, offset)
}

#[inline(always)]
fn state() -> Option<&'static mut CpuState> {
    CPU_STATE.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[tracepoint(category = "irq", name = "irq_handler_entry")]
pub fn irq_handler_entry(ctx: TracePointContext) -> u32 {
    let Some(irq) =
        read_u32::<{ CompiledLayout::HANDLER_IRQ }>(&ctx, off(&OFFSETS.handler_entry_irq))
    else {
        return 0;
    };
    if let Some(st) = state() {
        st.irq = irq;
        st.irq_start = now();
    }
    0
}

#[tracepoint(category = "irq", name = "irq_handler_exit")]
pub fn irq_handler_exit(ctx: TracePointContext) -> u32 {
    let Some(irq) =
        read_u32::<{ CompiledLayout::HANDLER_IRQ }>(&ctx, off(&OFFSETS.handler_exit_irq))
    else {
        return 0;
    };
    let Some(st) = state() else { return 0 };
    // An exit without its entry (programs attached mid-handler) is skipped.
    if st.irq_start == 0 || st.irq != irq {
        st.irq_start = 0;
        return 0;
    }
    let ns = now().wrapping_sub(st.irq_start);
    st.irq_start = 0;
    st.hardirq_ns += ns;
    if let Some(s) = IRQ_STATS.get_ptr_mut(irq) {
        unsafe {
            (*s).runs += 1;
            (*s).ns += ns;
        }
    } else {
        let fresh = IrqStat { runs: 1, ns };
        if IRQ_STATS.insert(irq, fresh, BPF_NOEXIST).is_err() {
            // Another CPU created the key first, or the map is full.
            match IRQ_STATS.get_ptr_mut(irq) {
                Some(s) => unsafe {
                    (*s).runs += 1;
                    (*s).ns += ns;
                },
                None => count_error(ERR_MAP_FULL),
            }
        }
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_raise")]
pub fn softirq_raise(ctx: TracePointContext) -> u32 {
    let Some(vec) =
        read_u32::<{ CompiledLayout::SOFTIRQ_VEC }>(&ctx, off(&OFFSETS.softirq_raise_vec))
    else {
        return 0;
    };
    if vec >= NR_SOFTIRQS as u32 {
        return 0;
    }
    if let Some(s) = SOFTIRQ_STATS.get_ptr_mut(vec) {
        unsafe { (*s).raises += 1 };
    }
    if vec == NET_RX_SOFTIRQ
        && let Some(st) = state()
        && st.irq_start != 0
    {
        st.raiser_irq = st.irq.wrapping_add(1);
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_entry")]
pub fn softirq_entry(ctx: TracePointContext) -> u32 {
    let Some(vec) =
        read_u32::<{ CompiledLayout::SOFTIRQ_VEC }>(&ctx, off(&OFFSETS.softirq_entry_vec))
    else {
        return 0;
    };
    let Some(st) = state() else { return 0 };
    let t = now();
    st.softirq_vec = vec;
    st.softirq_start = t;
    st.softirq_hardirq_base = st.hardirq_ns;
    if vec == NET_RX_SOFTIRQ {
        st.netrx_cause = st.raiser_irq;
        st.raiser_irq = NO_IRQ;
        st.ncounted = 0;
        st.poll_mark = t;
        st.poll_hardirq_base = st.hardirq_ns;
    }
    0
}

#[tracepoint(category = "irq", name = "softirq_exit")]
pub fn softirq_exit(ctx: TracePointContext) -> u32 {
    let Some(vec) =
        read_u32::<{ CompiledLayout::SOFTIRQ_VEC }>(&ctx, off(&OFFSETS.softirq_exit_vec))
    else {
        return 0;
    };
    let Some(st) = state() else { return 0 };
    let start = st.softirq_start;
    st.softirq_start = 0;
    st.netrx_cause = NO_IRQ;
    if start == 0 || st.softirq_vec != vec || vec >= NR_SOFTIRQS as u32 {
        return 0;
    }
    let wall = now().wrapping_sub(start);
    let ns = wall.saturating_sub(st.hardirq_ns.wrapping_sub(st.softirq_hardirq_base));
    if let Some(s) = SOFTIRQ_STATS.get_ptr_mut(vec) {
        unsafe {
            (*s).runs += 1;
            (*s).ns += ns;
        }
    }
    0
}

#[tracepoint(category = "napi", name = "napi_poll")]
pub fn napi_poll(ctx: TracePointContext) -> u32 {
    let o = &OFFSETS;
    let Some(napi) =
        read_field::<u64, { CompiledLayout::NAPI_POLL_NAPI }>(&ctx, off(&o.napi_poll_napi))
    else {
        return 0;
    };
    let work = read_u32::<{ CompiledLayout::NAPI_POLL_WORK }>(&ctx, off(&o.napi_poll_work))
        .unwrap_or(0) as i32;
    let budget = read_u32::<{ CompiledLayout::NAPI_POLL_BUDGET }>(&ctx, off(&o.napi_poll_budget))
        .unwrap_or(0) as i32;
    let work = if work > 0 { work as u64 } else { 0 };
    let exhausted = (budget > 0 && work >= budget as u64) as u64;

    let Some(st) = state() else { return 0 };
    // Polls of one NET_RX softirq run back to back: each one's time runs from the previous
    // poll event (or the softirq's entry) to its own event.
    let timed = st.softirq_start != 0 && st.softirq_vec == NET_RX_SOFTIRQ;
    let mut ns = 0;
    if timed {
        let t = now();
        let hard = st.hardirq_ns.wrapping_sub(st.poll_hardirq_base);
        ns = t.wrapping_sub(st.poll_mark).saturating_sub(hard);
        st.poll_mark = t;
        st.poll_hardirq_base = st.hardirq_ns;
    }
    let cause = if timed && st.netrx_cause != NO_IRQ && first_in_softirq(st, napi) {
        st.netrx_cause
    } else {
        NO_IRQ
    };

    if let Some(s) = NAPI_STATS.get_ptr_mut(napi) {
        unsafe { add_poll(&mut *s, timed, work, exhausted, ns) };
    } else {
        let mut fresh = NapiStat::EMPTY;
        add_poll(&mut fresh, timed, work, exhausted, ns);
        read_identity(&ctx, o, napi, &mut fresh);
        if NAPI_STATS.insert(napi, fresh, BPF_NOEXIST).is_err() {
            match NAPI_STATS.get_ptr_mut(napi) {
                Some(s) => unsafe { add_poll(&mut *s, timed, work, exhausted, ns) },
                None => count_error(ERR_MAP_FULL),
            }
        }
    }

    if cause != NO_IRQ {
        let key = PairKey {
            napi,
            irq: cause - 1,
            _pad: 0,
        };
        if let Some(c) = NAPI_IRQ_PAIRS.get_ptr_mut(key) {
            unsafe { *c += 1 };
        } else if NAPI_IRQ_PAIRS.insert(key, 1, BPF_NOEXIST).is_err() {
            match NAPI_IRQ_PAIRS.get_ptr_mut(key) {
                Some(c) => unsafe { *c += 1 },
                None => count_error(ERR_MAP_FULL),
            }
        }
    }
    0
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
fn add_poll(s: &mut NapiStat, timed: bool, work: u64, exhausted: u64, ns: u64) {
    if timed {
        s.polls += 1;
        s.work += work;
        s.ns += ns;
    } else {
        s.untimed_polls += 1;
        s.untimed_work += work;
    }
    s.budget_exhausted += exhausted;
}

/// Device name, and the IRQ and id the kernel recorded in the NAPI instance: read once per
/// instance and CPU, not per poll.
#[inline(always)]
fn read_identity(ctx: &TracePointContext, o: &Offsets, napi: u64, s: &mut NapiStat) {
    if let Some(loc) =
        read_u32::<{ CompiledLayout::NAPI_POLL_DEV_NAME }>(ctx, off(&o.napi_poll_dev_name))
    {
        // __data_loc: low 16 bits are the offset in the record, high 16 bits the length.
        let at = (loc & 0xffff) as usize;
        let src = unsafe { (ctx.as_ptr() as *const u8).add(at) };
        if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut s.dev_name) }.is_err() {
            count_error(ERR_READ);
        }
    }
    let irq_off = off(&o.napi_struct_irq);
    if irq_off != NO_OFFSET {
        let p = (napi as usize + irq_off as usize) as *const i32;
        match unsafe { bpf_probe_read_kernel(p) } {
            Ok(irq) => s.irq = irq,
            Err(_) => count_error(ERR_READ),
        }
    }
    let id_off = off(&o.napi_struct_napi_id);
    if id_off != NO_OFFSET {
        let p = (napi as usize + id_off as usize) as *const u32;
        if let Ok(id) = unsafe { bpf_probe_read_kernel(p) } {
            s.napi_id = id;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; the verifier rejects anything that could get here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
