//! Numbered IRQs: their affinity files and the device, driver, netdev and queue behind them.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fsutil::{Dir, Root, Warnings, parse_int_warn, parse_list_warn, parse_mask_warn};
use super::interrupts::{Interrupts, RowId};
use super::naming::{self, find_pci_address};
use super::pci::LegacyIrqs;
use super::{Irq, NodeSource, SystemModel};
use crate::cpumask::CpuSet;

/// What `proc/irq/N` says.
pub(crate) struct Affinity {
    smp: Option<CpuSet>,
    effective: Option<CpuSet>,
    node: Option<i32>,
}

/// What of an IRQ only its allocation sets, kept between reads of the model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fixed {
    pub(crate) node: Option<i32>,
    pub(crate) managed: Option<bool>,
}

fn read_affinity(dir: &Dir, irq: u32, read_node: bool, warn: &mut Warnings) -> Affinity {
    // The hex files first: one read each on every kernel; the _list forms only as fallback.
    let mask_or_list = |warn: &mut Warnings, name: &str| -> Option<CpuSet> {
        let rel = format!("{irq}/{name}");
        if let Some(text) = dir.read_opt(&rel, warn) {
            return parse_mask_warn(
                &text,
                "malformed cpu masks",
                &format!("proc/irq/{rel}"),
                warn,
            );
        }
        let rel = format!("{rel}_list");
        let text = dir.read_opt(&rel, warn)?;
        parse_list_warn(
            &text,
            "malformed cpu lists",
            &format!("proc/irq/{rel}"),
            warn,
        )
    };
    let smp = mask_or_list(warn, "smp_affinity");
    let effective = mask_or_list(warn, "effective_affinity");
    let node = read_node
        .then(|| dir.read_opt(&format!("{irq}/node"), warn))
        .flatten()
        .and_then(|t| {
            parse_int_warn::<i32>(&t, "malformed irq node", &format!("proc/irq/{irq}"), warn)
        });
    Affinity {
        smp,
        effective,
        node,
    }
}

/// Reading `proc/irq/N` (three files per IRQ, thousands of open/read/close on big machines)
/// is most of the model's cost, so it is shared out: helper threads start on it at once, and
/// the thread building the rest of the model joins in when done, taking chunks off the same
/// counter so that nobody waits for a fixed share.
pub(crate) struct AffinityJob {
    dir: Dir,
    numbers: Vec<u32>,
    next: AtomicUsize,
    /// False when the nodes are kept from the last read.
    read_node: bool,
}

/// Results of one worker.
pub(crate) type AffinityPart = (Vec<(u32, Affinity)>, Warnings);

impl AffinityJob {
    /// Lists `proc/irq` (every N there, without waiting for `proc/interrupts`).
    pub(super) fn new(fs: &Root, read_node: bool, warn: &mut Warnings) -> AffinityJob {
        let mut numbers: Vec<u32> = fs
            .list("proc/irq", warn)
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        numbers.sort_unstable();
        AffinityJob {
            dir: fs.open_dir("proc/irq"),
            numbers,
            next: AtomicUsize::new(0),
            read_node,
        }
    }

    /// How many helper threads are worth starting besides the caller.
    pub(super) fn helpers(&self) -> usize {
        const PER_THREAD: usize = 256;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (self.numbers.len() / PER_THREAD)
            .min(cpus.saturating_sub(1).max(1))
            .min(7)
    }

    /// Reads chunks until none are left.
    pub(super) fn work(&self) -> AffinityPart {
        const CHUNK: usize = 32;
        let mut warn = Warnings::default();
        let mut out = Vec::new();
        loop {
            let start = self.next.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= self.numbers.len() {
                break;
            }
            let part = &self.numbers[start..(start + CHUNK).min(self.numbers.len())];
            out.extend(
                part.iter()
                    .map(|&n| (n, read_affinity(&self.dir, n, self.read_node, &mut warn))),
            );
        }
        (out, warn)
    }
}

pub(crate) type Affinities = HashMap<u32, Affinity>;

/// Whether debugfs says the IRQ is managed (`IRQD_AFFINITY_MANAGED` in its state flags).
fn debugfs_managed(fs: &Root, irq: u32, warn: &mut Warnings) -> Option<bool> {
    let text = fs.read_opt(format!("sys/kernel/debug/irq/irqs/{irq}"), warn)?;
    Some(text.contains("IRQD_AFFINITY_MANAGED"))
}

