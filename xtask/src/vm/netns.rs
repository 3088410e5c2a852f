//! The host side of a guest's network: a namespace of its own holding a bridge and the guest's
//! tap devices. Nothing here touches the host's own interfaces, routes or /proc/irq: every
//! `ip` call names the namespace, and dropping the guard deletes it with all it holds.
use std::fs;
use std::process::Command;

use anyhow::Result;

use super::proc::output;

const PREFIX: &str = "balancer-vm-";

/// A host network namespace that exists as long as this value does.
pub struct HostNet {
    pub name: String,
}

impl HostNet {
    /// Creates namespace `balancer-vm-<pid>-<tag>` with bridge `br0`, holding `addr` (the
    /// host-side traffic server's address), and one multi-queue tap per entry of `taps` on it.
    pub fn create(tag: &str, addr: &str, taps: &[&str]) -> Result<HostNet> {
        let name = format!("{PREFIX}{}-{tag}", std::process::id());
        output(
            Command::new("ip").args(["netns", "add", &name]),
            &format!("ip netns add {name}"),
        )?;
        // From here on the guard deletes the namespace even if the rest fails.
        let net = HostNet { name };
        net.ip(&["link", "set", "lo", "up"])?;
        net.ip(&["link", "add", "br0", "type", "bridge"])?;
        net.ip(&["link", "set", "br0", "up"])?;
        net.ip(&["addr", "add", addr, "dev", "br0"])?;
        for tap in taps {
            net.ip(&["tuntap", "add", "dev", tap, "mode", "tap", "multi_queue"])?;
            net.ip(&["link", "set", tap, "master", "br0"])?;
            net.ip(&["link", "set", tap, "up"])?;
        }
        Ok(net)
    }

    /// `ip -n <ns> args...`: only ever inside our namespace.
    fn ip(&self, args: &[&str]) -> Result<()> {
        output(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            &format!("ip -n {} {}", self.name, args.join(" ")),
        )
        .map(drop)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        // Deleting the namespace destroys the bridge and the taps in it (both have
        // rtnl_link_ops, so the kernel deletes rather than moves them to the host).
        if let Err(err) = output(
            Command::new("ip").args(["netns", "del", &self.name]),
            "ip netns del",
        ) {
            eprintln!(
                "xtask vm: could not delete namespace {}: {err:#}",
                self.name
            );
        }
    }
}

/// Deletes namespaces left by runs that were killed before their guards ran (their pid is
/// gone).
pub fn remove_stale() -> Result<()> {
    let list = output(Command::new("ip").args(["netns", "list"]), "ip netns list")?;
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !fs::exists(format!("/proc/{pid}")).unwrap_or(true) {
            eprintln!("xtask vm: removing stale namespace {name}");
            output(
                Command::new("ip").args(["netns", "del", name]),
                "ip netns del",
            )?;
        }
    }
    Ok(())
}
