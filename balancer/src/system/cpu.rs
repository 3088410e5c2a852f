//! CPUs, their SMT/core/package/LLC topology, NUMA nodes, isolated and nohz_full CPUs.
use std::collections::BTreeMap;

use super::fsutil::{Root, Warnings, parse_int_warn, parse_list_warn};
use super::{CacheInfo, Cpu, Node};
use crate::cpumask::CpuSet;

#[derive(Debug, Clone)]
pub(crate) struct CpuInfo {
    pub(crate) cpus: BTreeMap<u32, Cpu>,
    pub(crate) nr_cpu_ids: u32,
    pub(crate) nodes: BTreeMap<u32, Node>,
    pub(crate) isolated: CpuSet,
    pub(crate) nohz_full: CpuSet,
}

const CPU: &str = "sys/devices/system/cpu";
const NODE: &str = "sys/devices/system/node";

fn list_file(fs: &Root, rel: &str, warn: &mut Warnings) -> Option<CpuSet> {
    let text = fs.read_opt(rel, warn)?;
    // A NULL mask prints as "(null)" (nohz_full when it was never set up).
    if text.trim() == "(null)" {
        return Some(CpuSet::new());
    }
    parse_list_warn(&text, "malformed cpu lists", &rel, warn)
}

pub(crate) fn read(fs: &Root, warn: &mut Warnings) -> CpuInfo {
    // present, else the cpuN directories; online defaults to all present (no hotplug).
    let present = list_file(fs, &format!("{CPU}/present"), warn).unwrap_or_else(|| {
        fs.list(CPU, warn)
            .iter()
            .filter_map(|n| n.strip_prefix("cpu")?.parse::<u32>().ok())
            .collect()
    });
    let online = list_file(fs, &format!("{CPU}/online"), warn).unwrap_or_else(|| present.clone());
    let possible = list_file(fs, &format!("{CPU}/possible"), warn).unwrap_or_default();
    let nr_cpu_ids = possible
        .last()
        .max(present.last())
        .max(online.last())
        .map_or(0, |c| c + 1);

    let nodes = read_nodes(fs, warn);
    let mut node_of: BTreeMap<u32, u32> = BTreeMap::new();
    for node in nodes.values() {
        for cpu in node.cpus.iter() {
            node_of.insert(cpu, node.id);
        }
    }

    let mut cpus: BTreeMap<u32, Cpu> = BTreeMap::new();
    for id in present.union(&online).iter() {
        let node = node_of.get(&id).copied().or_else(|| {
            // Offline CPUs drop out of the node's cpulist but keep their cpuN/nodeM link.
            if nodes.is_empty() {
                return None;
            }
            fs.list(format!("{CPU}/cpu{id}"), warn)
                .iter()
                .find_map(|n| n.strip_prefix("node")?.parse::<u32>().ok())
        });
        cpus.insert(
            id,
            Cpu {
                id,
                online: online.contains(id),
                node,
                package: None,
                core: None,
                thread_siblings: CpuSet::new(),
                llc_siblings: None,
                llc: None,
            },
        );
    }
    read_topology(fs, &mut cpus, warn);
    read_llc(fs, &mut cpus, warn);

    let cmdline = fs.read_opt("proc/cmdline", warn).unwrap_or_default();
    let mut isolated = list_file(fs, &format!("{CPU}/isolated"), warn).unwrap_or_default();
    if let Some(set) = cmdline_cpus(&cmdline, "isolcpus", warn) {
        isolated = isolated.union(&set);
    }
    let mut nohz_full = list_file(fs, &format!("{CPU}/nohz_full"), warn).unwrap_or_default();
    if nohz_full.is_empty()
        && let Some(set) = cmdline_cpus(&cmdline, "nohz_full", warn)
    {
        nohz_full = set;
    }

    CpuInfo {
        cpus,
        nr_cpu_ids,
        nodes,
        isolated,
        nohz_full,
    }
}

/// Siblings, core and package. Siblings share core and package, so one read per core is
/// enough: 128-core machines would otherwise cost three file reads per CPU.
fn read_topology(fs: &Root, cpus: &mut BTreeMap<u32, Cpu>, warn: &mut Warnings) {
    let dir = fs.open_dir(CPU);
    let ids: Vec<u32> = cpus.keys().copied().collect();
    for id in ids {
        if cpus.get(&id).is_none_or(|c| !c.thread_siblings.is_empty()) {
            continue;
        }
        let rel = format!("cpu{id}/topology");
        let what = format!("{CPU}/{rel}");
        let Some(siblings) = dir
            .read_opt(&format!("{rel}/thread_siblings_list"), warn)
            .and_then(|t| parse_list_warn(&t, "malformed cpu lists", &what, warn))
        else {
            continue;
        };
        let core = dir
            .read_opt(&format!("{rel}/core_id"), warn)
            .and_then(|t| parse_int_warn::<u32>(&t, "malformed topology ids", &what, warn));
        let package = dir
            .read_opt(&format!("{rel}/physical_package_id"), warn)
            .and_then(|t| parse_int_warn::<i64>(&t, "malformed topology ids", &what, warn))
            .and_then(|p| u32::try_from(p).ok());
        let mut group = siblings.clone();
        group.insert(id);
        for sib in group.iter() {
            if let Some(cpu) = cpus.get_mut(&sib) {
                cpu.thread_siblings = group.clone();
                cpu.core = core;
                cpu.package = package;
            }
        }
    }
}

