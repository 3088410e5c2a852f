//! Writes the raw reply bytes of the netdev family's `napi-get` and `queue-get` dumps to
//! `<dir>/napi-get.bin` and `<dir>/queue-get.bin`, and the controller's replies to resolving
//! `netdev` and a family no kernel has to `family-netdev.bin` and `family-missing.bin`: how
//! the fixtures under
//! `tests/fixtures/netlink/` were made. Run it inside the network namespace to capture:
//!
//! ```text
//! ip netns exec <ns> target/debug/examples/netdev_capture tests/fixtures/netlink/<name>
//! ```
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use balancer::system::netdev::{self, CMD_NAPI_GET, CMD_QUEUE_GET, NetdevSocket};

/// A family name no kernel registers.
const MISSING: &str = "balancer-nx";

fn main() -> anyhow::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        bail!("usage: netdev_capture <dir>");
    };
    let Some(mut socket) = NetdevSocket::open()? else {
        bail!("this kernel has no {} family", netdev::FAMILY);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (cmd, name) in [(CMD_NAPI_GET, "napi-get"), (CMD_QUEUE_GET, "queue-get")] {
        let bytes = socket.dump_raw(cmd)?;
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("{}: {} bytes", path.display(), bytes.len());
    }
    for (family, name) in [
        (netdev::FAMILY, "family-netdev"),
        (MISSING, "family-missing"),
    ] {
        let bytes = NetdevSocket::family_reply_raw(family)?;
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("{}: {} bytes", path.display(), bytes.len());
    }
    println!("{:#?}", socket.dump()?);
    Ok(())
}
