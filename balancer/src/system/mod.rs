//! The system model: CPUs, NUMA nodes, IRQs and the devices, drivers, netdevs and queues behind
//! them, read from `/proc` and `/sys` under a root path so that every part can be built from a
//! fixture tree.
//!
//! [`SystemModel::read`] builds the whole picture; [`SystemModel::reread`] builds it again,
//! keeping what only hot-plug changes while what it depends on stays the same;
//! [`interrupts`] and [`stat`] are the cheap per-interval counters.
//!
//! Missing optional files are not errors (old kernels have no `effective_affinity`, non-NUMA
//! kernels no `node` directory, offline CPUs no `topology`); malformed contents are skipped and
//! named in [`SystemModel::warnings`]. Only a missing `proc/interrupts` fails the read.
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::cpumask::CpuSet;

mod cpu;
mod fsutil;
pub mod interrupts;
mod irq;
pub mod kthreads;
mod naming;
pub mod netdev;
mod pci;
pub mod proximity;
pub mod stat;
pub mod topology;

pub use proximity::Proximity;
use proximity::ProximityTarget;

/// Errors reading the system. Every I/O variant names its path.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// Text handed in without a path (the `parse` functions).
    #[error("parsing {what}: {message}")]
    Format { what: &'static str, message: String },
}

