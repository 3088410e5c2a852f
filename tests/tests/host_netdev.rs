//! Host integration tests of the netdev generic netlink family, as root on the running kernel
//! (6.8+), on a veth pair between two namespaces the test creates.
use std::{collections::BTreeSet, ffi::CString, path::Path};

use anyhow::bail;
use balancer::{
    probe::{Probe, ProbeOptions},
    sample::Sampler,
    system::netdev::{self, Netdev, NetdevDump, QueueType},
};
use balancer_tests::{VethPair, enter_netns, require_root, set_threaded};

/// The dump and the ifindex of `dev`, both as seen inside namespace `ns` (netlink answers
/// for the namespace of the thread that asks, so ask from a thread inside it).
fn dump_in(ns: &str, dev: &str) -> anyhow::Result<(NetdevDump, u32)> {
    let (ns, dev) = (ns.to_string(), dev.to_string());
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        let name = CString::new(dev.clone())?;
        // SAFETY: a valid NUL-terminated name; the call only reads it.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!(
                "{dev} not found in {ns}: {}",
                std::io::Error::last_os_error()
            );
        }
        match netdev::read()? {
            Netdev::Available(d) => Ok((d, ifindex)),
            Netdev::Unavailable(why) => bail!("netdev family unavailable on this host: {why}"),
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netlink thread panicked"))?
}

/// napi-get lists the veth's NAPI instance with the veth's ifindex and no IRQ, queue-get its
/// rx queue; with `threaded` on, each instance has a pid whose comm is `napi/<dev>-<id>`.
#[test]
#[ignore = "needs root"]
fn napi_get_lists_the_veths_instances_and_their_threads() {
    require_root();
    let pair = VethPair::create().expect("creating the veth pair");
    let (dump, ifindex) = dump_in(&pair.ns_b, &pair.dev_b).expect("netlink dump");
    let own: Vec<_> = dump.napi.iter().filter(|n| n.ifindex == ifindex).collect();
    assert!(
        !own.is_empty(),
        "no NAPI instance with ifindex {ifindex} ({}); dump: {dump:?}",
        pair.dev_b
    );
    assert!(
        own.iter().all(|n| n.irq.is_none() && n.pid.is_none()),
        "{own:?}"
    );
    assert!(
        dump.queues
            .iter()
            .any(|q| q.ifindex == ifindex && q.kind == QueueType::Rx && q.id == 0),
        "rx queue 0 of {}: {dump:?}",
        pair.dev_b
    );

    set_threaded(&pair.ns_b, &pair.dev_b, true).expect("threaded on");
    let (dump, _) = dump_in(&pair.ns_b, &pair.dev_b).expect("netlink dump");
    let own: Vec<_> = dump.napi.iter().filter(|n| n.ifindex == ifindex).collect();
    assert!(!own.is_empty());
    for n in own {
        let pid = n
            .pid
            .unwrap_or_else(|| panic!("threaded instance without pid: {n:?}"));
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/comm: {e}"));
        assert!(
            comm.trim() == format!("napi/{}-{}", pair.dev_b, n.id),
            "pid {pid} of NAPI {}: comm {comm:?}",
            n.id
        );
    }
}

/// The probe's NAPI instances carry the napi_id netlink knows them by: the join key of the
/// netlink links. With `threaded` on, the join hands the kthread pid to the identity.
#[test]
#[ignore = "needs root"]
fn probe_napi_ids_join_netlinks() {
    require_root();
    let probe = Probe::load(&ProbeOptions::default()).expect("loading the probes");
    if !probe.status.napi_irq_exact.active {
        eprintln!(
            "probe_napi_ids_join_netlinks: skipped, no napi_struct fields from BTF: {}",
            probe.status.napi_irq_exact.detail
        );
        return;
    }
    let pair = VethPair::create().expect("creating the veth pair");
    let mut sampler = Sampler::new(probe, Path::new("/")).expect("first snapshot");
    pair.tcp_transfer(16 << 20)
        .expect("traffic between the namespaces");
    let mut iv = sampler.sample().expect("second snapshot");

    set_threaded(&pair.ns_b, &pair.dev_b, true).expect("threaded on");
    let (dump, ifindex) = dump_in(&pair.ns_b, &pair.dev_b).expect("netlink dump");
    let netlink_ids: BTreeSet<u32> = dump
        .napi
        .iter()
        .filter(|n| n.ifindex == ifindex)
        .map(|n| n.id)
        .collect();
    let probe_ids: BTreeSet<u32> = iv
        .napi_identity
        .values()
        .filter(|i| i.device == pair.dev_b)
        .filter_map(|i| i.napi_id)
        .collect();
    assert!(
        !probe_ids.is_empty(),
        "the probe saw no polls of {}",
        pair.dev_b
    );
    assert!(
        probe_ids.is_subset(&netlink_ids),
        "probe napi ids {probe_ids:?}, netlink's {netlink_ids:?}"
    );

    iv.add_netdev(&dump);
    for ident in iv.napi_identity.values().filter(|i| i.device == pair.dev_b) {
        let pid = ident.thread_pid.expect("threaded instance has its kthread");
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert!(comm.starts_with("napi/"), "pid {pid}: {comm:?}");
    }
}
