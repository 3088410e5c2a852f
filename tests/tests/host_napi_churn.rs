//! NAPI lifecycle, as root on the running kernel: instances created and deleted in cycles
//! (veth pairs in a namespace the test creates) under one `balancer report`, and a NAPI map
//! too small for the instances alive at once.
//!
//! Each receiving veth gets a few raw frames of a local-experimental ethertype from its
//! peer (IPv6 off in the namespace, so nothing else crosses), which its NAPI instance polls
//! exactly once per frame batch; the frames are then dropped by the stack.
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use balancer::{
    attribution::Attribution,
    probe::{Probe, ProbeOptions},
    sample::Sampler,
    system::{ReadOptions, SystemModel},
};
use balancer_common::ERR_NAPI_FULL;
use balancer_tests::{balancer_bin, enter_netns, require_root, wait_attached};

const CYCLES: usize = 20;
const PER_CYCLE: usize = 100;
const FRAMES: u64 = 3;

/// A namespace deleted on drop, with every veth inside it.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("bal-churn-{tag}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        // Links coming up send IPv6 router and neighbour solicitations: none here, so each
        // receiving instance polls only the test's frames.
        run(Command::new("ip").args([
            "netns",
            "exec",
            &ns.0,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "-w",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]))?;
        Ok(ns)
    }

    /// Runs `ip -batch` inside the namespace.
    fn batch(&self, lines: &[String]) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", &self.0, "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ip -batch")?;
        let mut stdin = child.stdin.take().context("ip's stdin")?;
        stdin.write_all(lines.join("\n").as_bytes())?;
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `n` veth pairs `<prefix>a<i>` -> `<prefix>b<i>` in `ns`, up, the b ends polling through
/// NAPI (GRO on) and the a ends handing them every frame (no TSO), `FRAMES` raw frames sent
/// through each pair; returns the receiving ends' names.
fn cycle(ns: &Netns, prefix: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("{prefix}a{i}"), format!("{prefix}b{i}")))
        .collect();
    let mut lines = Vec::new();
    for (a, b) in &pairs {
        lines.push(format!("link add {a} type veth peer name {b}"));
    }
    for (a, b) in &pairs {
        lines.push(format!("link set {a} up"));
        lines.push(format!("link set {b} up"));
    }
    ns.batch(&lines)?;
    let (name, list) = (ns.0.clone(), pairs.clone());
    // ethtool and the raw socket from a thread inside the namespace: the children it
    // starts are in it too, without `ip netns exec` per device.
    std::thread::spawn(move || -> anyhow::Result<()> {
        enter_netns(&name)?;
        for (a, b) in &list {
            run(Command::new("ethtool").args(["-K", a, "tso", "off", "gso", "off"]))?;
            run(Command::new("ethtool").args(["-K", b, "gro", "on"]))?;
        }
        send_frames(&list)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))??;
    Ok(pairs.into_iter().map(|(_, b)| b).collect())
}

/// `FRAMES` broadcast frames out of each pair's a end, from a packet socket.
fn send_frames(pairs: &[(String, String)]) -> anyhow::Result<()> {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0xba, 0x1a, 0x02]);
    // IEEE 802 local experimental ethertype: no protocol handler takes it.
    frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let mut result = Ok(());
    'pairs: for (a, _) in pairs {
        let cname = CString::new(a.as_str())?;
        // SAFETY: a valid NUL-terminated name, only read.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            result = Err(anyhow::anyhow!("{a}: {}", std::io::Error::last_os_error()));
            break;
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for _ in 0..FRAMES {
            // SAFETY: the buffer and the address live across the call, lengths are theirs.
            let sent = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if sent != frame.len() as isize {
                result = Err(anyhow::anyhow!(
                    "sending on {a}: {}",
                    std::io::Error::last_os_error()
                ));
                break 'pairs;
            }
        }
    }
    // SAFETY: our own fd, closed once.
    unsafe { libc::close(fd) };
    result
}

