//! Host integration tests of poll time outside NET_RX softirq, as root on the running kernel:
//! threaded NAPI on the test's own veth pair, and busy polling on a socket receiving over it.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Context as _, bail};
use balancer::{
    attribution::{Attribution, Linker},
    probe::{Probe, ProbeOptions},
    sample::Sampler,
    system::{ReadOptions, SystemModel, kthreads},
};
use balancer_tests::{VethPair, require_root, set_threaded};

/// The NAPI kthreads of `dev` (comm `napi/<dev>-<id>`, cut at 15 bytes).
fn kthreads_of(dev: &str) -> BTreeSet<u32> {
    let prefix: String = format!("napi/{dev}-").chars().take(15).collect();
    kthreads::napi_kthreads(Path::new("/"))
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// Sends `count` UDP datagrams from namespace A to a socket in B that reads them, and waits
/// for the sender. One way only: nothing is sent back, so the receiving kthread runs no
/// softirq of the sender's (TCP's ACK-clocked sending runs in TASKLET softirqs there).
fn udp_flood(pair: &VethPair, count: u32, busy_poll_us: Option<u32>) -> anyhow::Result<u64> {
    use std::{net::UdpSocket, os::fd::AsRawFd as _, time::Duration};
    let port = 6201 + (std::process::id() % 1000) as u16;
    let to = std::net::SocketAddrV4::new(pair.addr_b, port);
    let (ns_a, ns_b) = (pair.ns_a.clone(), pair.ns_b.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let receiver = std::thread::spawn(move || -> anyhow::Result<u64> {
        balancer_tests::enter_netns(&ns_b)?;
        let sock = UdpSocket::bind(to).context("binding the receiver")?;
        if let Some(us) = busy_poll_us {
            let v: libc::c_int = us as libc::c_int;
            // SAFETY: a valid socket and a pointer to an int that outlives the call.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_BUSY_POLL,
                    &v as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if rc != 0 {
                bail!("SO_BUSY_POLL: {}", std::io::Error::last_os_error());
            }
        }
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let _ = ready_tx.send(());
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => got += 1,
                Err(_) if done_rx.try_recv().is_ok() => break,
                Err(_) => {}
            }
        }
        Ok(got)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("receiver did not start")?;
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        balancer_tests::enter_netns(&ns_a)?;
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let buf = [0x5au8; 1200];
        for _ in 0..count {
            // A full queue drops; the count is bounded either way.
            let _ = sock.send_to(&buf, to);
        }
        Ok(())
    });
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let _ = done_tx.send(());
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?
}

/// A task's run time so far, ns: the first field of `/proc/<pid>/schedstat`.
fn runtime_ns(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat's first field")
}

/// Steal time of all CPUs so far, ns (`/proc/stat`, USER_HZ = 100): time the hypervisor ran
/// something else on our vCPUs, which the probe's clock counts and a task's run time does not.
fn steal_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    stat.lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|f| f.parse::<u64>().ok())
        .map_or(0, |ticks| ticks * 10_000_000)
}

