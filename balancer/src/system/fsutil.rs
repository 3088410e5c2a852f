//! Reading files under a root, resolving sysfs links inside it, and collecting warnings.
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use super::SystemError;
use crate::cpumask::CpuSet;

pub(crate) struct Root<'a> {
    root: &'a Path,
}

impl<'a> Root<'a> {
    pub(super) fn new(root: &'a Path) -> Self {
        Root { root }
    }

    pub(super) fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    pub(super) fn read_required(&self, rel: &str) -> Result<String, SystemError> {
        // Large seq files (proc/interrupts) may come in several short reads: read to the end.
        let path = self.path(rel);
        std::fs::read_to_string(&path).map_err(|e| SystemError::io(path, e))
    }

    /// Contents of an optional file: None when absent; other errors (EIO, EACCES: some sysfs
    /// attributes refuse reads) become warnings rather than failing the model.
    pub(super) fn read_opt(&self, rel: impl AsRef<Path>, warn: &mut Warnings) -> Option<String> {
        let rel = rel.as_ref();
        match read_small(&self.path(rel)) {
            Ok(s) => Some(s),
            Err(e) if is_absent(&e) => None,
            Err(e) => {
                warn.add(
                    "unreadable files",
                    1,
                    Some(format!("{}: {e}", rel.display())),
                );
                None
            }
        }
    }

    /// Names in a directory, unsorted; empty when absent.
    pub(super) fn list(&self, rel: impl AsRef<Path>, warn: &mut Warnings) -> Vec<String> {
        let rel = rel.as_ref();
        match std::fs::read_dir(self.path(rel)) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) if is_absent(&e) => Vec::new(),
            Err(e) => {
                warn.add(
                    "unreadable directories",
                    1,
                    Some(format!("{}: {e}", rel.display())),
                );
                Vec::new()
            }
        }
    }

    pub(super) fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.path(rel).symlink_metadata().is_ok()
    }

    /// Basename of a symlink's target (`driver` -> "virtio-pci").
    pub(super) fn link_name(&self, rel: impl AsRef<Path>) -> Option<String> {
        let target = std::fs::read_link(self.path(rel)).ok()?;
        target.file_name()?.to_str().map(str::to_string)
    }

    /// Follows symlinks in every component of `rel`, keeping the result inside the root
    /// (absolute link targets are taken as relative to the root, `..` stops at it), so
    /// captured sysfs trees resolve the same as the live one. Returns the path relative to
    /// the root; components that don't exist are kept lexically.
    pub(super) fn resolve(&self, rel: impl AsRef<Path>) -> PathBuf {
        let mut pending: Vec<OsString> = components(rel.as_ref());
        pending.reverse();
        let mut current: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(comp) = pending.pop() {
            if comp == ".." {
                current.pop();
                continue;
            }
            if comp == "." {
                continue;
            }
            current.push(comp);
            let here: PathBuf = current.iter().collect();
            let Ok(target) = std::fs::read_link(self.path(&here)) else {
                continue;
            };
            links += 1;
            if links > 40 {
                break;
            }
            current.pop();
            if target.is_absolute() {
                current.clear();
            }
            let mut comps = components(&target);
            comps.reverse();
            pending.extend(comps);
        }
        current.iter().collect()
    }
}

/// A directory opened once, whose files are then opened relative to it (openat): on a
/// 1500-IRQ machine most of the model's time is thousands of opens, and walking the full path
/// each time costs a large share of each.
pub(crate) struct Dir {
    file: Option<std::fs::File>,
    rel: PathBuf,
}

impl Root<'_> {
    /// Never fails: a directory that can't be opened reads as empty.
    pub(super) fn open_dir(&self, rel: impl AsRef<Path>) -> Dir {
        let rel = rel.as_ref();
        Dir {
            file: std::fs::File::open(self.path(rel)).ok(),
            rel: rel.to_path_buf(),
        }
    }
}

