//! The kernel side: loads the eBPF programs, attaches what this kernel has, and reads the
//! counters they keep.
//!
//! Offsets of tracepoint fields come from tracefs and offsets inside `struct napi_struct` from
//! BTF, both at start-up. A tracepoint this kernel lacks (`napi:napi_poll` before 3.x-era
//! kernels, or a kernel built without it) or missing BTF switches off only the part that needs
//! it; [`ProbeStatus`] says what runs and what does not, for the report's `meta`.
pub mod btf;
pub mod tracefs;

use std::{collections::BTreeMap, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::TracePoint,
};
use balancer_common::{
    CompiledLayout, IrqStat, NO_OFFSET, NR_ERRORS, NR_SOFTIRQS, NapiStat, Offsets, PairKey,
    SoftirqStat,
};
use serde::Serialize;

use crate::Fatal;
use tracefs::{Format, Tracefs};

/// The compiled programs, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));

/// What the caller can tune.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Kernel BTF to read struct offsets from.
    pub btf: PathBuf,
    /// Size of the per-IRQ map; at least the number of IRQs the machine has.
    pub max_irqs: u32,
    /// Load tracepoint fields straight from the record where the kernel's layout allows
    /// (see [`CompiledLayout`]); off, every field costs a `bpf_probe_read_kernel`. Tests and
    /// the probe benchmark turn it off to exercise and measure the generic path.
    pub direct_loads: bool,
}