/// 2,000 NAPI instances come and go, 100 at a time, under one `balancer report`: the report
/// counts every instance under its own device (reused `napi_struct` addresses get their new
/// identity), with exactly the frames each received, while the kernel map (1,024 entries
/// at least, a few hundred alive at once) never fills: pruned instances keep their counts in
/// the probe until the report ends.
#[test]
#[ignore = "needs root"]
fn napi_churn_keeps_identities_and_the_map_bounded() {
    require_root();
    let ns = Netns::create("c").expect("namespace");
    let mut report = Command::new(balancer_bin())
        .args(["report", "--json", "--duration", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting balancer report");
    wait_attached(&mut report, Duration::from_secs(60)).expect("report attached");

    let tag = format!("{:x}", std::process::id() % 0xffff);
    let mut receivers = BTreeSet::new();
    for c in 0..CYCLES {
        let started = Instant::now();
        let prefix = format!("z{tag}{c:02}");
        let devs = cycle(&ns, &prefix, PER_CYCLE).expect("a cycle of veth pairs");
        ns.batch(
            &(0..PER_CYCLE)
                .map(|i| format!("link del {prefix}a{i}"))
                .collect::<Vec<_>>(),
        )
        .expect("deleting the cycle's pairs");
        receivers.extend(devs);
        // At most one cycle a second, so that the instances alive at once in the kernel
        // map (a cycle's, and those not yet idle for the probe's prune reads, one a second)
        // stay well under its floor, however fast this machine creates devices.
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }

    // SAFETY: plain kill(2) on our child: SIGINT reports early.
    unsafe { libc::kill(report.id() as i32, libc::SIGINT) };
    let out = report.wait_with_output().expect("report output");
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let events: Vec<&str> = json["meta"]["events"]
        .as_array()
        .expect("meta.events")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        !events.iter().any(|e| e.contains("NAPI map was full")),
        "{events:?}"
    );

    let mut seen: BTreeMap<String, Vec<(Option<u64>, u64)>> = BTreeMap::new();
    for row in json["napi"].as_array().expect("napi rows") {
        let dev = row["device"].as_str().unwrap_or_default();
        if dev.starts_with(&format!("z{tag}")) {
            seen.entry(dev.to_string()).or_default().push((
                row["napi_id"].as_u64(),
                row["packets"].as_u64().unwrap_or(0),
            ));
        }
    }
    let missing: Vec<&String> = receivers
        .iter()
        .filter(|d| !seen.contains_key(*d))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} receiving instances not in the report, e.g. {:?}",
        missing.len(),
        receivers.len(),
        &missing[..missing.len().min(5)]
    );
    let stray: Vec<&String> = seen.keys().filter(|d| !receivers.contains(*d)).collect();
    assert!(stray.is_empty(), "instances under other names: {stray:?}");
    let mut ids = BTreeSet::new();
    for (dev, rows) in &seen {
        assert_eq!(rows.len(), 1, "{dev}: {rows:?}");
        let (napi_id, packets) = rows[0];
        assert_eq!(packets, FRAMES, "{dev} polled {packets} packets");
        if let Some(id) = napi_id {
            assert!(ids.insert(id), "napi id {id} of {dev} reported twice");
        }
    }
    let pruned = json["meta"]["coverage"]["napi_pruned"]
        .as_u64()
        .expect("meta.coverage.napi_pruned");
    assert!(
        pruned as usize >= CYCLES * PER_CYCLE / 2,
        "only {pruned} instances pruned of {}",
        CYCLES * PER_CYCLE
    );
}

/// A NAPI map smaller than the instances polling at once loses polls, and says so: the
/// probe's map-full count and the interval's events name it.
#[test]
#[ignore = "needs root"]
fn a_full_napi_map_is_reported() {
    require_root();
    let ns = Netns::create("f").expect("namespace");
    let opts = ProbeOptions {
        max_napi: 64,
        ..ProbeOptions::default()
    };
    let probe = Probe::load(&opts).expect("loading the probes");
    let root = Path::new("/");
    let model = SystemModel::read(root, &ReadOptions::default()).expect("system model");
    let mut sampler = Sampler::new(probe, root).expect("first snapshot");
    let tag = format!("y{:x}", std::process::id() % 0xffff);
    let devs = cycle(&ns, &tag, 100).expect("veth pairs");
    let iv = sampler.sample().expect("second snapshot");
    let lost = iv.probe_errors[ERR_NAPI_FULL as usize];
    assert!(lost > 0, "100 instances in a 64-entry map lost nothing");
    let counted = iv
        .napi_identity
        .values()
        .filter(|i| devs.contains(&i.device))
        .count();
    assert!(counted <= 64, "{counted} instances in a 64-entry map");
    let a = Attribution::build(&iv, &model, &BTreeMap::new());
    assert!(
        a.events.iter().any(|e| e.contains("NAPI map was full")),
        "{:?}",
        a.events
    );
}
