//! The system model on fixture roots: the captured host, the synthesised kernel VM and a
//! generated 256-CPU / 1500-IRQ machine.
use std::path::{Path, PathBuf};

use balancer::cpumask::CpuSet;
use balancer::system::interrupts::{self, RowId};
use balancer::system::{
    NodeSource, QueueKind, ReadOptions, SystemError, SystemModel, proximity, stat, topology,
};

#[path = "support/synth.rs"]
mod synth;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn read(root: &Path) -> SystemModel {
    SystemModel::read(root, &ReadOptions::default()).unwrap()
}

fn with_rules(root: &Path, rules: &str) -> SystemModel {
    let (prox, errors) = proximity::parse(rules);
    assert!(errors.is_empty(), "{errors:?}");
    SystemModel::read(
        root,
        &ReadOptions {
            proximity: Some(prox),
        },
    )
    .unwrap()
}

fn irq_by_action<'a>(m: &'a SystemModel, action: &str) -> &'a balancer::system::Irq {
    m.irqs
        .values()
        .find(|i| i.actions.iter().any(|a| a == action))
        .unwrap_or_else(|| panic!("no irq {action}"))
}

/// Every text line of `balancer topology` fits 100 columns.
fn assert_fits(m: &SystemModel) {
    for line in topology::render(m).lines() {
        assert!(line.chars().count() <= 100, "too wide: {line}");
    }
    serde_json::to_string(m).unwrap();
}

