//! Deterministic generator of large synthetic machines as fixture roots, shared by the
//! integration tests, the `model` bench and the `synth` example (each includes this file with
//! `#[path]`). Std only; the same spec always writes the same tree.
//!
//! The default machine: 2 sockets x 64 cores x 2 threads (CPUs numbered like Linux: thread 0
//! of every core first, then thread 1), one NUMA node per socket, CPUs 250-255 offline,
//! 2-3,130-131 isolated and nohz_full; 4 NICs x 32 queues (i40e, mlx5, ice, ixgbe naming),
//! the ice NIC with firmware node -1 (repaired by the generated proximity file), 10 NVMe
//! drives x 129 queues (managed), and enough platform IRQs for 1500 in all.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

pub struct Spec {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    /// Offline CPU ids.
    pub offline: Vec<u32>,
    pub isolated: Vec<u32>,
    pub nic_queues: u32,
    pub nvme_drives: u32,
    pub nvme_queues: u32,
}

impl Spec {
    pub fn large() -> Spec {
        Spec {
            sockets: 2,
            cores: 64,
            threads: 2,
            offline: (250..256).collect(),
            isolated: vec![2, 3, 130, 131],
            nic_queues: 32,
            nvme_drives: 10,
            nvme_queues: 128,
        }
    }
}

/// What was written, for the tests to check the model against.
pub struct Synth {
    pub root: PathBuf,
    pub proximity_file: PathBuf,
    pub nr_cpus: u32,
    pub online: Vec<u32>,
    pub irq_count: usize,
    /// netdev -> (PCI address, firmware node, node after overrides).
    pub nics: BTreeMap<String, (String, i32, u32)>,
    /// The NIC whose firmware node is -1.
    pub repaired_nic: String,
    /// The NVMe drive repaired with a cpumask rule, and its mask's node.
    pub cpumask_repaired: (String, u32),
}

struct Irq {
    number: u32,
    chip: String,
    hwirq: String,
    actions: String,
    smp: Vec<u32>,
    effective: u32,
    node: i32,
}

struct Writer {
    root: PathBuf,
}

impl Writer {
    fn file(&self, rel: &str, text: &str) -> io::Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)
    }

    fn link(&self, rel: &str, target: &str) -> io::Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, path)
    }

    fn dir(&self, rel: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.root.join(rel))
    }
}

/// The kernel's hex mask of `nbits` bits (first group trimmed, like `%*pb`).
fn mask(cpus: &[u32], nbits: u32) -> String {
    let groups = nbits.div_ceil(32);
    let mut vals = vec![0u32; groups as usize];
    for &c in cpus {
        if c < nbits {
            vals[(c / 32) as usize] |= 1 << (c % 32);
        }
    }
    let first = if nbits.is_multiple_of(32) {
        8
    } else {
        (nbits % 32).div_ceil(4) as usize
    };
    let mut out = String::new();
    for g in (0..groups as usize).rev() {
        if g + 1 == groups as usize {
            let _ = write!(out, "{:0first$x}", vals[g]);
        } else {
            let _ = write!(out, ",{:08x}", vals[g]);
        }
    }
    out
}

fn list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if i == j {
            let _ = write!(out, "{}", sorted[i]);
        } else {
            let _ = write!(out, "{}-{}", sorted[i], sorted[j]);
        }
        i = j + 1;
    }
    out
}

/// A PCI endpoint behind its own root port: (root port address, endpoint address, sysfs path).
fn slot(host: u32, port_dev: u32, bus: u32) -> (String, String, String) {
    let port = format!("0000:{host:02x}:{port_dev:02x}.0");
    let ep = format!("0000:{bus:02x}:00.0");
    let path = format!("sys/devices/pci0000:{host:02x}/{port}/{ep}");
    (port, ep, path)
}

