//! One guest: qemu on q35 with 4 vCPUs in 2 NUMA nodes, a 4-queue virtio-net NIC on node 1
//! (behind a pxb-pcie expander bridge that carries the node) and a peer NIC on the root bus,
//! both bridged inside the guest's host namespace, and an NVMe controller (managed IRQs).
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use super::kernel::Kernel;
use super::netns::HostNet;
use super::proc::{Waited, wait};

/// Queue pairs (and so rx queues and input MSI-X vectors) of each NIC.
pub const QUEUES: u32 = 4;
/// The NIC under test, on NUMA node 1.
pub const DUT_MAC: &str = "52:54:00:ba:1a:01";
/// The traffic peer, on the root bus (no NUMA node).
pub const PEER_MAC: &str = "52:54:00:ba:1a:00";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Emulation: slow but boots everywhere. One host thread for all vCPUs.
    Tcg,
    /// Emulation with one host thread per vCPU: work on one vCPU does not stall the others
    /// (what the overhead figure needs); guests died now and then in kernel code patching.
    TcgMulti,
    /// Hardware virtualisation: guests hang under it on some hosts (the build machines).
    Kvm,
}

pub struct Guest<'a> {
    pub tag: &'a str,
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    /// Where the console, results and qemu logs go.
    pub dir: &'a Path,
    pub timeout: Duration,
    pub accel: Accel,
    /// Extra kernel parameters.
    pub append: &'a str,
    /// The static guest-checks binary, run on the host side as the guest's traffic server.
    pub traffic_server: &'a Path,
}

/// Where the host-side traffic server listens: `balancer_tests::host_traffic`'s address and
/// port (xtask does not link the tests crate; a test there checks that they agree).
pub const TRAFFIC_ADDR: &str = "10.77.0.3";
pub const TRAFFIC_PREFIX: u8 = 24;
pub const TRAFFIC_PORT: u16 = 7700;

/// How a guest ended and what it wrote.
pub struct Run {
    pub ended: Waited,
    pub elapsed: Duration,
    /// The second serial port: the machine-readable CHECK lines.
    pub results: String,
    pub console: PathBuf,
    pub qemu_log: PathBuf,
}

impl Guest<'_> {
    pub fn run(&self) -> Result<Run> {
        let console = self.dir.join("console.log");
        let results = self.dir.join("results.log");
        let qemu_log = self.dir.join("qemu.log");
        let net = HostNet::create(
            self.tag,
            &format!("{TRAFFIC_ADDR}/{TRAFFIC_PREFIX}"),
            &["tap0", "tap1"],
        )?;
        let server =
            TrafficServer::start(&net, self.traffic_server, &self.dir.join("traffic.log"))?;

        // qemu's own complaints (a bad option, a missing tap) go to its stderr.
        let log = File::create(&qemu_log).context("creating the qemu log")?;
        let mut cmd = net.command("qemu-system-x86_64");
        cmd.args(self.args(&console, &results))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let start = Instant::now();
        let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
        let ended = wait(&mut child, Some(self.timeout), "qemu")?;
        let elapsed = start.elapsed();
        drop(server);
        drop(net);
        Ok(Run {
            ended,
            elapsed,
            results: fs::read_to_string(&results).unwrap_or_default(),
            console,
            qemu_log,
        })
    }

    fn args(&self, console: &Path, results: &Path) -> Vec<String> {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // panic=-1 with -no-reboot: a panicking guest ends qemu at once instead of hanging.
        // Unknown KEY=value parameters reach /init as environment variables.
        let append = format!(
            "console=ttyS0 panic=-1 BALANCER_EPOCH={epoch} {}",
            self.append
        );
        let (accel, cpu) = match self.accel {
            // One host thread for all vCPUs: with multi-threaded TCG, guests now and then died
            // in kernel code patching (a soft lockup on a jump-label NOP at boot, an oops under
            // traffic); single-threaded they run as fast on this 2-core machine.
            Accel::Tcg => ("tcg,thread=single", "max"),
            Accel::TcgMulti => ("tcg,thread=multi", "max"),
            Accel::Kvm => ("kvm", "host"),
        };
        let vectors = 2 * QUEUES + 2; // rx and tx per queue pair, config, spare
        let nic = |id: &str, tap: &str, mac: &str, bus: &str| {
            [
                "-netdev".to_owned(),
                format!(
                    "tap,id={id},ifname={tap},script=no,downscript=no,queues={QUEUES},vhost=off"
                ),
                "-device".to_owned(),
                format!(
                    "virtio-net-pci,netdev={id},mac={mac},bus={bus},mq=on,vectors={vectors},\
                     disable-legacy=on"
                ),
            ]
        };
        let mut args: Vec<String> = [
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-machine",
            "q35",
            "-m",
            "1024",
            "-smp",
            "4,sockets=2,cores=2,threads=1",
            "-object",
            "memory-backend-ram,id=mem0,size=512M",
            "-object",
            "memory-backend-ram,id=mem1,size=512M",
            "-numa",
            "node,nodeid=0,cpus=0-1,memdev=mem0",
            "-numa",
            "node,nodeid=1,cpus=2-3,memdev=mem1",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            // The expander bridge's numa_node reaches the guest as _PXM of its host bridge.
            "-device",
            "pxb-pcie,id=pcie.1,bus_nr=128,numa_node=1,bus=pcie.0",
            "-device",
            "pcie-root-port,id=rp1,bus=pcie.1,chassis=1",
        ]
        .map(str::to_owned)
        .into();
        args.extend(nic("peer", "tap0", PEER_MAC, "pcie.0"));
        args.extend(nic("dut", "tap1", DUT_MAC, "rp1"));
        // An emulated NVMe controller on a null block backend: its I/O queue IRQs are
        // managed (spread by the kernel; affinity writes get EIO), for the managed-irq check.
        args.extend(
            [
                "-drive",
                "if=none,id=nvm,driver=null-co,read-zeroes=on",
                "-device",
                "nvme,drive=nvm,serial=balancer0,bus=pcie.0",
            ]
            .map(str::to_owned),
        );
        args.extend([
            "-kernel".to_owned(),
            self.kernel.vmlinuz.display().to_string(),
            "-initrd".to_owned(),
            self.initramfs.display().to_string(),
            "-append".to_owned(),
            append,
            "-serial".to_owned(),
            format!("file:{}", console.display()),
            "-serial".to_owned(),
            format!("file:{}", results.display()),
        ]);
        args
    }
}

/// The host-side traffic server of one guest, killed when dropped (before its namespace goes).
struct TrafficServer(std::process::Child);

impl TrafficServer {
    fn start(net: &HostNet, binary: &Path, log: &Path) -> Result<TrafficServer> {
        let log = File::create(log).context("creating the traffic server's log")?;
        let child = net
            .command(&binary.display().to_string())
            .args(["--serve-traffic", &format!("{TRAFFIC_ADDR}:{TRAFFIC_PORT}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the traffic server {}", binary.display()))?;
        Ok(TrafficServer(child))
    }
}

impl Drop for TrafficServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