impl Dir {
    /// Like [`Root::read_opt`], for `name` inside this directory.
    pub(super) fn read_opt(&self, name: &str, warn: &mut Warnings) -> Option<String> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let dir = self.file.as_ref()?;
        let cname = std::ffi::CString::new(name).ok()?;
        // SAFETY: both pointers are valid for the call; the fd is owned by `dir`.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        let result = if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            // SAFETY: openat just returned this fd and nothing else owns it.
            read_file(unsafe { std::fs::File::from_raw_fd(fd) })
        };
        match result {
            Ok(s) => Some(s),
            Err(e) if is_absent(&e) => None,
            Err(e) => {
                let rel = self.rel.join(name);
                warn.add(
                    "unreadable files",
                    1,
                    Some(format!("{}: {e}", rel.display())),
                );
                None
            }
        }
    }
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn is_absent(e: &io::Error) -> bool {
    // ENOTDIR: a fixture or kernel with a file where we expected a directory; same as absent.
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads a small attribute file. Single-record procfs files and sysfs attributes come whole in one read(2) (sysfs
/// attributes are at most a page), so read into a page-sized buffer and only loop when it
/// fills: `read_to_end` would add an fstat and an lseek to every file, which on a 1500-IRQ
/// machine is thousands of syscalls. Invalid UTF-8 is replaced, not fatal.
fn read_small(path: &Path) -> io::Result<String> {
    read_file(std::fs::File::open(path)?)
}

fn read_file(mut file: std::fs::File) -> io::Result<String> {
    let mut buf = [0u8; 4096];
    let n = loop {
        match file.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    if n < buf.len() {
        // A short read from procfs/sysfs (or a local regular file) is the whole file.
        return Ok(into_string(buf[..n].to_vec()));
    }
    // Larger than a page (proc/interrupts, proc/stat): read the rest.
    let mut all = buf.to_vec();
    file.read_to_end(&mut all)?;
    Ok(into_string(all))
}

fn into_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Warnings grouped by kind: a count and the first example of each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Warnings {
    kinds: BTreeMap<String, (usize, Option<String>)>,
}

impl Warnings {
    pub(super) fn add(&mut self, kind: &str, count: usize, example: Option<String>) {
        let entry = self.kinds.entry(kind.to_string()).or_insert((0, None));
        entry.0 += count;
        if entry.1.is_none() {
            entry.1 = example;
        }
    }

    pub(super) fn merge(&mut self, other: Warnings) {
        for (kind, (count, example)) in other.kinds {
            self.add(&kind, count, example);
        }
    }

    pub(super) fn into_lines(self) -> Vec<String> {
        self.kinds
            .into_iter()
            .map(|(kind, (count, example))| match example {
                Some(ex) => format!("{kind}: {count} (first: {ex})"),
                None => format!("{kind}: {count}"),
            })
            .collect()
    }
}

/// Parses a cpulist file, warning under `kind` when malformed.
pub(crate) fn parse_list_warn(
    text: &str,
    kind: &str,
    what: &dyn std::fmt::Display,
    warn: &mut Warnings,
) -> Option<CpuSet> {
    match CpuSet::parse_list(text) {
        Ok(set) => Some(set),
        Err(e) => {
            warn.add(kind, 1, Some(format!("{what}: {e}")));
            None
        }
    }
}

/// Parses a hex mask file, warning under `kind` when malformed.
pub(crate) fn parse_mask_warn(
    text: &str,
    kind: &str,
    what: &dyn std::fmt::Display,
    warn: &mut Warnings,
) -> Option<CpuSet> {
    match CpuSet::parse_mask(text) {
        Ok(set) => Some(set),
        Err(e) => {
            warn.add(kind, 1, Some(format!("{what}: {e}")));
            None
        }
    }
}

/// Parses a decimal integer file, warning under `kind` when malformed.
pub(crate) fn parse_int_warn<T: std::str::FromStr>(
    text: &str,
    kind: &str,
    what: &dyn std::fmt::Display,
    warn: &mut Warnings,
) -> Option<T> {
    match text.trim().parse::<T>() {
        Ok(v) => Some(v),
        Err(_) => {
            warn.add(kind, 1, Some(format!("{what}: {:?}", text.trim())));
            None
        }
    }
}

/// Whether `s` is a full PCI address "dddd:bb:dd.f" (lowercase or uppercase hex).
pub(crate) fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_shape() {
        assert!(is_pci_address("0000:00:03.0"));
        assert!(is_pci_address("0000:3b:00.1"));
        assert!(!is_pci_address("0000:00:03"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("0000:0g:03.0"));
    }

    #[test]
    fn reads_small_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(10_000);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("page"), "y".repeat(4096)).unwrap();
        std::fs::write(dir.path().join("small"), "3\n").unwrap();
        std::fs::write(dir.path().join("bad"), b"\xff1").unwrap();
        let fs = Root::new(dir.path());
        let d = fs.open_dir("");
        let mut w = Warnings::default();
        type Reader<'a> = Box<dyn Fn(&str, &mut Warnings) -> Option<String> + 'a>;
        let readers: [Reader; 2] = [
            Box::new(|name, w| fs.read_opt(name, w)),
            Box::new(|name, w| d.read_opt(name, w)),
        ];
        for read in readers {
            assert_eq!(read("big", &mut w).unwrap(), big);
            assert_eq!(read("page", &mut w).unwrap().len(), 4096);
            assert_eq!(read("small", &mut w).unwrap(), "3\n");
            assert_eq!(read("bad", &mut w).unwrap(), "\u{fffd}1");
            assert_eq!(read("missing", &mut w), None);
            assert_eq!(read("small/x", &mut w), None);
        }
        // A directory read as a file is unreadable (EISDIR): a warning, not a failure.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(d.read_opt("sub", &mut w), None);
        assert_eq!(w.into_lines().len(), 1);
        let missing = fs.open_dir("nope");
        assert_eq!(missing.read_opt("x", &mut Warnings::default()), None);
    }

    #[test]
    fn resolve_stays_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0"))
            .unwrap();
        std::fs::create_dir_all(root.join("sys/class/net")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0",
            root.join("sys/class/net/eth0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../../virtio2",
            root.join("sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0/device"),
        )
        .unwrap();
        // An absolute link is re-rooted.
        std::os::unix::fs::symlink(
            "/sys/devices/pci0000:00/0000:00:03.0",
            root.join("sys/class/net/abs"),
        )
        .unwrap();
        let fs = Root::new(root);
        assert_eq!(
            fs.resolve("sys/class/net/eth0/device"),
            PathBuf::from("sys/devices/pci0000:00/0000:00:03.0/virtio2")
        );
        assert_eq!(
            fs.resolve("sys/class/net/abs"),
            PathBuf::from("sys/devices/pci0000:00/0000:00:03.0")
        );
        assert_eq!(fs.resolve("../../x"), PathBuf::from("x"));
        // A loop ends.
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let _ = fs.resolve("loop/x");
    }
}
