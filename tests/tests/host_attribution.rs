//! Host integration tests, as root on the running kernel: real eBPF programs, real NAPI polls
//! of a veth pair between two namespaces the test creates.
use std::{collections::BTreeMap, path::Path};

use balancer::{
    attribution::{Attribution, Bucket, LinkMethod, Linker},
    probe::{Probe, ProbeOptions, ProgramType},
    sample::Sampler,
    system::{ReadOptions, SystemModel},
    vector::Softirq,
};
use balancer_common::NET_RX_SOFTIRQ;
use balancer_tests::{VethPair, require_root};

/// The veth NAPI instances get measurable poll time, and on every CPU the NET_RX softirq time
/// splits into NAPI polls plus named unattributed buckets that add up to it within 2%. As
/// shipped: BTF-typed tracepoints on every event.
#[test]
#[ignore = "needs root"]
fn veth_napi_time_is_measured_and_netrx_adds_up() {
    require_root();
    let probe = Probe::load(&ProbeOptions::default()).expect("loading the probes");
    assert_eq!(probe.status.programs, "tp_btf", "{:?}", probe.status);
    assert!(
        probe
            .status
            .program_types
            .values()
            .all(|t| *t == ProgramType::BtfTracePoint)
    );
    veth_napi_adds_up(probe);
}

/// The same on raw tracepoints, what kernels without BTF get.
#[test]
#[ignore = "needs root"]
fn veth_napi_adds_up_on_raw_tracepoints() {
    require_root();
    // Without BTF napi_poll cannot find its device name from the arguments and takes the
    // classic tracepoint; with it (as here) every event is raw.
    let probe = Probe::load(&ProbeOptions {
        program_type: ProgramType::RawTracePoint,
        ..ProbeOptions::default()
    })
    .expect("loading the probes");
    assert_eq!(probe.status.programs, "raw_tp", "{:?}", probe.status);
    veth_napi_adds_up(probe);
}

/// Classic tracepoints, the last resort: fields loaded straight from the record, which has
/// the compiled layout on the host kernel.
#[test]
#[ignore = "needs root"]
fn veth_napi_adds_up_on_classic_tracepoints() {
    require_root();
    let probe = Probe::load(&ProbeOptions {
        program_type: ProgramType::TracePoint,
        ..ProbeOptions::default()
    })
    .expect("loading the probes");
    assert_eq!(probe.status.programs, "tracepoint");
    assert_eq!(probe.status.field_reads, "direct");
    veth_napi_adds_up(probe);
}

/// Classic tracepoints with every record field read by `bpf_probe_read_kernel`, the path
/// kernels with another record layout take.
#[test]
#[ignore = "needs root"]
fn veth_napi_adds_up_with_generic_field_reads() {
    require_root();
    let opts = ProbeOptions {
        direct_loads: false,
        program_type: ProgramType::TracePoint,
        ..ProbeOptions::default()
    };
    let probe = Probe::load(&opts).expect("loading the probes");
    assert!(
        probe
            .status
            .field_reads
            .starts_with("bpf_probe_read_kernel")
    );
    veth_napi_adds_up(probe);
}

