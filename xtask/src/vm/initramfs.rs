//! The guest's initramfs, written straight into a newc cpio archive (no staging tree): busybox,
//! iproute2's `ip` and `ethtool` with their shared libraries, the kernel modules, the static
//! test binaries and `/init`.
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::kernel::Module;
use super::proc::output;

/// What goes into a guest besides the kernel's modules.
pub struct Contents<'a> {
    pub init: &'a str,
    /// (path in the guest, file on the host) of the static binaries we built.
    pub binaries: &'a [(&'a str, &'a Path)],
    pub modules: &'a [Module],
    /// More files: (path in the guest, contents, mode), e.g. irqbalance and its libraries.
    pub extra: &'a [(String, Vec<u8>, u32)],
}

/// Host tools the guest needs: `ip` for namespaces (busybox's has no `netns`) and `ethtool`
/// for channel counts. They keep their host paths; their libraries come along.
const HOST_TOOLS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/ethtool"];

/// Writes the initramfs to `path` and returns its size in bytes.
pub fn build(path: &Path, contents: &Contents) -> Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut cpio = Cpio::new(BufWriter::new(file));
    for dir in ["proc", "sys", "dev", "run", "tmp", "root", "etc"] {
        cpio.dir(dir)?;
    }
    // iproute2 keeps named namespaces in /var/run/netns.
    cpio.symlink("var/run", "../run")?;

    let busybox = which("busybox")?;
    add_host_binary(&mut cpio, &busybox, "bin/busybox")?;
    let applets = output(Command::new(&busybox).arg("--list"), "busybox --list")?;
    // The host tools win over busybox's applets of the same name.
    let provided =
        |a: &str| a == "busybox" || HOST_TOOLS.iter().any(|t| t.ends_with(&format!("/{a}")));
    for applet in applets.lines().filter(|a| !a.is_empty() && !provided(a)) {
        cpio.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for tool in HOST_TOOLS {
        let host = Path::new(tool);
        if !host.exists() {
            bail!("{tool} is missing on the host (apt-get install iproute2 ethtool)");
        }
        add_host_binary(&mut cpio, host, tool.trim_start_matches('/'))?;
    }
    for (guest, host) in contents.binaries {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        cpio.file(guest, 0o755, &data)?;
    }
    for (guest, data, mode) in contents.extra {
        cpio.file(guest, *mode, data)?;
    }
    let mut order = String::new();
    for module in contents.modules {
        cpio.file(
            &format!("lib/modules/{}.ko", module.name),
            0o644,
            &module.data,
        )?;
        order.push_str(&module.name);
        order.push('\n');
    }
    cpio.file("etc/modules", 0o644, order.as_bytes())?;
    // guest-checks refuses to run where this marker is missing, i.e. anywhere but a guest.
    cpio.file("etc/balancer-guest", 0o644, b"")?;
    cpio.file("init", 0o755, contents.init.as_bytes())?;
    let mut out = cpio.finish()?;
    out.flush()?;
    Ok(fs::metadata(path)?.len())
}

fn which(program: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} not found in PATH (apt-get install busybox-static)"))
}

/// Adds a host binary and the shared libraries `ldd` resolves for it, at their host paths.
fn add_host_binary<W: Write>(cpio: &mut Cpio<W>, host: &Path, guest: &str) -> Result<()> {
    let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
    cpio.file(guest, 0o755, &data)?;
    // ldd exits non-zero for static binaries: nothing more to copy then.
    let Ok(out) = Command::new("ldd").arg(host).output() else {
        bail!("ldd is missing on the host");
    };
    if !out.status.success() {
        return Ok(());
    }
    for lib in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let guest_lib = lib.trim_start_matches('/');
        if cpio.has(guest_lib) {
            continue;
        }
        let data = fs::read(lib).with_context(|| format!("reading {lib}"))?;
        cpio.file(guest_lib, 0o755, &data)?;
    }
    Ok(())
}

/// A writer of the "newc" cpio format the kernel unpacks as initramfs.
struct Cpio<W: Write> {
    out: W,
    ino: u32,
    paths: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    fn new(out: W) -> Self {
        Cpio {
            out,
            ino: 1,
            paths: BTreeSet::new(),
        }
    }

    fn has(&self, path: &str) -> bool {
        self.paths.contains(path)
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        self.parents(path)?;
        if self.paths.insert(path.to_owned()) {
            self.entry(path, 0o040_755, &[])?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.add(path, 0o100_000 | perm, data)
    }

    fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.add(path, 0o120_777, target.as_bytes())
    }

    fn add(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.parents(path)?;
        if !self.paths.insert(path.to_owned()) {
            bail!("{path} added twice to the initramfs");
        }
        self.entry(path, mode, data)
    }

    fn parents(&mut self, path: &str) -> Result<()> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so equal inputs give equal archives
            u32::try_from(data.len()).context("file too large for cpio")?,
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).context("name too long")?,
            0, // check
        ];
        self.ino += 1;
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())?;
        Ok(())
    }

    /// Header+name and data each end on a 4-byte boundary.
    fn pad(&mut self, len: usize) -> Result<()> {
        let pad = (4 - len % 4) % 4;
        self.out.write_all(&[0; 3][..pad])?;
        Ok(())
    }

    fn finish(mut self) -> Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_parents_come_first() {
        let mut cpio = Cpio::new(Vec::new());
        cpio.file("a/b", 0o644, b"hello").unwrap();
        let out = cpio.finish().unwrap();
        // Header of "a" (the parent) first, then "a/b".
        assert!(out.starts_with(b"070701"));
        assert_eq!(&out[110..112], b"a\0");
        let second = 112; // 110 + 2 is already aligned
        assert_eq!(&out[second..second + 6], b"070701");
        assert_eq!(&out[second + 110..second + 114], b"a/b\0");
        let data = second + 116; // 110 + 4 padded to 4
        assert_eq!(&out[data..data + 5], b"hello");
        assert_eq!(out.len() % 4, 0);
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
