//! PCI devices, virtio devices and netdevs, and the proximity overrides on their nodes.
use std::collections::BTreeMap;
use std::path::Path;

use super::fsutil::{
    Root, Warnings, is_pci_address, parse_int_warn, parse_list_warn, parse_mask_warn,
};
use super::{
    NetDev, Node, NodeSource, PciDevice, Proximity, ProximityTarget, RxQueue, VirtioDevice,
};

const PCI: &str = "sys/bus/pci/devices";
const VIRTIO: &str = "sys/bus/virtio/devices";
const NET: &str = "sys/class/net";

/// The legacy `irq` of each device, for INTx lines that have no msi_irqs entry.
pub(crate) type LegacyIrqs = BTreeMap<u32, Vec<String>>;

pub(crate) fn read_pci(
    fs: &Root,
    warn: &mut Warnings,
) -> (BTreeMap<String, PciDevice>, LegacyIrqs) {
    let mut devices = BTreeMap::new();
    let mut legacy: LegacyIrqs = BTreeMap::new();
    let have_virtio_bus = fs.exists(VIRTIO);
    for address in fs.list(PCI, warn) {
        if !is_pci_address(&address) {
            continue;
        }
        let dir = format!("{PCI}/{address}");
        let numa_node = fs
            .read_opt(format!("{dir}/numa_node"), warn)
            .and_then(|t| parse_int_warn::<i32>(&t, "malformed numa_node", &dir, warn));
        let local_cpus = match fs.read_opt(format!("{dir}/local_cpulist"), warn) {
            Some(t) => parse_list_warn(
                &t,
                "malformed cpu lists",
                &format!("{dir}/local_cpulist"),
                warn,
            ),
            None => fs
                .read_opt(format!("{dir}/local_cpus"), warn)
                .and_then(|t| {
                    parse_mask_warn(
                        &t,
                        "malformed cpu masks",
                        &format!("{dir}/local_cpus"),
                        warn,
                    )
                }),
        };
        let driver = fs.link_name(format!("{dir}/driver"));
        let mut msi_irqs: Vec<u32> = fs
            .list(format!("{dir}/msi_irqs"), warn)
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        msi_irqs.sort_unstable();
        if let Some(irq) = fs
            .read_opt(format!("{dir}/irq"), warn)
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|&irq| irq != 0)
        {
            legacy.entry(irq).or_default().push(address.clone());
        }
        // Virtio children are found through sys/bus/virtio; listing every PCI directory for
        // them is only the fallback for trees captured without it.
        let mut virtio: Vec<String> = if have_virtio_bus {
            Vec::new()
        } else {
            fs.list(&dir, warn)
                .into_iter()
                .filter(|n| {
                    n.strip_prefix("virtio")
                        .is_some_and(|d| d.parse::<u32>().is_ok())
                })
                .collect()
        };
        virtio.sort();
        devices.insert(
            address.clone(),
            PciDevice {
                address,
                numa_node,
                local_cpus,
                driver,
                msi_irqs,
                netdevs: Vec::new(),
                node: None,
                node_cpus: None,
                node_source: NodeSource::Unknown,
                virtio,
            },
        );
    }
    (devices, legacy)
}

/// The last PCI address and the last virtio device among a resolved path's components.
fn pci_and_virtio(path: &Path) -> (Option<String>, Option<String>) {
    let mut pci = None;
    let mut virtio = None;
    for comp in path.iter().filter_map(|c| c.to_str()) {
        if is_pci_address(comp) {
            pci = Some(comp.to_ascii_lowercase());
        } else if comp
            .strip_prefix("virtio")
            .is_some_and(|d| d.parse::<u32>().is_ok())
        {
            virtio = Some(comp.to_string());
        }
    }
    (pci, virtio)
}

/// Virtio devices from `sys/bus/virtio/devices`, plus those only seen as `virtioN` children
/// of a PCI device (trees captured without the bus directory).
pub(crate) fn read_virtio(
    fs: &Root,
    pci: &mut BTreeMap<String, PciDevice>,
    warn: &mut Warnings,
) -> BTreeMap<String, VirtioDevice> {
    let mut out = BTreeMap::new();
    let mut dirs: Vec<(String, String)> = fs
        .list(VIRTIO, warn)
        .into_iter()
        .map(|name| (name.clone(), format!("{VIRTIO}/{name}")))
        .collect();
    for dev in pci.values() {
        for v in &dev.virtio {
            if !dirs.iter().any(|(name, _)| name == v) {
                dirs.push((v.clone(), format!("{PCI}/{}/{v}", dev.address)));
            }
        }
    }
    for (name, dir) in dirs {
        let (pci_addr, _) = pci_and_virtio(&fs.resolve(&dir));
        let mut netdevs = fs.list(format!("{dir}/net"), warn);
        netdevs.sort();
        if let Some(dev) = pci_addr.as_ref().and_then(|a| pci.get_mut(a))
            && !dev.virtio.contains(&name)
        {
            dev.virtio.push(name.clone());
            dev.virtio.sort();
        }
        out.insert(
            name.clone(),
            VirtioDevice {
                name,
                pci: pci_addr,
                driver: fs.link_name(format!("{dir}/driver")),
                netdevs,
            },
        );
    }
    out
}