fn veth_napi_adds_up(probe: Probe) {
    let root = Path::new("/");
    let model = SystemModel::read(root, &ReadOptions::default()).expect("system model");
    assert!(
        probe.status.napi.active,
        "napi:napi_poll must attach on the host kernel"
    );
    assert!(probe.status.softirq.active && probe.status.hardirq.active);

    let pair = VethPair::create().expect("creating the veth pair");
    let mut sampler = Sampler::new(probe, root).expect("first snapshot");
    // A fixed amount of data, not a fixed time: the test never depends on speed.
    pair.tcp_transfer(256 << 20)
        .expect("traffic between the namespaces");
    let iv = sampler.sample().expect("second snapshot");

    let mut linker = Linker::default();
    linker.observe(&iv);
    let links = linker.links(&iv.napi_identity, &model);
    let a = Attribution::build(&iv, &model, &links);

    // The receiving veth's NAPI instance polled, with time and packets, and has no IRQ.
    let veth: Vec<_> = a
        .napi
        .iter()
        .filter(|n| n.device == pair.dev_b || n.device == pair.dev_a)
        .collect();
    assert!(
        !veth.is_empty(),
        "no NAPI instance of {} / {} polled; seen: {:?}",
        pair.dev_a,
        pair.dev_b,
        a.napi.iter().map(|n| &n.device).collect::<Vec<_>>()
    );
    let rx: Vec<_> = veth.iter().filter(|n| n.device == pair.dev_b).collect();
    assert!(
        !rx.is_empty(),
        "the receiving veth {} never polled",
        pair.dev_b
    );
    let total = rx.iter().map(|n| n.total()).fold((0, 0, 0), |acc, t| {
        (acc.0 + t.polls, acc.1 + t.packets, acc.2 + t.ns)
    });
    assert!(total.0 > 100, "veth polls: {total:?}");
    assert!(total.1 > 1000, "veth packets: {total:?}");
    assert!(
        total.2 > 100_000,
        "veth poll time should be measurable: {total:?} ns"
    );
    for n in &veth {
        assert_eq!(
            n.link.method,
            LinkMethod::None,
            "veth has no IRQ: {:?}",
            n.link
        );
    }

    // Per CPU: NET_RX = polls (to IRQs, RPS backlog, NAPI without IRQ) + overhead, within 2%.
    let mut netrx_seen = false;
    for cpu in &a.cpus {
        let netrx = cpu.softirq_ns[NET_RX_SOFTIRQ as usize];
        if netrx == 0 {
            continue;
        }
        netrx_seen = true;
        let to_irqs = a.attributed_softirq_ns(cpu.cpu);
        let buckets: BTreeMap<Bucket, u64> = a
            .unattributed
            .iter()
            .filter(|u| u.cpu == cpu.cpu && u.vec == Softirq::NetRx)
            .map(|u| (u.bucket, u.ns))
            .collect();
        let sum = to_irqs + buckets.values().sum::<u64>();
        let diff = sum.abs_diff(netrx) as f64 / netrx as f64;
        assert!(
            diff <= 0.02,
            "CPU {}: NET_RX {netrx} ns, parts {to_irqs} + {buckets:?} = {sum} ns ({:.2}% off)",
            cpu.cpu,
            diff * 100.0
        );
        let polls: u64 = a
            .napi
            .iter()
            .filter_map(|n| n.per_cpu.get(&cpu.cpu))
            .map(|c| c.ns)
            .sum();
        assert!(
            polls as f64 <= netrx as f64 * 1.02,
            "CPU {}: polls {polls} ns exceed NET_RX {netrx} ns",
            cpu.cpu
        );
        // And the whole softirq time of the CPU adds up the same way.
        let all = cpu.softirq_total_ns();
        let parts = to_irqs + a.unattributed_ns(cpu.cpu);
        assert!(
            parts.abs_diff(all) as f64 <= all as f64 * 0.02,
            "CPU {}: softirq {all} ns vs parts {parts} ns",
            cpu.cpu
        );
    }
    assert!(netrx_seen, "no NET_RX softirq time measured at all");
    drop(pair);
}

/// The probes see handler time for hardware IRQs: the test machine's own device interrupts
/// (its NIC, disk, console) fire on their own; a few seconds of them is enough.
#[test]
#[ignore = "needs root"]
fn hardirq_handler_time_is_measured() {
    require_root();
    handler_time_is_measured(&ProbeOptions::default());
}

#[test]
#[ignore = "needs root"]
fn hardirq_handler_time_is_measured_with_generic_field_reads() {
    require_root();
    handler_time_is_measured(&ProbeOptions {
        direct_loads: false,
        program_type: ProgramType::TracePoint,
        ..ProbeOptions::default()
    });
}

fn handler_time_is_measured(opts: &ProbeOptions) {
    let probe = Probe::load(opts).expect("loading the probes");
    let before = probe.read().expect("read");
    // Wait for interrupts by count, not by time: up to 60 s for 5 handler runs.
    let mut after = before.clone();
    for _ in 0..600 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = probe.read().expect("read");
        let runs: u64 = after.irqs.values().map(|s| s.runs).sum::<u64>()
            - before.irqs.values().map(|s| s.runs).sum::<u64>();
        if runs >= 5 {
            break;
        }
    }
    let runs: u64 = after.irqs.values().map(|s| s.runs).sum();
    let ns: u64 = after.irqs.values().map(|s| s.ns).sum();
    assert!(runs >= 5, "no hardware interrupts handled in 60 s");
    assert!(ns > 0, "handler time is zero over {runs} runs");
}