impl SystemError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> SystemError {
        SystemError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What to apply on top of what the kernel reports.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Parsed proximity override file (birq's format), see [`proximity`].
    pub proximity: Option<Proximity>,
}

/// One picture of the machine.
#[derive(Debug, Clone, Serialize)]
pub struct SystemModel {
    pub root: PathBuf,
    /// `proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// Every present CPU, online or not.
    pub cpus: BTreeMap<u32, Cpu>,
    /// The kernel's `nr_cpu_ids` (highest possible CPU + 1): the width to print masks with.
    pub nr_cpu_ids: u32,
    pub nodes: BTreeMap<u32, Node>,
    /// `sys/devices/system/cpu/isolated` plus the CPU list of `isolcpus=` on the command line.
    pub isolated: CpuSet,
    /// `sys/devices/system/cpu/nohz_full`, or `nohz_full=` on the command line.
    pub nohz_full: CpuSet,
    /// Numbered IRQs of `proc/interrupts`.
    pub irqs: BTreeMap<u32, Irq>,
    /// PCI devices by full address ("0000:00:03.0").
    pub pci: BTreeMap<String, PciDevice>,
    pub netdevs: BTreeMap<String, NetDev>,
    /// Virtio devices ("virtio2") and what sits on them.
    pub virtio: BTreeMap<String, VirtioDevice>,
    /// Skipped or malformed input, one line per kind, with a count and the first example.
    pub warnings: Vec<String>,
    /// What the next [`SystemModel::reread`] may keep.
    #[serde(skip)]
    fixed: Option<Arc<Fixed>>,
}

/// The parts of the model only hot-plug changes: CPU topology and nodes, PCI and virtio
/// devices (before netdevs and proximity rules are joined to them), each IRQ's node and
/// whether it is managed, with the warnings their reading gave and the key they were read
/// under. In the kernel VM the first three were 35-50% of the daemon's model read.
#[derive(Debug)]
struct Fixed {
    key: FixedKey,
    cpu: cpu::CpuInfo,
    pci: BTreeMap<String, PciDevice>,
    legacy: pci::LegacyIrqs,
    virtio: BTreeMap<String, VirtioDevice>,
    /// Each IRQ's node and whether it is managed: set when it is allocated.
    irqs: BTreeMap<u32, irq::Fixed>,
    warn: fsutil::Warnings,
}

/// The fixed parts of this read: kept from the last one, or read now.
enum Parts {
    Kept(Arc<Fixed>),
    Fresh(Box<Fixed>),
}

impl Parts {
    fn get(&self) -> &Fixed {
        match self {
            Parts::Kept(f) => f,
            Parts::Fresh(f) => f,
        }
    }
}

/// What a hot-plug changes and the fixed parts depend on: the numbered IRQs of
/// `proc/interrupts` with their chips and actions (a device bound, unbound or given other
/// vectors), the CPU lists (hotplug, isolation) and the netdevs' names (hotplug, renames).
#[derive(Debug, PartialEq, Eq)]
struct FixedKey {
    irqs: Vec<(u32, String, Vec<String>)>,
    cpu_lists: Vec<Option<String>>,
    netdevs: Vec<String>,
}

impl FixedKey {
    fn read(fs: &fsutil::Root, table: &interrupts::Interrupts) -> FixedKey {
        // What fails here fails in the full read too, which reports it.
        let mut quiet = fsutil::Warnings::default();
        let mut netdevs = fs.list("sys/class/net", &mut quiet);
        netdevs.sort();
        FixedKey {
            irqs: table
                .rows
                .iter()
                .filter_map(|r| match r.id {
                    interrupts::RowId::Irq(n) => Some((n, r.chip.clone(), r.actions.clone())),
                    interrupts::RowId::Named(_) => None,
                })
                .collect(),
            cpu_lists: ["present", "online", "possible", "isolated", "nohz_full"]
                .iter()
                .map(|f| fs.read_opt(format!("sys/devices/system/cpu/{f}"), &mut quiet))
                .collect(),
            netdevs,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cpu {
    pub(crate) id: u32,
    pub online: bool,
    pub node: Option<u32>,
    pub package: Option<u32>,
    pub core: Option<u32>,
    /// SMT siblings including this CPU; empty when unknown (offline CPUs have no topology).
    pub thread_siblings: CpuSet,
    /// CPUs sharing this CPU's last-level cache, when known.
    pub llc_siblings: Option<CpuSet>,
    /// Level and size ("32768K") of the last-level cache, when known.
    pub llc: Option<CacheInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheInfo {
    pub level: u8,
    size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    id: u32,
    /// `nodeN/cpulist`: the node's online CPUs (the kernel drops offline ones).
    pub cpus: CpuSet,
    /// `nodeN/distance`, keyed by the other node's id.
    pub distances: BTreeMap<u32, u32>,
}

/// Where an IRQ's or device's node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeSource {
    /// `numa_node` / `local_cpulist` as the firmware reported them.
    Firmware,
    /// A proximity override rule.
    Override,
    /// No device, or firmware said -1 and no rule matched.
    #[default]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Irq {
    pub(crate) number: u32,
    /// e.g. "PCI-MSIX-0000:00:03.0", "IO-APIC", "IR-PCI-MSI-0000:3b:00.0".
    pub chip: String,
    /// e.g. "1-edge".
    hwirq: String,
    /// Action names, e.g. ["virtio2-input.0"].
    pub actions: Vec<String>,
    pub smp_affinity: Option<CpuSet>,
    pub effective_affinity: Option<CpuSet>,
    /// `proc/irq/N/node` as the kernel says.
    pub kernel_node: Option<i32>,
    /// PCI address, when known.
    pub device: Option<String>,
    pub driver: Option<String>,
    pub netdev: Option<String>,
    pub queue: Option<Queue>,
    /// The device's NUMA node after proximity overrides; None if unknown or -1.
    pub node: Option<u32>,
    /// CPUs local to the device after overrides.
    pub local_cpus: Option<CpuSet>,
    pub node_source: NodeSource,
    /// Some(true) when known managed (affinity writes get EIO): from debugfs when mounted,
    /// else by driver convention (nvme I/O queues, virtio-blk/scsi request queues).
    /// None = unknown.
    pub managed: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Queue {
    pub kind: QueueKind,
    pub index: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    Rx,
    Tx,
    RxTx,
    /// A queue that is not a network rx/tx one (nvme, virtio-blk, completion vectors).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    address: String,
    /// `numa_node` as the firmware says; -1 kept.
    pub numa_node: Option<i32>,
    /// `local_cpulist` as the firmware says.
    local_cpus: Option<CpuSet>,
    driver: Option<String>,
    msi_irqs: Vec<u32>,
    pub netdevs: Vec<String>,
    /// Node after proximity overrides; None if unknown or -1.
    pub node: Option<u32>,
    /// Local CPUs after proximity overrides.
    node_cpus: Option<CpuSet>,
    pub node_source: NodeSource,
    /// Virtio devices on this PCI function ("virtio2").
    pub virtio: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetDev {
    pub(crate) name: String,
    /// `ifindex`: how netlink names the device (in its network namespace).
    pub(crate) ifindex: Option<u32>,
    /// PCI address of the device behind it, when there is one.
    pub device: Option<String>,
    pub rx_queues: Vec<RxQueue>,
    /// `threaded` (threaded NAPI, 5.12+).
    pub threaded: Option<bool>,
    /// The virtio device in between, for virtio-net ("virtio2").
    pub virtio: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RxQueue {
    pub(crate) index: u32,
    pub(crate) rps_cpus: Option<CpuSet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtioDevice {
    name: String,
    /// PCI address of the virtio-pci function carrying it.
    pub pci: Option<String>,
    /// "virtio_net", "virtio_blk", ...
    driver: Option<String>,
    netdevs: Vec<String>,
}

impl SystemModel {
    /// Reads the machine under `root` (`/` for the live one).
    pub fn read(root: &Path, opts: &ReadOptions) -> Result<SystemModel, SystemError> {
        Self::read_keeping(root, opts, None)
    }

    /// Reads the same machine again. What only hot-plug changes (CPU topology, PCI and
    /// virtio devices, each IRQ's node and managed state) is kept from this model while the
    /// IRQs, CPU lists and netdevs it depends on are unchanged; affinities, netdevs, queues,
    /// RPS and threaded NAPI are read afresh.
    pub fn reread(&self, opts: &ReadOptions) -> Result<SystemModel, SystemError> {
        Self::read_keeping(&self.root, opts, self.fixed.as_ref())
    }

    fn read_keeping(
        root: &Path,
        opts: &ReadOptions,
        kept: Option<&Arc<Fixed>>,
    ) -> Result<SystemModel, SystemError> {
        let mut warn = fsutil::Warnings::default();
        let fs = fsutil::Root::new(root);
        let text = fs.read_required("proc/interrupts")?;
        let table = interrupts::parse(&text);
        if table.skipped > 0 {
            warn.add(
                "proc/interrupts: malformed lines skipped",
                table.skipped,
                None,
            );
        }
        let key = FixedKey::read(&fs, &table);
        let kept = kept.filter(|f| f.key == key).cloned();
        // The per-IRQ files are most of the cost on big machines: read them on other threads
        // while this one does the rest. An IRQ's node stays what it was while the IRQ does.
        let job = irq::AffinityJob::new(&fs, kept.is_none(), &mut warn);
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (0..job.helpers())
                .map(|_| scope.spawn(|| job.work()))
                .collect();
            let kernel = fs
                .read_opt("proc/sys/kernel/osrelease", &mut warn)
                .map(|s| s.trim().to_string());
            let held = match kept {
                Some(f) => Parts::Kept(f),
                None => {
                    let mut warn = fsutil::Warnings::default();
                    let cpu = cpu::read(&fs, &mut warn);
                    let (mut pci, legacy) = pci::read_pci(&fs, &mut warn);
                    let virtio = pci::read_virtio(&fs, &mut pci, &mut warn);
                    Parts::Fresh(Box::new(Fixed {
                        key,
                        cpu,
                        pci,
                        legacy,
                        virtio,
                        irqs: BTreeMap::new(),
                        warn,
                    }))
                }
            };
            let fixed = held.get();
            warn.merge(fixed.warn.clone());
            let mut pci = fixed.pci.clone();
            let netdevs = pci::read_netdevs(&fs, &mut pci, &fixed.virtio, &mut warn);
            pci::apply_proximity(
                &mut pci,
                &fixed.cpu.nodes,
                opts.proximity.as_ref(),
                &mut warn,
            );

            let mut model = SystemModel {
                root: root.to_path_buf(),
                kernel,
                cpus: fixed.cpu.cpus.clone(),
                nr_cpu_ids: fixed.cpu.nr_cpu_ids,
                nodes: fixed.cpu.nodes.clone(),
                isolated: fixed.cpu.isolated.clone(),
                nohz_full: fixed.cpu.nohz_full.clone(),
                irqs: BTreeMap::new(),
                pci,
                netdevs,
                virtio: fixed.virtio.clone(),
                warnings: Vec::new(),
                fixed: None,
            };
            // Help with what is left, then collect; a helper that panicked (a bug) leaves
            // its chunk to be read again in irq::read.
            let mut parts = vec![job.work()];
            parts.extend(helpers.into_iter().filter_map(|h| h.join().ok()));
            let mut affinities = irq::Affinities::with_capacity(table.rows.len());
            for (part, part_warn) in parts {
                affinities.extend(part);
                warn.merge(part_warn);
            }
            let kept_irqs = match &held {
                Parts::Kept(f) => Some(&f.irqs),
                Parts::Fresh(_) => None,
            };
            model.irqs = irq::read(
                &fs,
                &table,
                &model,
                &fixed.legacy,
                kept_irqs,
                &job,
                &mut affinities,
                &mut warn,
            );
            model.warnings = warn.into_lines();
            model.fixed = Some(match held {
                Parts::Kept(f) => f,
                Parts::Fresh(mut f) => {
                    f.irqs = model
                        .irqs
                        .iter()
                        .map(|(n, i)| {
                            let fixed = irq::Fixed {
                                node: i.kernel_node,
                                managed: i.managed,
                            };
                            (*n, fixed)
                        })
                        .collect();
                    Arc::from(f)
                }
            });
            Ok(model)
        })
    }

    pub fn online_cpus(&self) -> CpuSet {
        self.cpus
            .values()
            .filter(|c| c.online)
            .map(|c| c.id)
            .collect()
    }

    pub fn node_of_cpu(&self, cpu: u32) -> Option<u32> {
        self.cpus.get(&cpu).and_then(|c| c.node)
    }

    /// All CPUs of the model (present), online or not.
    fn present_cpus(&self) -> CpuSet {
        self.cpus.keys().copied().collect()
    }

    /// IRQs of one netdev, by queue then number.
    pub fn irqs_of_netdev<'a>(&'a self, netdev: &'a str) -> impl Iterator<Item = &'a Irq> + 'a {
        self.irqs
            .values()
            .filter(move |irq| irq.netdev.as_deref() == Some(netdev))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::test_support::copy_dir;

    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vm-4cpu-2node");
        copy_dir(&src, &root);
        (dir, root)
    }

    fn kept(a: &SystemModel, b: &SystemModel) -> bool {
        match (&a.fixed, &b.fixed) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => false,
        }
    }

    /// On an unchanged machine a reread is what a fresh read gives.
    #[test]
    fn a_reread_is_a_fresh_read() {
        let (_dir, root) = fixture();
        let opts = ReadOptions::default();
        let first = SystemModel::read(&root, &opts).unwrap();
        let again = first.reread(&opts).unwrap();
        assert!(kept(&first, &again));
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&first).unwrap()
        );
    }

    /// Affinities and RPS are read every time; a device's node only after a hot-plug
    /// changed what the fixed parts depend on (here: a CPU going offline, a new netdev).
    #[test]
    fn fixed_parts_are_kept_until_a_hotplug() {
        let (_dir, root) = fixture();
        let opts = ReadOptions::default();
        let first = SystemModel::read(&root, &opts).unwrap();
        let nic = "0000:81:00.0";
        assert_eq!(first.pci[nic].numa_node, Some(1));
        assert_eq!(first.irqs[&36].kernel_node, Some(1));
        fs::write(root.join("proc/irq/36/smp_affinity"), "8\n").unwrap();
        fs::write(root.join("proc/irq/36/node"), "0\n").unwrap();
        fs::write(
            root.join("sys/bus/pci/devices/0000:81:00.0/numa_node"),
            "0\n",
        )
        .unwrap();
        let again = first.reread(&opts).unwrap();
        assert!(kept(&first, &again));
        assert_eq!(again.irqs[&36].smp_affinity, Some(CpuSet::from_cpus([3])));
        assert_eq!(again.pci[nic].numa_node, Some(1));
        assert_eq!(again.irqs[&36].kernel_node, Some(1));

        fs::write(root.join("sys/devices/system/cpu/online"), "0-2\n").unwrap();
        let after = again.reread(&opts).unwrap();
        assert!(!kept(&again, &after));
        assert_eq!(after.pci[nic].numa_node, Some(0));
        assert_eq!(after.irqs[&36].kernel_node, Some(0));
        assert!(!after.cpus[&3].online);
        let settled = after.reread(&opts).unwrap();
        assert!(kept(&after, &settled));

        fs::create_dir(root.join("sys/class/net/eth2")).unwrap();
        let plugged = settled.reread(&opts).unwrap();
        assert!(!kept(&settled, &plugged));
        assert!(plugged.netdevs.contains_key("eth2"));
    }
}