pub(crate) fn read_netdevs(
    fs: &Root,
    pci: &mut BTreeMap<String, PciDevice>,
    virtio: &BTreeMap<String, VirtioDevice>,
    warn: &mut Warnings,
) -> BTreeMap<String, NetDev> {
    let mut out = BTreeMap::new();
    for name in fs.list(NET, warn) {
        let dir = format!("{NET}/{name}");
        let (mut device, mut via) = if fs.exists(format!("{dir}/device")) {
            pci_and_virtio(&fs.resolve(format!("{dir}/device")))
        } else {
            (None, None)
        };
        // A tree without the links still names the netdev under its virtio device.
        if device.is_none()
            && let Some(v) = virtio.values().find(|v| v.netdevs.contains(&name))
        {
            device = v.pci.clone();
            via = Some(v.name.clone());
        }
        let mut rx_queues: Vec<RxQueue> = fs
            .list(format!("{dir}/queues"), warn)
            .iter()
            .filter_map(|q| q.strip_prefix("rx-")?.parse::<u32>().ok())
            .map(|index| {
                let rel = format!("{dir}/queues/rx-{index}/rps_cpus");
                let rps_cpus = fs
                    .read_opt(&rel, warn)
                    .and_then(|t| parse_mask_warn(&t, "malformed cpu masks", &rel, warn));
                RxQueue { index, rps_cpus }
            })
            .collect();
        rx_queues.sort_by_key(|q| q.index);
        let threaded = fs
            .read_opt(format!("{dir}/threaded"), warn)
            .and_then(|t| parse_int_warn::<u8>(&t, "malformed threaded", &dir, warn))
            .map(|v| v != 0);
        let ifindex = fs
            .read_opt(format!("{dir}/ifindex"), warn)
            .and_then(|t| parse_int_warn::<u32>(&t, "malformed ifindex", &dir, warn));
        if let Some(dev) = device.as_ref().and_then(|a| pci.get_mut(a)) {
            dev.netdevs.push(name.clone());
            dev.netdevs.sort();
        }
        out.insert(
            name.clone(),
            NetDev {
                name,
                ifindex,
                device,
                rx_queues,
                threaded,
                virtio: via,
            },
        );
    }
    out
}

/// Resolves each device's node: a proximity rule wins, else the firmware's `numa_node`
/// unless it is -1.
pub(crate) fn apply_proximity(
    pci: &mut BTreeMap<String, PciDevice>,
    nodes: &BTreeMap<u32, Node>,
    proximity: Option<&Proximity>,
    warn: &mut Warnings,
) {
    for dev in pci.values_mut() {
        let rule = proximity.and_then(|p| p.lookup(&dev.address));
        match rule.map(|r| (&r.target, r.line)) {
            Some((ProximityTarget::Node(n), line)) => {
                if !nodes.contains_key(n) && !nodes.is_empty() {
                    warn.add(
                        "proximity rules naming a node that does not exist",
                        1,
                        Some(format!("line {line}: node {n} for {}", dev.address)),
                    );
                }
                dev.node = Some(*n);
                dev.node_cpus = nodes.get(n).map(|node| node.cpus.clone());
                dev.node_source = NodeSource::Override;
            }
            Some((ProximityTarget::CpuMask(mask), _)) => {
                // The node is the one holding all of the mask, if one does.
                dev.node = nodes
                    .values()
                    .find(|node| mask.is_subset(&node.cpus))
                    .map(|node| node.id)
                    .or_else(|| firmware_node(dev));
                dev.node_cpus = Some(mask.clone());
                dev.node_source = NodeSource::Override;
            }
            None => {
                dev.node = firmware_node(dev);
                // With -1 the kernel reports every CPU as local: keep that (no preference).
                dev.node_cpus = dev.local_cpus.clone().or_else(|| {
                    dev.node
                        .and_then(|n| nodes.get(&n))
                        .map(|node| node.cpus.clone())
                });
                dev.node_source = if dev.node.is_some() {
                    NodeSource::Firmware
                } else {
                    NodeSource::Unknown
                };
            }
        }
    }
}

fn firmware_node(dev: &PciDevice) -> Option<u32> {
    dev.numa_node.and_then(|n| u32::try_from(n).ok())
}