/// With `threaded` on both veth ends, every poll of their instances runs in a kthread. The
/// probe times those polls in the kernel (from the kthread's switch-in or its previous poll,
/// hardirqs and softirqs inside excluded), and for each end the poll time is the kthread's own
/// run time (`schedstat`) within 20% (target 10%, see below). That time is shown as threaded, goes to no CPU's
/// softirq time, and the sched_switch program is attached only while kthreads exist.
#[test]
#[ignore = "needs root"]
fn threaded_napi_poll_time_matches_the_kthreads_runtime() {
    require_root();
    let root = Path::new("/");
    let model = SystemModel::read(root, &ReadOptions::default()).expect("system model");
    let probe = Probe::load(&ProbeOptions::default()).expect("loading the probes");
    assert!(
        probe.status.threaded_napi.active,
        "{:?}",
        probe.status.threaded_napi
    );
    let pair = VethPair::create().expect("creating the veth pair");
    // Warm-up in softirq mode: the instances exist before they go threaded.
    pair.tcp_transfer(1 << 20).expect("warm-up traffic");
    for (ns, dev) in [(&pair.ns_a, &pair.dev_a), (&pair.ns_b, &pair.dev_b)] {
        set_threaded(ns, dev, true).expect("threaded on");
    }
    let threads: BTreeMap<&str, BTreeSet<u32>> = [pair.dev_a.as_str(), pair.dev_b.as_str()]
        .into_iter()
        .map(|d| (d, kthreads_of(d)))
        .collect();
    for (dev, pids) in &threads {
        assert!(!pids.is_empty(), "no napi/ kthread for {dev}");
    }

    let mut sampler = Sampler::new(probe, root).expect("first snapshot");
    let (known, attached) = sampler.probe().napi_threads();
    assert!(
        known >= 2 && attached,
        "kthreads {known}, attached {attached}"
    );
    let steal_before = steal_ns();
    let before: BTreeMap<u32, u64> = threads
        .values()
        .flatten()
        .map(|p| (*p, runtime_ns(*p)))
        .collect();
    let got = udp_flood(&pair, 400_000, None).expect("traffic between the namespaces");
    eprintln!("received {got} datagrams");
    let iv = sampler.sample().expect("second snapshot");
    let after: BTreeMap<u32, u64> = before.keys().map(|p| (*p, runtime_ns(*p))).collect();
    let steal = steal_ns().saturating_sub(steal_before);

    let mut linker = Linker::default();
    linker.observe(&iv);
    let a = Attribution::build(&iv, &model, &linker.links(&iv.napi_identity, &model));
    let mut checked = Vec::new();
    for (dev, pids) in &threads {
        let rows: Vec<_> = a.napi.iter().filter(|n| n.device == *dev).collect();
        let t = rows.iter().map(|n| n.total()).fold((0, 0, 0, 0), |acc, t| {
            (
                acc.0 + t.threaded_polls,
                acc.1 + t.threaded_ns,
                acc.2 + t.ns,
                acc.3 + t.untimed_polls,
            )
        });
        let run: u64 = pids.iter().map(|p| after[p] - before[p]).sum();
        let ratio = t.1 as f64 / run as f64;
        eprintln!(
            "{dev}: threaded polls {} untimed {} poll time {} ns, kthread runtime {run} ns, \
             ratio {ratio:.3}; softirq poll time {} ns; steal {steal} ns",
            t.0, t.3, t.1, t.2
        );
        checked.push((dev.to_string(), t, run, ratio));
    }
    // The receiving end: its kthread runs the polls and nothing else.
    let (_, t, run, ratio) = checked
        .iter()
        .find(|c| c.0 == pair.dev_b)
        .expect("the receiving end");
    assert!(t.0 > 100, "threaded polls {t:?}");
    // The target: within 10%. Before the switch-in's share was counted, 0.82-0.99
    // (the scheduler's pick and switch, about 1.8 us per switch-in here, are in the
    // kthread's run time before its sched_switch event); with it, 1.020-1.095 on this VM,
    // and 1.14 once in CI until switch-ins that preempt (where the scheduler charges the
    // kthread from its wakeup) were left out of it: then 0.992-1.058.
    // Above 1: the probe's clock runs on while the hypervisor steals the vCPU, a task's run
    // time (paravirt steal accounting) does not, so the interval's steal (all CPUs: an upper
    // bound of the kthread's share) is allowed on top.
    assert!(
        *ratio >= 0.9 && t.1 as f64 <= 1.1 * (run + steal) as f64,
        "threaded poll time {} ns vs kthread runtime {run} ns (ratio {ratio:.3}), steal \
         {steal} ns in the interval",
        t.1
    );
    // Task time is not softirq time: every CPU's NET_RX split still adds up (polls in softirq
    // + overhead), and the threaded time is in the CPU rows apart from it.
    let threaded_cpus: u64 = a.cpus.iter().map(|c| c.threaded_ns).sum();
    let threaded_rows: u64 = a.napi.iter().map(|n| n.total().threaded_ns).sum();
    assert_eq!(threaded_cpus, threaded_rows);

    // No kthreads, no sched_switch program.
    for (ns, dev) in [(&pair.ns_a, &pair.dev_a), (&pair.ns_b, &pair.dev_b)] {
        set_threaded(ns, dev, false).expect("threaded off");
    }
    drop(pair);
    std::thread::sleep(std::time::Duration::from_millis(200));
    sampler.sample().expect("third snapshot");
    let (_, attached) = sampler.probe().napi_threads();
    if kthreads::napi_kthreads(root).is_empty() {
        assert!(
            !attached,
            "sched_switch stays attached without NAPI kthreads"
        );
    }
}

