//! Support for balancer's integration tests: root checks, network namespaces joined by a veth
//! pair, traffic between them, and the path of the built binary.
//!
//! Network rule: traffic only ever flows between the two namespaces a test creates here, over
//! the veth pair it created; nothing touches the host's own interfaces, routes or IRQs. The
//! namespaces (and with them the veth pair) are deleted on drop, so also when a test panics.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// True when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The first line of a test that needs root. Such a test is also `#[ignore = "needs root"]`,
/// so that plain `cargo test` reports it as ignored rather than passed; asked for
/// (`--include-ignored`, as `cargo xtask test` does as root) without root, it fails.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (it loads eBPF programs or creates network namespaces); run it \
         as root, as `cargo xtask test` does"
    );
}

/// The `balancer` binary of this build: `$BALANCER_BIN`, else next to the test executable's
/// `deps/` directory (cargo builds the binary for integration tests of its own package only,
/// so `cargo xtask test` builds it first).
pub fn balancer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BALANCER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    dir.join("balancer")
}

/// Runs the balancer binary with `args`.
pub fn balancer(args: &[&str]) -> Output {
    let bin = balancer_bin();
    Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (build it with cargo build)", bin.display()))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ethtool(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool"])
        .args(args)
        .output()
        .context("running ethtool")?;
    if !out.status.success() {
        bail!(
            "ethtool {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair with GRO on, so the receiving veth polls
/// through NAPI. Deleted on drop.
pub struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
    pub dev_a: String,
    pub dev_b: String,
    pub addr_a: std::net::Ipv4Addr,
    pub addr_b: std::net::Ipv4Addr,
}

impl VethPair {
    pub fn create() -> anyhow::Result<VethPair> {
        let pid = std::process::id();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Short, unique names: interface names are at most 15 bytes.
        let tag = format!("{:x}{seq}", pid % 0xfffff);
        // 10.251.x.0/30 inside namespaces only: never routed anywhere.
        let subnet = (pid.wrapping_mul(7).wrapping_add(seq)) % 250;
        let pair = VethPair {
            ns_a: format!("bal-a-{tag}"),
            ns_b: format!("bal-b-{tag}"),
            dev_a: format!("bva{tag}"),
            dev_b: format!("bvb{tag}"),
            addr_a: std::net::Ipv4Addr::new(10, 251, subnet as u8, 1),
            addr_b: std::net::Ipv4Addr::new(10, 251, subnet as u8, 2),
        };
        // From here on, drop cleans up whatever was made.
        ip(&["netns", "add", &pair.ns_a])?;
        ip(&["netns", "add", &pair.ns_b])?;
        ip(&[
            "link",
            "add",
            &pair.dev_a,
            "netns",
            &pair.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.dev_b,
            "netns",
            &pair.ns_b,
        ])?;
        for (ns, dev, addr) in [
            (&pair.ns_a, &pair.dev_a, pair.addr_a),
            (&pair.ns_b, &pair.dev_b, pair.addr_b),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // veth polls through NAPI when GRO is on, and hands a packet to NAPI only when
            // the sender does no TSO (otherwise it goes to the backlog).
            ethtool(ns, &["-K", dev, "gro", "on", "tso", "off", "gso", "off"])?;
        }
        Ok(pair)
    }

    /// Sends `bytes` over TCP from namespace A to namespace B and waits until all arrived.
    pub fn tcp_transfer(&self, bytes: u64) -> anyhow::Result<()> {
        let port = 5201 + (std::process::id() % 1000) as u16;
        let listen = SocketAddrV4::new(self.addr_b, port);
        let (ns_b, ns_a) = (self.ns_b.clone(), self.ns_a.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver: JoinHandle<anyhow::Result<u64>> = std::thread::spawn(move || {
            enter_netns(&ns_b)?;
            let l = TcpListener::bind(listen).context("binding the receiver")?;
            let _ = ready_tx.send(());
            let (mut s, _) = l.accept()?;
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0u64;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            Ok(got)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("receiver did not start")?;
        let sender: JoinHandle<anyhow::Result<()>> = std::thread::spawn(move || {
            enter_netns(&ns_a)?;
            let mut s = TcpStream::connect(listen).context("connecting to the receiver")?;
            let buf = vec![0x5au8; 1 << 16];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                s.write_all(&buf[..n])?;
                left -= n as u64;
            }
            Ok(())
        });
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let got = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        if got != bytes {
            bail!("sent {bytes} bytes, received {got}");
        }
        Ok(())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}

/// Moves the calling thread into a named network namespace (iproute2's /run/netns).
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid fd for the duration of the call; setns only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub mod guest;
pub mod host_traffic;
pub mod sim;

#[path = "../../balancer/tests/support/copy_dir.rs"]
mod copy_dir;
pub use copy_dir::copy_dir;

/// Waits until `child` (a `balancer` command) holds the links of its attached tracepoint
/// programs (at least the four irq ones): the moment its sampling window is open.
pub fn wait_attached(child: &mut std::process::Child, timeout: Duration) -> anyhow::Result<()> {
    let pid = child.id();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("balancer (pid {pid}) ended before attaching its probes: {status}");
        }
        let links = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|t| {
                        let t = t.to_string_lossy();
                        t.contains("bpf_link") || t.contains("perf_event")
                    })
                    .count()
            })
            .unwrap_or(0);
        if links >= 4 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("balancer (pid {pid}) attached no probes within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets `threaded` of one of the test's own veth devices inside its namespace.
pub fn set_threaded(ns: &str, dev: &str, on: bool) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c"])
        .arg(format!(
            "echo {} > /sys/class/net/{dev}/threaded",
            u8::from(on)
        ))
        .output()
        .context("running ip netns exec")?;
    if !out.status.success() {
        bail!(
            "setting {dev}/threaded: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