pub fn write(dir: &Path, spec: &Spec) -> io::Result<Synth> {
    let w = Writer {
        root: dir.join("root"),
    };
    std::fs::create_dir_all(&w.root)?;
    let nr = spec.sockets * spec.cores * spec.threads;
    let per_thread = spec.sockets * spec.cores;
    let socket_of = |cpu: u32| (cpu % per_thread) / spec.cores;
    let online: Vec<u32> = (0..nr).filter(|c| !spec.offline.contains(c)).collect();
    let is_online = |c: u32| !spec.offline.contains(&c);
    let node_cpus = |n: u32| -> Vec<u32> {
        online
            .iter()
            .copied()
            .filter(|&c| socket_of(c) == n)
            .collect()
    };
    let all = list(&(0..nr).collect::<Vec<_>>());

    w.file("proc/sys/kernel/osrelease", "6.8.0-synthetic\n")?;
    let iso = list(&spec.isolated);
    w.file(
        "proc/cmdline",
        &format!(
            "BOOT_IMAGE=/vmlinuz ro isolcpus=managed_irq,domain,{iso} nohz_full={iso} quiet\n"
        ),
    )?;

    // CPUs.
    let cpu = "sys/devices/system/cpu";
    w.file(&format!("{cpu}/present"), &format!("{all}\n"))?;
    w.file(&format!("{cpu}/possible"), &format!("{all}\n"))?;
    w.file(&format!("{cpu}/online"), &format!("{}\n", list(&online)))?;
    w.file(
        &format!("{cpu}/offline"),
        &format!("{}\n", list(&spec.offline)),
    )?;
    w.file(&format!("{cpu}/isolated"), &format!("{iso}\n"))?;
    w.file(&format!("{cpu}/nohz_full"), &format!("{iso}\n"))?;
    for c in 0..nr {
        let node = socket_of(c);
        w.link(
            &format!("{cpu}/cpu{c}/node{node}"),
            &format!("../../node/node{node}"),
        )?;
        if !is_online(c) {
            continue;
        }
        let core = c % spec.cores;
        let siblings: Vec<u32> = (0..spec.threads)
            .map(|t| t * per_thread + node * spec.cores + core)
            .filter(|&s| is_online(s))
            .collect();
        let t = format!("{cpu}/cpu{c}/topology");
        w.file(
            &format!("{t}/thread_siblings_list"),
            &format!("{}\n", list(&siblings)),
        )?;
        w.file(&format!("{t}/core_id"), &format!("{core}\n"))?;
        w.file(&format!("{t}/physical_package_id"), &format!("{node}\n"))?;
        let caches = [
            (1, "Data", "48K", list(&siblings)),
            (1, "Instruction", "32K", list(&siblings)),
            (2, "Unified", "2048K", list(&siblings)),
            (3, "Unified", "107520K", list(&node_cpus(node))),
        ];
        for (i, (level, kind, size, shared)) in caches.iter().enumerate() {
            let d = format!("{cpu}/cpu{c}/cache/index{i}");
            w.file(&format!("{d}/level"), &format!("{level}\n"))?;
            w.file(&format!("{d}/type"), &format!("{kind}\n"))?;
            w.file(&format!("{d}/size"), &format!("{size}\n"))?;
            w.file(&format!("{d}/shared_cpu_list"), &format!("{shared}\n"))?;
        }
    }
    let nodes = "sys/devices/system/node";
    for n in 0..spec.sockets {
        w.file(
            &format!("{nodes}/node{n}/cpulist"),
            &format!("{}\n", list(&node_cpus(n))),
        )?;
        let dist: Vec<String> = (0..spec.sockets)
            .map(|m| if m == n { "10".into() } else { "21".into() })
            .collect();
        w.file(
            &format!("{nodes}/node{n}/distance"),
            &format!("{}\n", dist.join(" ")),
        )?;
    }
    w.file(
        &format!("{nodes}/online"),
        &format!("0-{}\n", spec.sockets - 1),
    )?;

    // IRQs, allocated in order.
    let mut irqs: Vec<Irq> = Vec::new();
    let mut next_irq = 24u32;
    let node0 = node_cpus(0);
    let all_cpus: Vec<u32> = (0..nr).collect();
    for (n, name) in [
        (0, "timer"),
        (4, "ttyS0"),
        (8, "rtc0"),
        (9, "acpi"),
        (16, "i801_smbus"),
        (18, "ipmi_si"),
    ] {
        irqs.push(Irq {
            number: n,
            chip: "IR-IO-APIC".into(),
            hwirq: format!("{n}-{}", if n == 9 || n >= 16 { "fasteoi" } else { "edge" }),
            actions: name.into(),
            smp: all_cpus.clone(),
            effective: online[(n as usize * 7) % online.len()],
            node: 0,
        });
    }
    for d in 0..8 {
        irqs.push(Irq {
            number: next_irq,
            chip: "DMAR-MSI".into(),
            hwirq: format!("{d}-edge"),
            actions: format!("dmar{d}"),
            smp: all_cpus.clone(),
            effective: online[d * 5],
            node: -1,
        });
        next_irq += 1;
    }

    // PCI devices: address -> (path, numa, local cpus, driver, msi irqs).
    struct Dev {
        path: String,
        numa: i32,
        local: Vec<u32>,
        driver: &'static str,
        msi: Vec<u32>,
        legacy: u32,
        netdev: Option<String>,
    }
    let mut pci: BTreeMap<String, Dev> = BTreeMap::new();
    let local_of = |numa: i32| -> Vec<u32> {
        if numa < 0 {
            online.clone()
        } else {
            node_cpus(numa as u32)
        }
    };
    let mut add_msi = |pci: &mut BTreeMap<String, Dev>,
                       irqs: &mut Vec<Irq>,
                       addr: &str,
                       actions: String,
                       smp: Vec<u32>,
                       effective: u32| {
        let dev = pci.get_mut(addr).expect("device added first");
        let index = dev.msi.len();
        irqs.push(Irq {
            number: next_irq,
            chip: format!("IR-PCI-MSIX-{addr}"),
            hwirq: format!("{index}-edge"),
            actions,
            smp,
            effective,
            node: dev.numa,
        });
        dev.msi.push(next_irq);
        next_irq += 1;
    };
    let add_dev = |pci: &mut BTreeMap<String, Dev>, addr: &str, path: String, numa: i32, driver| {
        pci.insert(
            addr.to_string(),
            Dev {
                path,
                numa,
                local: local_of(numa),
                driver,
                msi: Vec::new(),
                legacy: 0,
                netdev: None,
            },
        );
    };

    // Platform functions on socket 0's host bridge.
    for (addr, driver, action) in [
        ("0000:00:17.0", "ahci", "ahci[0000:00:17.0]"),
        ("0000:00:14.0", "xhci_hcd", "xhci_hcd"),
    ] {
        add_dev(
            &mut pci,
            addr,
            format!("sys/devices/pci0000:00/{addr}"),
            0,
            driver,
        );
        add_msi(
            &mut pci,
            &mut irqs,
            addr,
            action.into(),
            all_cpus.clone(),
            0,
        );
    }
    add_dev(
        &mut pci,
        "0000:00:1f.4",
        "sys/devices/pci0000:00/0000:00:1f.4".into(),
        0,
        "i801_smbus",
    );
    if let Some(d) = pci.get_mut("0000:00:1f.4") {
        d.legacy = 16;
    }
    for s in 0..spec.sockets {
        let host = if s == 0 { 0 } else { 0x80 };
        for f in 0..8 {
            let addr = format!("0000:{host:02x}:04.{f}");
            add_dev(
                &mut pci,
                &addr,
                format!("sys/devices/pci0000:{host:02x}/{addr}"),
                s as i32,
                "ioatdma",
            );
            let cpus = node_cpus(s);
            add_msi(
                &mut pci,
                &mut irqs,
                &addr,
                "ioat-msix".into(),
                cpus.clone(),
                cpus[f as usize],
            );
        }
    }

    // NICs: (name, driver, host bridge, port, bus, firmware node, real node, naming).
    let nics = [
        ("ens1f0", "i40e", 0x3a, 0, 0x3b, 0, 0),
        ("ens2f0np0", "mlx5_core", 0xae, 0, 0xaf, 1, 1),
        ("ens3f0", "ice", 0xd7, 0, 0xd8, -1, 1),
        ("enp134s0f0", "ixgbe", 0x85, 0, 0x86, 1, 1),
    ];
    let mut nic_info = BTreeMap::new();
    for (name, driver, host, port_dev, bus, numa, real_node) in nics {
        let (port, ep, path) = slot(host, port_dev, bus);
        add_dev(
            &mut pci,
            &port,
            format!("sys/devices/pci0000:{host:02x}/{port}"),
            numa,
            "pcieport",
        );
        add_msi(
            &mut pci,
            &mut irqs,
            &port,
            "PCIe PME, pciehp".into(),
            all_cpus.clone(),
            0,
        );
        add_dev(&mut pci, &ep, path, numa, driver);
        if let Some(d) = pci.get_mut(&ep) {
            d.netdev = Some(name.to_string());
        }
        let misc = match driver {
            "i40e" => format!("i40e-{ep}:misc"),
            "mlx5_core" => format!("mlx5_async0@pci:{ep}"),
            "ice" => format!("ice-{ep}:misc"),
            _ => name.to_string(),
        };
        add_msi(&mut pci, &mut irqs, &ep, misc, all_cpus.clone(), online[0]);
        // Drivers spread queues over the CPUs they think are local.
        let spread = local_of(numa);
        for q in 0..spec.nic_queues {
            let action = match driver {
                "i40e" => format!("i40e-{name}-TxRx-{q}"),
                "mlx5_core" => format!("mlx5_comp{q}@pci:{ep}"),
                "ice" => format!("ice-{name}-TxRx-{q}"),
                _ => format!("{name}-TxRx-{q}"),
            };
            let cpu = spread[q as usize % spread.len()];
            add_msi(&mut pci, &mut irqs, &ep, action, vec![cpu], cpu);
        }
        nic_info.insert(name.to_string(), (ep.clone(), numa, real_node));
    }

    // NVMe drives, half per socket; the last one with firmware -1 (repaired by a cpumask rule).
    let mut cpumask_repaired = (String::new(), 0);
    for i in 0..spec.nvme_drives {
        let socket = if i < spec.nvme_drives / 2 {
            0
        } else {
            1.min(spec.sockets - 1)
        };
        let host = if socket == 0 { 0x5d } else { 0xd0 };
        let k = i % (spec.nvme_drives / 2).max(1);
        let (port, ep, path) = slot(host, k + 1, host + 1 + k);
        let numa = if i + 1 == spec.nvme_drives {
            -1
        } else {
            socket as i32
        };
        if numa < 0 {
            cpumask_repaired = (ep.clone(), socket);
        }
        add_dev(
            &mut pci,
            &port,
            format!("sys/devices/pci0000:{host:02x}/{port}"),
            numa,
            "pcieport",
        );
        add_msi(
            &mut pci,
            &mut irqs,
            &port,
            "PCIe PME".into(),
            all_cpus.clone(),
            0,
        );
        add_dev(&mut pci, &ep, path.clone(), numa, "nvme");
        w.link(
            &format!("sys/class/nvme/nvme{i}"),
            &format!("../../{}/nvme/nvme{i}", path.trim_start_matches("sys/")),
        )?;
        w.link(
            &format!("{path}/nvme/nvme{i}/device"),
            &format!("../../../{ep}"),
        )?;
        add_msi(
            &mut pci,
            &mut irqs,
            &ep,
            format!("nvme{i}q0"),
            all_cpus.clone(),
            online[1],
        );
        // Managed spread: queue k covers one core's threads.
        for q in 1..=spec.nvme_queues {
            let core = (q - 1) % per_thread;
            let cpus: Vec<u32> = (0..spec.threads).map(|t| t * per_thread + core).collect();
            let eff = cpus
                .iter()
                .copied()
                .find(|&c| is_online(c))
                .unwrap_or(cpus[0]);
            add_msi(&mut pci, &mut irqs, &ep, format!("nvme{i}q{q}"), cpus, eff);
        }
    }
    // A QAT accelerator fills up to 1500.
    let qat = "0000:6b:00.0";
    add_dev(
        &mut pci,
        qat,
        format!("sys/devices/pci0000:6a/0000:6a:01.0/{qat}"),
        0,
        "4xxx",
    );
    while irqs.len() < 1500 {
        let b = pci.get(qat).map_or(0, |d| d.msi.len());
        add_msi(
            &mut pci,
            &mut irqs,
            qat,
            format!("qat0-bundle{b}"),
            node0.clone(),
            node0[b % node0.len()],
        );
    }

    // sysfs for PCI devices and netdevs.
    for (addr, d) in &pci {
        w.link(
            &format!("sys/bus/pci/devices/{addr}"),
            &format!("../../../{}", d.path.trim_start_matches("sys/")),
        )?;
        w.file(&format!("{}/numa_node", d.path), &format!("{}\n", d.numa))?;
        w.file(
            &format!("{}/local_cpulist", d.path),
            &format!("{}\n", list(&d.local)),
        )?;
        w.file(
            &format!("{}/local_cpus", d.path),
            &format!("{}\n", mask(&d.local, nr)),
        )?;
        let irq = d.msi.first().copied().unwrap_or(d.legacy);
        w.file(&format!("{}/irq", d.path), &format!("{irq}\n"))?;
        let depth = d.path.matches('/').count();
        w.link(
            &format!("{}/driver", d.path),
            &format!("{}bus/pci/drivers/{}", "../".repeat(depth), d.driver),
        )?;
        if !d.msi.is_empty() {
            w.dir(&format!("{}/msi_irqs", d.path))?;
            for m in &d.msi {
                w.file(&format!("{}/msi_irqs/{m}", d.path), "")?;
            }
        }
        if let Some(name) = &d.netdev {
            let real = format!("{}/net/{name}", d.path);
            w.link(
                &format!("sys/class/net/{name}"),
                &format!("../../{}", real.trim_start_matches("sys/")),
            )?;
            w.link(&format!("{real}/device"), &format!("../../../{addr}"))?;
            w.file(&format!("{real}/threaded"), "0\n")?;
            for q in 0..spec.nic_queues {
                w.file(
                    &format!("{real}/queues/rx-{q}/rps_cpus"),
                    &format!("{}\n", mask(&[], nr)),
                )?;
                w.dir(&format!("{real}/queues/tx-{q}"))?;
            }
        }
    }
    w.link("sys/class/net/lo", "../../devices/virtual/net/lo")?;
    w.file(
        "sys/devices/virtual/net/lo/queues/rx-0/rps_cpus",
        &format!("{}\n", mask(&[], nr)),
    )?;
    w.file("sys/devices/virtual/net/lo/threaded", "0\n")?;

    // proc/irq and proc/interrupts, with counts where the IRQs land.
    irqs.sort_by_key(|i| i.number);
    let width = 4;
    let mut text = String::with_capacity(irqs.len() * (online.len() * 11 + 80));
    let _ = write!(text, "{:width$} ", "");
    for c in &online {
        let _ = write!(text, "{:<11}", format!("CPU{c}"));
    }
    text.push('\n');
    for irq in &irqs {
        let dir = format!("proc/irq/{}", irq.number);
        w.file(
            &format!("{dir}/smp_affinity"),
            &format!("{}\n", mask(&irq.smp, nr)),
        )?;
        w.file(
            &format!("{dir}/smp_affinity_list"),
            &format!("{}\n", list(&irq.smp)),
        )?;
        w.file(
            &format!("{dir}/effective_affinity"),
            &format!("{}\n", mask(&[irq.effective], nr)),
        )?;
        w.file(
            &format!("{dir}/effective_affinity_list"),
            &format!("{}\n", irq.effective),
        )?;
        w.file(&format!("{dir}/node"), &format!("{}\n", irq.node))?;
        let _ = write!(text, "{:>width$}:", irq.number);
        for &c in &online {
            let count = if c == irq.effective {
                1000 + u64::from(irq.number) * 37
            } else {
                0
            };
            let _ = write!(text, " {count:>10}");
        }
        let _ = writeln!(text, " {:>8} {:>3}  {}", irq.chip, irq.hwirq, irq.actions);
    }
    for (label, desc) in [
        ("NMI", "Non-maskable interrupts"),
        ("LOC", "Local timer interrupts"),
        ("RES", "Rescheduling interrupts"),
        ("CAL", "Function call interrupts"),
    ] {
        let _ = write!(text, "{label:>width$}:");
        for &c in &online {
            let _ = write!(text, " {:>10}", 100 + c);
        }
        let _ = writeln!(text, "   {desc}");
    }
    let _ = writeln!(text, "{:>width$}: {:>10}", "ERR", 0);
    let _ = writeln!(text, "{:>width$}: {:>10}", "MIS", 0);
    w.file("proc/interrupts", &text)?;

    let mut stat = String::from("cpu  1000 0 1000 100000 0 0 0 0 0 0\n");
    for c in &online {
        let _ = writeln!(stat, "cpu{c} {} 0 {} 40000 1 2 3 0 0 0", 10 + c, 20 + c);
    }
    stat.push_str(
        "intr 0\nctxt 1\nbtime 1700000000\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n",
    );
    w.file("proc/stat", &stat)?;

    let proximity_file = dir.join("proximity.conf");
    let (nvme, nvme_node) = &cpumask_repaired;
    std::fs::write(
        &proximity_file,
        format!(
            "# Firmware reports -1 for the slots of socket 1 below.\n\
             0000:d7: node 1\n\
             0000:d8: node 1   # the ice NIC\n\
             {nvme} cpumask {}\n",
            mask(&node_cpus(*nvme_node), nr)
        ),
    )?;

    Ok(Synth {
        root: w.root.clone(),
        proximity_file,
        nr_cpus: nr,
        online,
        irq_count: irqs.len(),
        nics: nic_info,
        repaired_nic: "ens3f0".into(),
        cpumask_repaired,
    })
}