/// A UDP socket with SO_BUSY_POLL (the socket option; the host's net.core.busy_read is not
/// touched) receiving over the veth busy-polls its instance from the receiving task: those
/// polls are timed (from `__napi_busy_loop`'s entry or the previous poll in the loop) and
/// shown as busy-poll, not as softirq time. Where the kernel refuses the fentry programs that
/// mark a busy loop's start (this development host answers EPERM), the polls are still
/// counted, untimed, and meta says why.
#[test]
#[ignore = "needs root"]
fn busy_polls_are_timed_and_shown_as_busy_poll() {
    require_root();
    let root = Path::new("/");
    let model = SystemModel::read(root, &ReadOptions::default()).expect("system model");
    let probe = Probe::load(&ProbeOptions::default()).expect("loading the probes");
    let timed = probe.status.busy_poll.active;
    let why = probe.status.busy_poll.detail.clone();
    let pair = VethPair::create().expect("creating the veth pair");
    let mut sampler = Sampler::new(probe, root).expect("first snapshot");
    let got = udp_flood(&pair, 200_000, Some(200)).expect("traffic between the namespaces");
    let iv = sampler.sample().expect("second snapshot");
    let mut linker = Linker::default();
    linker.observe(&iv);
    let a = Attribution::build(&iv, &model, &linker.links(&iv.napi_identity, &model));
    let t = a
        .napi
        .iter()
        .filter(|n| n.device == pair.dev_b)
        .map(|n| n.total())
        .fold((0, 0, 0), |acc, t| {
            (
                acc.0 + t.busy_polls,
                acc.1 + t.busy_poll_ns,
                acc.2 + t.untimed_polls,
            )
        });
    eprintln!(
        "received {got}; busy polls {} ({} ns), untimed {}",
        t.0, t.1, t.2
    );
    if !timed {
        assert!(why.contains("fentry"), "meta must say why: {why}");
        assert!(t.2 > 0, "busy polls not even counted: {t:?}");
        assert_eq!(t.1, 0, "busy polls timed without their programs: {t:?}");
        eprintln!("busy-poll timing off on this kernel ({why}): polls counted untimed");
        return;
    }
    assert!(t.0 > 0 && t.1 > 0, "no timed busy polls: {t:?}");
    let report = balancer::report::Report::build(
        &a,
        &model,
        &sampler.probe().status,
        &balancer::system::netdev::NetdevStatus::inactive("not asked"),
        false,
        None,
    );
    let v = serde_json::to_value(&report).expect("report JSON");
    let row = v["napi"]
        .as_array()
        .expect("napi rows")
        .iter()
        .find(|n| n["device"] == pair.dev_b.as_str())
        .expect("the receiving veth's row");
    assert!(row["busy_polls"].as_u64() > Some(0), "{row}");
    assert!(row["busy_poll_ns"].as_u64() > Some(0), "{row}");
    assert_eq!(v["meta"]["methods"]["busy_poll"]["active"], true);
}