/// The last-level cache (highest `indexN` of cpu0's layout), read once per cache.
fn read_llc(fs: &Root, cpus: &mut BTreeMap<u32, Cpu>, warn: &mut Warnings) {
    let Some(first) = cpus.values().find(|c| c.online).map(|c| c.id) else {
        return;
    };
    let Some(index) = fs
        .list(format!("{CPU}/cpu{first}/cache"), warn)
        .iter()
        .filter_map(|n| n.strip_prefix("index")?.parse::<u32>().ok())
        .max()
    else {
        return;
    };
    let ids: Vec<u32> = cpus.keys().copied().collect();
    for id in ids {
        if cpus
            .get(&id)
            .is_none_or(|c| c.llc_siblings.is_some() || !c.online)
        {
            continue;
        }
        let dir = format!("{CPU}/cpu{id}/cache/index{index}");
        let Some(shared) = list_file(fs, &format!("{dir}/shared_cpu_list"), warn) else {
            continue;
        };
        let level = fs
            .read_opt(format!("{dir}/level"), warn)
            .and_then(|t| parse_int_warn::<u8>(&t, "malformed cache info", &dir, warn));
        let size = fs
            .read_opt(format!("{dir}/size"), warn)
            .map(|s| s.trim().to_string());
        let info = level.map(|level| CacheInfo { level, size });
        let mut group = shared;
        group.insert(id);
        for sib in group.iter() {
            if let Some(cpu) = cpus.get_mut(&sib)
                && cpu.llc_siblings.is_none()
            {
                cpu.llc_siblings = Some(group.clone());
                cpu.llc = info.clone();
            }
        }
    }
}

fn read_nodes(fs: &Root, warn: &mut Warnings) -> BTreeMap<u32, Node> {
    let mut ids: Vec<u32> = fs
        .list(NODE, warn)
        .iter()
        .filter_map(|n| n.strip_prefix("node")?.parse::<u32>().ok())
        .collect();
    ids.sort_unstable();
    let mut nodes = BTreeMap::new();
    for &id in &ids {
        let dir = format!("{NODE}/node{id}");
        let cpus = list_file(fs, &format!("{dir}/cpulist"), warn).unwrap_or_default();
        let mut distances = BTreeMap::new();
        if let Some(text) = fs.read_opt(format!("{dir}/distance"), warn) {
            let values: Result<Vec<u32>, _> =
                text.split_ascii_whitespace().map(str::parse).collect();
            // One distance per online node, in id order.
            match values {
                Ok(v) if v.len() == ids.len() => distances = ids.iter().copied().zip(v).collect(),
                _ => warn.add(
                    "malformed node distances",
                    1,
                    Some(format!("{dir}/distance: {:?}", text.trim())),
                ),
            }
        }
        nodes.insert(
            id,
            Node {
                id,
                cpus,
                distances,
            },
        );
    }
    nodes
}

/// The CPU list of `key=` on the kernel command line: `isolcpus=nohz,domain,2-5` keeps the
/// list after the flags.
fn cmdline_cpus(cmdline: &str, key: &str, warn: &mut Warnings) -> Option<CpuSet> {
    let value = cmdline
        .split_ascii_whitespace()
        .take_while(|w| *w != "--")
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
    // Flags are words; the list starts at the first item beginning with a digit.
    let start = value
        .split(',')
        .position(|item| item.starts_with(|c: char| c.is_ascii_digit()))?;
    let list = value.split(',').skip(start).collect::<Vec<_>>().join(",");
    parse_list_warn(
        &list,
        "malformed cpu lists",
        &format!("proc/cmdline {key}="),
        warn,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_lists() {
        let mut w = Warnings::default();
        let c = "ro isolcpus=nohz,domain,managed_irq,2-5,8 nohz_full=2-5 -- isolcpus=9";
        assert_eq!(
            cmdline_cpus(c, "isolcpus", &mut w),
            Some(CpuSet::from_cpus([2, 3, 4, 5, 8]))
        );
        assert_eq!(
            cmdline_cpus(c, "nohz_full", &mut w),
            Some(CpuSet::from_cpus([2, 3, 4, 5]))
        );
        assert_eq!(cmdline_cpus("isolcpus=domain", "isolcpus", &mut w), None);
        assert_eq!(cmdline_cpus("quiet", "isolcpus", &mut w), None);
        assert_eq!(cmdline_cpus("isolcpus=2-x", "isolcpus", &mut w), None);
        assert_eq!(w.into_lines().len(), 1);
    }
}