/// Every hex mask file under proc/irq prints back as read.
fn assert_masks_round_trip(m: &SystemModel) {
    let mut checked = 0;
    for n in m.irqs.keys() {
        for file in ["smp_affinity", "effective_affinity"] {
            let path = m.root.join(format!("proc/irq/{n}/{file}"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let text = text.trim();
            let (set, width) = CpuSet::parse_mask_with_width(text).unwrap();
            assert_eq!(set.to_mask_string(width), text, "{}", path.display());
            assert_eq!(set.to_mask_string(m.nr_cpu_ids), text, "{}", path.display());
            let list =
                std::fs::read_to_string(m.root.join(format!("proc/irq/{n}/{file}_list"))).unwrap();
            assert_eq!(set.to_list_string(), list.trim());
            assert_eq!(CpuSet::parse_list(&list).unwrap(), set);
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn host_fixture() {
    let m = read(&fixture("host"));
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.kernel.as_deref(), Some("6.18.44-fc-v509"));
    assert_eq!(m.cpus.len(), 2);
    assert_eq!(m.online_cpus(), CpuSet::from_cpus([0, 1]));
    assert_eq!(m.node_of_cpu(1), Some(0));
    assert_eq!(m.nr_cpu_ids, 2);
    let table = interrupts::read(&fixture("host")).unwrap();
    let numbered = table
        .rows
        .iter()
        .filter(|r| matches!(r.id, RowId::Irq(_)))
        .count();
    assert_eq!(m.irqs.len(), numbered);

    let rx = irq_by_action(&m, "virtio2-input.0");
    assert_eq!(rx.device.as_deref(), Some("0000:00:03.0"));
    assert_eq!(rx.driver.as_deref(), Some("virtio_net"));
    assert_eq!(rx.netdev.as_deref(), Some("eth0"));
    assert_eq!(
        rx.queue.map(|q| (q.kind, q.index)),
        Some((QueueKind::Rx, 0))
    );
    assert_eq!(rx.chip, "PCI-MSIX-0000:00:03.0");
    // Firmware says -1 here.
    assert_eq!(rx.node, None);
    assert_eq!(rx.node_source, NodeSource::Unknown);
    assert_eq!(rx.kernel_node, Some(-1));
    assert_eq!(m.pci["0000:00:03.0"].numa_node, Some(-1));
    assert_eq!(m.netdevs["eth0"].device.as_deref(), Some("0000:00:03.0"));
    assert_eq!(m.netdevs["eth0"].virtio.as_deref(), Some("virtio2"));
    assert_eq!(m.netdevs["lo"].device, None);
    let blk = irq_by_action(&m, "virtio1-req.0");
    assert_eq!(blk.driver.as_deref(), Some("virtio_blk"));
    assert_eq!(blk.managed, Some(true));
    assert_eq!(blk.netdev, None);
    let serial = irq_by_action(&m, "ttyS0");
    assert_eq!(
        (serial.device.as_ref(), serial.chip.as_str()),
        (None, "IO-APIC")
    );

    // An override repairs the -1.
    let m = with_rules(&fixture("host"), "0000:00:03.0 node 0\n");
    let rx = irq_by_action(&m, "virtio2-input.0");
    assert_eq!((rx.node, rx.node_source), (Some(0), NodeSource::Override));
    assert_eq!(rx.local_cpus, Some(CpuSet::from_cpus([0, 1])));
    assert_masks_round_trip(&m);
    assert_fits(&m);
    assert_eq!(stat::read(&fixture("host")).unwrap().len(), 2);
}

#[test]
fn vm_fixture() {
    let root = fixture("vm-4cpu-2node");
    let m = read(&root);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.cpus.len(), 4);
    assert_eq!(m.nodes.len(), 2);
    assert_eq!(m.nodes[&1].cpus, CpuSet::from_cpus([2, 3]));
    assert_eq!(
        m.nodes[&0].distances.values().copied().collect::<Vec<_>>(),
        vec![10, 20]
    );
    assert_eq!(m.node_of_cpu(2), Some(1));
    assert_eq!(m.cpus[&3].package, Some(1));
    assert_eq!(m.cpus[&3].llc_siblings, Some(CpuSet::from_cpus([2, 3])));
    assert!(m.nohz_full.is_empty(), "(null) means none");
    assert!(m.isolated.is_empty());

    // The NIC behind the pxb-pcie bridge on node 1; 6.1's "PCI-MSI <hwirq>" chip names carry
    // no address, so msi_irqs maps them.
    for q in 0..4 {
        let irq = irq_by_action(&m, &format!("virtio1-input.{q}"));
        assert_eq!(irq.chip, "PCI-MSI");
        assert_eq!(irq.device.as_deref(), Some("0000:81:00.0"));
        assert_eq!(irq.netdev.as_deref(), Some("eth1"));
        assert_eq!(irq.driver.as_deref(), Some("virtio_net"));
        assert_eq!(
            irq.queue.map(|q| (q.kind, q.index)),
            Some((QueueKind::Rx, q))
        );
        assert_eq!((irq.node, irq.node_source), (Some(1), NodeSource::Firmware));
        assert_eq!(irq.local_cpus, Some(CpuSet::from_cpus([2, 3])));
        assert_eq!(irq.smp_affinity, Some(CpuSet::from_cpus([q])));
        assert_eq!(irq.effective_affinity, Some(CpuSet::from_cpus([q])));
        assert_eq!(irq.managed, None);
        let tx = irq_by_action(&m, &format!("virtio1-output.{q}"));
        assert_eq!(
            tx.queue.map(|q| (q.kind, q.index)),
            Some((QueueKind::Tx, q))
        );
    }
    assert_eq!(m.netdevs["eth1"].rx_queues.len(), 4);
    assert_eq!(m.netdevs["eth1"].threaded, Some(false));
    assert_eq!(m.pci["0000:81:00.0"].netdevs, vec!["eth1"]);
    assert_eq!(m.pci["0000:81:00.0"].virtio, vec!["virtio1"]);
    assert_eq!(m.virtio["virtio1"].pci.as_deref(), Some("0000:81:00.0"));

    // The peer NIC on the root bus: firmware -1.
    let peer = irq_by_action(&m, "virtio0-input.0");
    assert_eq!((peer.netdev.as_deref(), peer.node), (Some("eth0"), None));
    assert_eq!(peer.local_cpus, Some(CpuSet::from_cpus([0, 1, 2, 3])));

    // Several actions on one line; a legacy INTx line found through the device's irq file.
    let pme = &m.irqs[&24];
    assert_eq!(pme.actions, vec!["PCIe PME", "pciehp"]);
    assert_eq!(pme.device.as_deref(), Some("0000:80:00.0"));
    assert_eq!(m.irqs[&16].device.as_deref(), Some("0000:00:1f.3"));
    assert_eq!(m.irqs[&9].device, None);
    assert_eq!(
        irq_by_action(&m, "ahci[0000:00:1f.2]").driver.as_deref(),
        Some("ahci")
    );

    // Proximity: a domain-wide rule and a more specific one.
    let m = with_rules(&root, "0000: node 1\n0000:00:03.0 node 0\n");
    let peer = irq_by_action(&m, "virtio0-input.0");
    assert_eq!(
        (peer.node, peer.node_source),
        (Some(0), NodeSource::Override)
    );
    assert_eq!(peer.local_cpus, Some(CpuSet::from_cpus([0, 1])));
    let main = irq_by_action(&m, "virtio1-input.0");
    assert_eq!(
        (main.node, main.node_source),
        (Some(1), NodeSource::Override)
    );
    // A cpumask rule picks the node that holds the mask.
    let m = with_rules(&root, "0000:00:03.0 cpumask 4\n");
    let peer = irq_by_action(&m, "virtio0-input.0");
    assert_eq!(
        (peer.node, peer.local_cpus.clone()),
        (Some(1), Some(CpuSet::from_cpus([2])))
    );

    assert_masks_round_trip(&m);
    assert_fits(&m);
    let times = stat::read(&root).unwrap();
    assert_eq!(times.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(times[&0].irq, 0);
}

#[test]
fn large_synthetic_machine() {
    let dir = tempfile::tempdir().unwrap();
    let s = synth::write(dir.path(), &synth::Spec::large()).unwrap();
    let m = read(&s.root);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.irqs.len(), 1500);
    assert_eq!(s.irq_count, 1500);
    assert_eq!(m.cpus.len(), 256);
    assert_eq!(m.nr_cpu_ids, 256);
    assert_eq!(m.online_cpus().len(), 250);
    assert_eq!(m.online_cpus(), CpuSet::from_cpus(s.online.iter().copied()));
    // Offline CPUs keep their node through the cpuN/nodeM link; their topology is gone.
    let off = &m.cpus[&255];
    assert!(!off.online);
    assert_eq!(off.node, Some(1));
    assert!(off.thread_siblings.is_empty());
    assert_eq!(m.cpus[&127].thread_siblings, CpuSet::from_cpus([127]));
    assert_eq!(m.cpus[&5].thread_siblings, CpuSet::from_cpus([5, 133]));
    assert_eq!(m.cpus[&133].core, Some(5));
    assert_eq!(m.cpus[&200].package, Some(1));
    assert_eq!(m.cpus[&0].llc.as_ref().map(|c| c.level), Some(3));
    assert_eq!(m.isolated, CpuSet::parse_list("2-3,130-131").unwrap());
    assert_eq!(m.nohz_full, m.isolated);
    assert_eq!(
        m.nodes[&1].cpus,
        CpuSet::parse_list("64-127,192-249").unwrap()
    );

    for (name, (addr, fw, _)) in &s.nics {
        let nd = &m.netdevs[name];
        assert_eq!(nd.device.as_deref(), Some(addr.as_str()));
        assert_eq!(nd.rx_queues.len(), 32);
        assert_eq!(m.pci[addr].numa_node, Some(*fw));
        let queues: Vec<_> = m.irqs_of_netdev(name).filter_map(|i| i.queue).collect();
        assert_eq!(queues.len(), 32, "{name}");
        assert!(queues.iter().all(|q| q.kind == QueueKind::RxTx));
        // Plus the misc/async vector, which has no queue.
        assert_eq!(m.irqs_of_netdev(name).count(), 33, "{name}");
    }
    let mlx = irq_by_action(&m, "mlx5_comp7@pci:0000:af:00.0");
    assert_eq!(mlx.netdev.as_deref(), Some("ens2f0np0"));
    assert_eq!(mlx.queue.map(|q| q.index), Some(7));
    assert_eq!(mlx.chip, "IR-PCI-MSIX-0000:af:00.0");
    let ice = irq_by_action(&m, "ice-ens3f0-TxRx-3");
    assert_eq!((ice.node, ice.node_source), (None, NodeSource::Unknown));
    let nvme = irq_by_action(&m, "nvme3q17");
    assert_eq!(nvme.managed, Some(true));
    assert_eq!(nvme.driver.as_deref(), Some("nvme"));
    assert_eq!(
        nvme.queue.map(|q| (q.kind, q.index)),
        Some((QueueKind::Other, 17))
    );
    assert_eq!(irq_by_action(&m, "nvme3q0").managed, None);
    assert_masks_round_trip(&m);
    assert_fits(&m);

    // The override file repairs the -1 devices.
    let (prox, errors) = balancer::system::Proximity::read(&s.proximity_file).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let m = SystemModel::read(
        &s.root,
        &ReadOptions {
            proximity: Some(prox),
        },
    )
    .unwrap();
    for irq in m.irqs_of_netdev(&s.repaired_nic) {
        assert_eq!((irq.node, irq.node_source), (Some(1), NodeSource::Override));
        assert_eq!(irq.local_cpus.as_ref(), Some(&m.nodes[&1].cpus));
    }
    let (nvme_addr, nvme_node) = &s.cpumask_repaired;
    assert_eq!(m.pci[nvme_addr].node, Some(*nvme_node));
    assert_eq!(m.pci[nvme_addr].node_source, NodeSource::Override);
    // Untouched devices keep the firmware's answer.
    let i40e = irq_by_action(&m, "i40e-ens1f0-TxRx-0");
    assert_eq!(
        (i40e.node, i40e.node_source),
        (Some(0), NodeSource::Firmware)
    );

    let table = interrupts::read(&s.root).unwrap();
    assert_eq!(table.cpus.len(), 250);
    assert_eq!(table.skipped, 0);
    assert_eq!(table.rows.len(), 1500 + 6);
    assert_eq!(stat::read(&s.root).unwrap().len(), 250);
}

#[test]
fn damaged_tree_warns_and_does_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&fixture("vm-4cpu-2node"), root);
    let put = |rel: &str, text: &str| std::fs::write(root.join(rel), text).unwrap();
    let mut text = std::fs::read_to_string(root.join("proc/interrupts")).unwrap();
    text.push_str("garbage line\n 77: 1\n");
    put("proc/interrupts", &text);
    put("proc/irq/36/smp_affinity", "zz\n");
    put("proc/irq/37/node", "x\n");
    put("sys/devices/system/cpu/isolated", "3-1\n");
    put("sys/devices/system/node/node0/distance", "10\n");
    put(
        "sys/devices/pci0000:80/0000:80:00.0/0000:81:00.0/numa_node",
        "one\n",
    );
    std::fs::remove_file(root.join("proc/irq/38/effective_affinity")).unwrap();
    std::fs::remove_file(root.join("proc/irq/38/effective_affinity_list")).unwrap();

    let m = read(root);
    let all = m.warnings.join("\n");
    assert!(
        all.contains("proc/interrupts: malformed lines skipped: 2"),
        "{all}"
    );
    assert!(all.contains("malformed cpu masks: 1"), "{all}");
    assert!(all.contains("proc/irq/36/smp_affinity"), "{all}");
    assert!(all.contains("malformed irq node: 1"), "{all}");
    assert!(all.contains("malformed cpu lists: 1"), "{all}");
    assert!(all.contains("malformed node distances: 1"), "{all}");
    assert!(all.contains("malformed numa_node: 1"), "{all}");
    assert_eq!(m.irqs[&36].smp_affinity, None);
    // A missing optional file (old kernels have no effective_affinity) is not a warning.
    assert_eq!(m.irqs[&38].effective_affinity, None);
    assert_eq!(m.irqs[&38].smp_affinity, Some(CpuSet::from_cpus([1])));
    assert_eq!(m.pci["0000:81:00.0"].numa_node, None);

    // A missing proc/interrupts is an error naming the path.
    std::fs::remove_file(root.join("proc/interrupts")).unwrap();
    match SystemModel::read(root, &ReadOptions::default()) {
        Err(SystemError::Io { path, .. }) => assert!(path.ends_with("proc/interrupts")),
        other => panic!("{other:?}"),
    }
    // An empty root too.
    let empty = tempfile::tempdir().unwrap();
    assert!(SystemModel::read(empty.path(), &ReadOptions::default()).is_err());
}

#[test]
fn minimal_root_with_only_proc_interrupts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join("proc/interrupts"),
        "CPU0\n 5: 1 IO-APIC 5-edge foo\nLOC: 9 Local timer interrupts\n",
    )
    .unwrap();
    let m = read(dir.path());
    assert_eq!(m.irqs.len(), 1);
    assert!(m.cpus.is_empty() && m.nodes.is_empty() && m.pci.is_empty());
    assert_eq!(m.irqs[&5].smp_affinity, None);
    assert_fits(&m);
}

/// Copies files, directories and symlinks (as links).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