impl Default for ProbeOptions {
    /// `BALANCER_BTF` overrides the BTF path (tests use it to play a kernel without BTF).
    fn default() -> Self {
        ProbeOptions {
            btf: std::env::var_os("BALANCER_BTF")
                .map_or_else(|| PathBuf::from(btf::VMLINUX_BTF), PathBuf::from),
            max_irqs: 4096,
            direct_loads: true,
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
    pub softirq_raise: Feature,
    /// napi:napi_poll: poll time per NAPI instance.
    pub napi: Feature,
    /// `napi_struct.irq` from BTF: the exact NAPI -> IRQ link.
    pub napi_irq_exact: Feature,
    /// How the programs read tracepoint fields: "direct", or why not.
    pub field_reads: String,
}

impl ProbeStatus {
    /// One line per part that does not run, for warnings.
    pub fn missing(&self) -> Vec<String> {
        [
            ("hardirq", &self.hardirq),
            ("softirq", &self.softirq),
            ("softirq_raise", &self.softirq_raise),
            ("napi", &self.napi),
            ("napi_irq_exact", &self.napi_irq_exact),
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
    /// (CPU, vector) -> raises, runs and time.
    pub softirqs: BTreeMap<(u32, u32), SoftirqStat>,
    /// (NAPI instance, CPU) -> polls and time.
    pub napi: BTreeMap<(u64, u32), NapiStat>,
    /// (NAPI instance, IRQ) -> polls in a NET_RX softirq that IRQ's handler raised, all CPUs.
    pub pairs: BTreeMap<(u64, u32), u64>,
    /// Map-full and read errors of the programs, all CPUs.
    pub errors: [u64; NR_ERRORS as usize],
}

/// Says how the programs will read tracepoint fields with these offsets.
fn field_reads(o: &Offsets) -> String {
    if o.direct_loads == 0 {
        return "bpf_probe_read_kernel (direct loads turned off)".to_string();
    }
    type L = CompiledLayout;
    let off_layout: Vec<String> = [
        ("irq_handler_entry.irq", o.handler_entry_irq, L::HANDLER_IRQ),
        ("irq_handler_exit.irq", o.handler_exit_irq, L::HANDLER_IRQ),
        ("softirq_raise.vec", o.softirq_raise_vec, L::SOFTIRQ_VEC),
        ("softirq_entry.vec", o.softirq_entry_vec, L::SOFTIRQ_VEC),
        ("softirq_exit.vec", o.softirq_exit_vec, L::SOFTIRQ_VEC),
        ("napi_poll.napi", o.napi_poll_napi, L::NAPI_POLL_NAPI),
        (
            "napi_poll.dev_name",
            o.napi_poll_dev_name,
            L::NAPI_POLL_DEV_NAME,
        ),
        ("napi_poll.work", o.napi_poll_work, L::NAPI_POLL_WORK),
        ("napi_poll.budget", o.napi_poll_budget, L::NAPI_POLL_BUDGET),
    ]
    .into_iter()
    .filter(|&(_, at, want)| at != NO_OFFSET && at != want)
    .map(|(name, at, want)| format!("{name} at {at}, not {want}"))
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

/// The loaded, attached programs. Dropping it detaches them.
pub struct Probe {
    ebpf: Ebpf,
    pub status: ProbeStatus,
}

struct Tp {
    program: &'static str,
    category: &'static str,
    name: &'static str,
}

const TRACEPOINTS: [Tp; 6] = [
    Tp {
        program: "irq_handler_entry",
        category: "irq",
        name: "irq_handler_entry",
    },
    Tp {
        program: "irq_handler_exit",
        category: "irq",
        name: "irq_handler_exit",
    },
    Tp {
        program: "softirq_raise",
        category: "irq",
        name: "softirq_raise",
    },
    Tp {
        program: "softirq_entry",
        category: "irq",
        name: "softirq_entry",
    },
    Tp {
        program: "softirq_exit",
        category: "irq",
        name: "softirq_exit",
    },
    Tp {
        program: "napi_poll",
        category: "napi",
        name: "napi_poll",
    },
];

impl Probe {
    /// Checks privileges, reads the offsets, loads and attaches the programs.
    pub fn load(opts: &ProbeOptions) -> anyhow::Result<Probe> {
        check_privileges()?;
        raise_memlock_limit();
        let tracefs =
            Tracefs::find_or_mount().map_err(|e| Fatal::new(Fatal::PERMISSION, e.to_string()))?;

        let mut formats: BTreeMap<&str, Option<Format>> = BTreeMap::new();
        for tp in &TRACEPOINTS {
            formats.insert(tp.name, tracefs.format(tp.category, tp.name)?);
        }
        let mut offsets = Offsets::UNSET;
        let field = |tp: &str, cat: &str, name: &str, size: u32| -> anyhow::Result<u32> {
            match formats.get(tp).and_then(Option::as_ref) {
                Some(f) => Ok(tracefs.offset(f, cat, tp, name, size)?),
                None => Ok(NO_OFFSET),
            }
        };
        offsets.handler_entry_irq = field("irq_handler_entry", "irq", "irq", 4)?;
        offsets.handler_exit_irq = field("irq_handler_exit", "irq", "irq", 4)?;
        offsets.softirq_raise_vec = field("softirq_raise", "irq", "vec", 4)?;
        offsets.softirq_entry_vec = field("softirq_entry", "irq", "vec", 4)?;
        offsets.softirq_exit_vec = field("softirq_exit", "irq", "vec", 4)?;
        offsets.napi_poll_napi = field("napi_poll", "napi", "napi", 8)?;
        offsets.napi_poll_dev_name = field("napi_poll", "napi", "dev_name", 4)?;
        offsets.napi_poll_work = field("napi_poll", "napi", "work", 4)?;
        offsets.napi_poll_budget = field("napi_poll", "napi", "budget", 4)?;
        offsets.direct_loads = opts.direct_loads.into();
        let field_reads = field_reads(&offsets);

        let napi_irq_exact = match btf::napi_offsets(&opts.btf) {
            Ok(n) => {
                offsets.napi_struct_napi_id = n.napi_id.unwrap_or(NO_OFFSET);
                match n.irq {
                    Some(off) => {
                        offsets.napi_struct_irq = off;
                        Feature::on(format!("napi_struct.irq at byte {off} (BTF)"))
                    }
                    None => Feature::off(
                        "struct napi_struct has no irq field (kernel before 6.8); \
                         NAPI instances are linked to IRQs by co-occurrence",
                    ),
                }
            }
            Err(why) => Feature::off(format!(
                "kernel BTF unavailable ({why}); NAPI instances are linked to IRQs by \
                 co-occurrence"
            )),
        };

        // The programs carry no CO-RE relocations: nothing to relocate against the kernel's
        // BTF (aya's loader parses it anyway when constructed; see docs/benchmarks.md).
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("IRQ_STATS", opts.max_irqs.max(64))
            .load(OBJECT)
            .context("loading the eBPF programs into the kernel")?;

        let mut attached = BTreeMap::new();
        for tp in &TRACEPOINTS {
            let state = if formats.get(tp.name).is_some_and(Option::is_some) {
                let prog: &mut TracePoint = ebpf
                    .program_mut(tp.program)
                    .ok_or_else(|| anyhow!("program {} missing from the object", tp.program))?
                    .try_into()?;
                prog.load()
                    .with_context(|| format!("verifying program {}", tp.program))?;
                prog.attach(tp.category, tp.name)
                    .with_context(|| format!("attaching {}:{}", tp.category, tp.name))?;
                Ok(())
            } else {
                Err(format!(
                    "tracepoint {}:{} not in this kernel",
                    tp.category, tp.name
                ))
            };
            attached.insert(tp.name, state);
        }
        let pair = |a: &str, b: &str, what: &str| match (&attached[a], &attached[b]) {
            (Ok(()), Ok(())) => Feature::on(format!("irq:{a}/{b}: {what}")),
            (Err(e), _) | (_, Err(e)) => Feature::off(e.clone()),
        };
        let one = |a: &str, what: &str| match &attached[a] {
            Ok(()) => Feature::on(what.to_string()),
            Err(e) => Feature::off(e.clone()),
        };
        let status = ProbeStatus {
            hardirq: pair(
                "irq_handler_entry",
                "irq_handler_exit",
                "handler time per IRQ",
            ),
            softirq: pair("softirq_entry", "softirq_exit", "run time per vector"),
            softirq_raise: one(
                "softirq_raise",
                "irq:softirq_raise: raises, NET_RX raised by IRQ handlers",
            ),
            napi: one("napi_poll", "napi:napi_poll: poll time per NAPI instance"),
            napi_irq_exact,
            field_reads,
        };
        Ok(Probe { ebpf, status })
    }

    /// Reads every counter. Cheap enough for once per interval: one pass over each map.
    pub fn read(&self) -> anyhow::Result<Counters> {
        let mut c = Counters::default();

        let irqs: PerCpuHashMap<&MapData, u32, IrqStat> =
            PerCpuHashMap::try_from(self.map("IRQ_STATS")?)?;
        for entry in irqs.iter() {
            let (irq, values) = entry.context("reading IRQ_STATS")?;
            for (cpu, v) in values.iter().enumerate() {
                if v.runs != 0 {
                    c.irqs.insert((irq, cpu as u32), *v);
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

        let napi: PerCpuHashMap<&MapData, u64, NapiStat> =
            PerCpuHashMap::try_from(self.map("NAPI_STATS")?)?;
        for entry in napi.iter() {
            let (id, values) = entry.context("reading NAPI_STATS")?;
            for (cpu, v) in values.iter().enumerate() {
                if v.polls != 0 || v.untimed_polls != 0 {
                    c.napi.insert((id, cpu as u32), *v);
                }
            }
        }

        let pairs: PerCpuHashMap<&MapData, PairKey, u64> =
            PerCpuHashMap::try_from(self.map("NAPI_IRQ_PAIRS")?)?;
        for entry in pairs.iter() {
            let (key, values) = entry.context("reading NAPI_IRQ_PAIRS")?;
            let n: u64 = values.iter().sum();
            if n != 0 {
                c.pairs.insert((key.napi, key.irq), n);
            }
        }

        let errors: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.map("ERRORS")?)?;
        for (i, slot) in c.errors.iter_mut().enumerate() {
            *slot = errors.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(c)
    }

    fn map(&self, name: &str) -> anyhow::Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
    }

    /// Per program: (name, run count, run time in ns), valid while
    /// `kernel.bpf_stats_enabled` is on. For the benchmark.
    pub fn program_stats(&self) -> anyhow::Result<Vec<(String, u64, u64)>> {
        let mut out = Vec::new();
        for (name, prog) in self.ebpf.programs() {
            let info = prog.info()?;
            out.push((
                name.to_string(),
                info.run_count(),
                info.run_time().as_nanos() as u64,
            ));
        }
        Ok(out)
    }
}

// Capability numbers from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with one line naming what is missing: loading needs CAP_BPF and CAP_PERFMON (or
/// CAP_SYS_ADMIN on kernels before 5.8), and tracefs is only readable by root.
pub fn check_privileges() -> Result<(), Fatal> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = parse_cap_eff(&status);
    let euid = unsafe { libc::geteuid() };
    missing_privileges(caps, euid).map_or(Ok(()), |msg| Err(Fatal::new(Fatal::PERMISSION, msg)))
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
        Offsets {
            handler_entry_irq: 8,
            handler_exit_irq: 8,
            softirq_raise_vec: 8,
            softirq_entry_vec: 8,
            softirq_exit_vec: 8,
            napi_poll_napi: 8,
            napi_poll_dev_name: 16,
            napi_poll_work: 20,
            napi_poll_budget: 24,
            direct_loads: 1,
            ..Offsets::UNSET
        }
    }

    #[test]
    fn field_reads_say_which_fields_take_the_generic_path() {
        assert_eq!(field_reads(&current()), "direct");
        // A kernel without napi:napi_poll: absent fields are not "off layout".
        let no_napi = Offsets {
            napi_poll_napi: NO_OFFSET,
            napi_poll_dev_name: NO_OFFSET,
            napi_poll_work: NO_OFFSET,
            napi_poll_budget: NO_OFFSET,
            ..current()
        };
        assert_eq!(field_reads(&no_napi), "direct");
        // Records with a 4-byte common_padding (old kernels) move every field by 4.
        let padded = Offsets {
            softirq_entry_vec: 12,
            napi_poll_work: 24,
            ..current()
        };
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