/// Every numbered IRQ of `table` with what is known of it. Long on purpose: one pass per IRQ
/// joins each source of its identity (MSI table, chip, action names, virtio, NVMe, netdev,
/// legacy ports) in priority order, each choice visible beside the next; the lookups built
/// first are shared by all IRQs. `kept`: each IRQ's node and managed state from the last
/// read, when the IRQs are the same.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read(
    fs: &Root,
    table: &Interrupts,
    model: &SystemModel,
    legacy: &LegacyIrqs,
    kept: Option<&BTreeMap<u32, Fixed>>,
    job: &AffinityJob,
    affinities: &mut Affinities,
    warn: &mut Warnings,
) -> BTreeMap<u32, Irq> {
    let msi: HashMap<u32, &str> = model
        .pci
        .values()
        .flat_map(|d| d.msi_irqs.iter().map(move |&irq| (irq, d.address.as_str())))
        .collect();
    let netdev_names: Vec<&str> = model.netdevs.keys().map(String::as_str).collect();
    let mut nvme_pci: HashMap<String, Option<String>> = HashMap::new();
    let debugfs = fs.exists("sys/kernel/debug/irq/irqs");

    let rows: Vec<(u32, &super::interrupts::Row)> = table
        .rows
        .iter()
        .filter_map(|r| match r.id {
            RowId::Irq(n) => Some((n, r)),
            RowId::Named(_) => None,
        })
        .collect();
    let mut irqs = BTreeMap::new();
    for (number, row) in rows {
        // Missing only if a worker died (a bug) or proc/irq could not be listed: read it here.
        let kept = kept.and_then(|k| k.get(&number));
        let aff = affinities
            .remove(&number)
            .unwrap_or_else(|| read_affinity(&job.dir, number, kept.is_none(), warn));
        // The first action that says something wins (shared lines list several).
        let names: Vec<naming::NameInfo> = row
            .actions
            .iter()
            .map(|a| naming::parse_action(a, &netdev_names))
            .collect();
        let pick = |f: &dyn Fn(&naming::NameInfo) -> Option<String>| names.iter().find_map(f);
        let virtio = pick(&|n| n.virtio.clone());
        let virtio_dev = virtio.as_ref().and_then(|v| model.virtio.get(v));
        let name_netdev = pick(&|n| n.netdev.clone());
        let nvme = pick(&|n| n.nvme.clone());

        let device = msi
            .get(&number)
            .map(|a| a.to_string())
            .or_else(|| find_pci_address(&row.chip))
            .or_else(|| pick(&|n| n.pci.clone()))
            .or_else(|| virtio_dev.and_then(|v| v.pci.clone()))
            .or_else(|| {
                let ctrl = nvme.as_ref()?;
                nvme_pci
                    .entry(ctrl.clone())
                    .or_insert_with(|| nvme_device(fs, ctrl))
                    .clone()
            })
            .or_else(|| {
                name_netdev
                    .as_ref()
                    .and_then(|n| model.netdevs.get(n))
                    .and_then(|n| n.device.clone())
            })
            .or_else(|| legacy_device(model, legacy, number, &row.actions));
        let pci = device.as_ref().and_then(|d| model.pci.get(d));

        let driver = virtio_dev
            .and_then(|v| v.driver.clone())
            .or_else(|| pci.and_then(|p| p.driver.clone()))
            .or_else(|| names.iter().find_map(|n| n.driver.map(str::to_string)));
        let single = |list: &[String]| (list.len() == 1).then(|| list[0].clone());
        let netdev = name_netdev
            .or_else(|| virtio_dev.and_then(|v| single(&v.netdevs)))
            .or_else(|| {
                // Virtio devices that are not net (balloon, blk) share the PCI function with
                // no netdev; only plain PCI NICs pass their single netdev down.
                if virtio_dev.is_some() {
                    return None;
                }
                pci.and_then(|p| single(&p.netdevs))
            });
        let queue = names.iter().find_map(|n| n.queue);
        let managed = match kept {
            Some(k) => k.managed,
            None if debugfs => debugfs_managed(fs, number, warn),
            None => names.iter().any(|n| n.managed).then_some(true),
        };

        irqs.insert(
            number,
            Irq {
                number,
                chip: row.chip.clone(),
                hwirq: row.hwirq.clone(),
                actions: row.actions.clone(),
                smp_affinity: aff.smp,
                effective_affinity: aff.effective,
                kernel_node: kept.map_or(aff.node, |k| k.node),
                device,
                driver,
                netdev,
                queue,
                node: pci.and_then(|p| p.node),
                local_cpus: pci.and_then(|p| p.node_cpus.clone()),
                node_source: pci.map_or(NodeSource::Unknown, |p| p.node_source),
                managed,
            },
        );
    }
    irqs
}

/// The PCI function of an NVMe controller, through `sys/class/nvme/nvmeN/device`.
fn nvme_device(fs: &Root, ctrl: &str) -> Option<String> {
    let path = fs.resolve(format!("sys/class/nvme/{ctrl}/device"));
    path.iter()
        .filter_map(|c| c.to_str())
        .rfind(|c| super::fsutil::is_pci_address(c))
        .map(str::to_string)
}

/// A legacy INTx line: the device whose `irq` is this number, when exactly one is and its
/// driver named the action (shared lines and platform IRQs stay unattributed).
fn legacy_device(
    model: &SystemModel,
    legacy: &LegacyIrqs,
    irq: u32,
    actions: &[String],
) -> Option<String> {
    let [address] = legacy.get(&irq)?.as_slice() else {
        return None;
    };
    let driver = model.pci.get(address)?.driver.as_deref()?;
    actions
        .iter()
        .any(|a| a == driver || a.starts_with(&format!("{driver}[")))
        .then(|| address.clone())
}