/// Between the daemon's windows (`Probe::pause`) the system-vector programs stay attached
/// (toggling them would rewrite kernel text each interval) but count nothing; everything
/// else is detached and counts nothing either; `attach` resumes both. Local timer
/// interrupts come from a busy CPU (HZ per second while it runs).
#[test]
#[ignore = "needs root"]
fn paused_programs_count_nothing_and_system_vectors_stay_attached() {
    require_root();
    let mut probe = Probe::load(&ProbeOptions::default()).expect("loading the probes");
    // (system vector runs, softirq runs) from one read.
    let runs = |p: &Probe| -> (u64, u64) {
        let c = p.read().expect("read");
        (
            c.sysvecs.values().map(|s| s.runs).sum(),
            c.softirqs.values().map(|s| s.runs).sum(),
        )
    };
    let busy = || {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(400) {
            std::hint::spin_loop();
        }
    };
    let timers: Vec<String> = probe
        .attached_events()
        .into_iter()
        .filter(|e| e.starts_with("irq_vectors:"))
        .collect();
    if timers.is_empty() {
        eprintln!("SKIP: no irq_vectors tracepoints on this kernel");
        return;
    }
    busy();
    let (v0, s0) = runs(&probe);
    assert!(v0 > 0, "no system vector counted while attached");
    probe.pause().expect("pause");
    let (v1, s1) = runs(&probe);
    busy();
    let (v2, s2) = runs(&probe);
    assert_eq!(v2, v1, "system vectors counted while paused");
    assert_eq!(s2, s1, "softirqs counted while paused");
    // The busy-poll loop's fentry/fexit stay too (5.10 cannot attach them twice).
    let kept: Vec<String> = probe
        .attached_events()
        .into_iter()
        .filter(|e| !e.starts_with("fentry:") && !e.starts_with("fexit:"))
        .collect();
    assert_eq!(kept, timers, "attached while paused");
    probe.attach().expect("attach");
    busy();
    let (v3, s3) = runs(&probe);
    assert!(v3 > v2, "no system vector counted after resuming");
    assert!(s3 >= s2);
    assert!(s0 > 0 || s3 > s2, "no softirq counted at all");
}

/// With bpftrace's classic softirq programs running beside ours, our BTF-typed programs
/// still see every interrupt: each guards itself against recursion, so an IRQ that arrives
/// while bpftrace runs is not skipped. Interrupts come from direct reads of a file the test
/// writes (the page cache is bypassed, so each read is a device I/O with its interrupt).
#[test]
#[ignore = "needs root"]
fn coverage_holds_with_bpftrace_beside() {
    require_root();
    let file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coverage-reads.bin");
    let dd = |args: &[&str]| {
        let status = std::process::Command::new("dd")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("dd");
        assert!(status.success(), "dd {args:?}");
    };
    let of = format!("of={}", file.display());
    dd(&["if=/dev/zero", &of, "bs=1M", "count=12", "conv=fsync"]);

    let mut bt = std::process::Command::new("bpftrace")
        .args([
            "-e",
            "tracepoint:irq:softirq_entry { @s[cpu] = nsecs; } \
             tracepoint:irq:softirq_exit /@s[cpu]/ { @ns[args->vec] = sum(nsecs - @s[cpu]); }",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting bpftrace");
    let mut out = std::io::BufReader::new(bt.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("bpftrace output");
    assert!(line.starts_with("Attaching"), "bpftrace: {line}");

    let root = Path::new("/");
    let model = SystemModel::read(root, &ReadOptions::default()).expect("system model");
    let probe = Probe::load(&ProbeOptions::default()).expect("loading the probes");
    let mut sampler = Sampler::new(probe, root).expect("first snapshot");
    let inf = format!("if={}", file.display());
    dd(&[&inf, "of=/dev/null", "bs=4k", "iflag=direct"]);
    let iv = sampler.sample().expect("second snapshot");
    let stats = sampler.probe().program_stats().expect("program stats");
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
    let _ = bt.wait();
    let _ = std::fs::remove_file(&file);

    let a = Attribution::build(&iv, &model, &BTreeMap::new());
    let total: u64 = a.irqs.values().map(|l| l.interrupts).sum();
    assert!(
        total >= 1000,
        "only {total} interrupts during 3072 direct reads"
    );
    let coverage = a.coverage().expect("interrupts fired");
    assert!(
        coverage >= 0.99,
        "measured {:.2}% of {total} interrupts; short, per IRQ (CPU, handler runs, interrupts): \
         {:?}; unpaired handler events {}; handler programs: {:?}",
        coverage * 100.0,
        a.uncovered(),
        iv.probe_errors[balancer_common::ERR_UNPAIRED_HANDLER as usize],
        stats
            .iter()
            .filter(|p| p.event.starts_with("irq:irq_handler"))
            .collect::<Vec<_>>()
    );
    for p in stats
        .iter()
        .filter(|p| p.event.starts_with("irq:irq_handler"))
    {
        assert_eq!(p.recursion_misses, 0, "{p:?}");
    }
}
