//! Debian kernel packages: pick, download, unpack and cache them, and pull modules out of them
//! with their dependencies.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::apt::Apt;
use super::proc::run;

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The Debian package it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` inside the unpacked tree.
    pub modules: PathBuf,
}

/// A kernel module ready to go into the initramfs, decompressed.
pub struct Module {
    pub name: String,
    pub data: Vec<u8>,
}

/// A row of Debian kernels: the newest package of a pattern in some suites.
pub struct Series {
    /// The row's name on the command line and in the table.
    pub label: &'static str,
    /// Where its kernel comes from, for `--list`.
    pub about: &'static str,
    /// `apt-cache search` pattern of its image packages.
    pattern: &'static str,
    /// Suites a package must be in.
    suites: &'static [&'static str],
}

/// The Debian rows, oldest first. The two newest are named for what they track, not for a
/// version, which moves as the archive does: the table and `--list` show the package.
pub const SERIES: &[Series] = &[
    Series {
        label: "5.10",
        about: "Debian 11 bullseye",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
        suites: &["bullseye", "bullseye-security"],
    },
    Series {
        label: "6.1",
        about: "Debian 12 bookworm",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        suites: &["bookworm", "bookworm-security"],
    },
    Series {
        label: "6.12",
        about: "Debian 12 bookworm",
        pattern: r"^linux-image-6\.12\.[0-9][^ ]*-cloud-amd64-unsigned$",
        suites: &["bookworm", "bookworm-security"],
    },
    Series {
        label: "6.x-bpo",
        about: "newest complete 6.x of trixie-backports",
        pattern: r"^linux-image-6\.[0-9]+\.[0-9]+\+deb13-cloud-amd64(-unsigned)?$",
        suites: &["trixie-backports"],
    },
    Series {
        label: "7.x",
        about: "newest complete 7.x of trixie-backports and sid",
        pattern: r"^linux-image-7\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64(-unsigned)?$",
        suites: &["trixie-backports", "sid"],
    },
];

pub fn series(label: &str) -> Option<&'static Series> {
    SERIES.iter().find(|s| s.label == label)
}

/// Where a series' unpacked tree lives in the cache; `package` marks it complete.
fn series_dir(cache: &Path, series: &str) -> PathBuf {
    cache.join("kernels").join(series)
}

/// The cached kernel of a series, if a previous run unpacked it.
pub fn cached(cache: &Path, series: &str) -> Result<Option<Kernel>> {
    let dir = series_dir(cache, series);
    let Ok(package) = fs::read_to_string(dir.join("package")) else {
        return Ok(None);
    };
    locate(&dir.join("tree"), package.trim()).map(Some)
}

/// Downloads tried before a series counts as unfetchable: mirrors list packages whose files
/// are gone (bullseye-security's three newest 5.10 images answered 404 here). Packages
/// whose parts apt does not know are passed over without counting.
const TRIES: usize = 6;

/// The kernel of a series: from the cache, else the newest package of its suites whose
/// parts all exist, fetched with `apt-get download` through the matrix's own apt.
pub fn fetch(cache: &Path, apt: &Apt, series: &Series) -> Result<Kernel> {
    if let Some(kernel) = cached(cache, series.label)? {
        return Ok(kernel);
    }
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let mut errors = Vec::new();
    // Old lists name packages the archive has dropped: on failure, refresh them once.
    for refresh in [false, true] {
        if refresh {
            apt.update()?;
        } else {
            apt.prepare(true)?;
        }
        let candidates = candidates(apt, series)?;
        if candidates.is_empty() {
            errors.push(format!(
                "apt knows no {} package in {}",
                series.pattern,
                series.suites.join(", ")
            ));
        }
        let mut tries = 0;
        for package in &candidates {
            if tries == TRIES {
                break;
            }
            let parts = match parts(apt, package)? {
                Ok(p) => p,
                Err(why) => {
                    errors.push(format!("{package}: {why}"));
                    continue;
                }
            };
            tries += 1;
            eprintln!(
                "xtask vm: {}: downloading {}",
                series.label,
                parts.join(" ")
            );
            match download(apt, &debs, &parts)
                .and_then(|files| unpack(cache, series.label, package, &files))
            {
                Ok(kernel) => return Ok(kernel),
                Err(err) => errors.push(format!("{package}: {err:#}")),
            }
        }
    }
    bail!(
        "could not fetch a {} kernel:\n  {}",
        series.label,
        errors.join("\n  ")
    )
}

/// The series' packages in its suites, newest first.
pub fn candidates(apt: &Apt, series: &Series) -> Result<Vec<String>> {
    let mut names = apt.search(series.pattern)?;
    names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
    names.dedup();
    let in_suites: BTreeSet<String> = apt
        .suites(&names)?
        .into_iter()
        .filter(|(_, suite)| series.suites.contains(&suite.as_str()))
        .map(|(name, _)| name)
        .collect();
    names.retain(|n| in_suites.contains(n));
    Ok(names)
}

/// The packages holding `package`'s files: itself, or the `linux-binary-*`,
/// `linux-modules-*` and `linux-base-*` packages a newer (split) meta package depends on.
/// The inner `Err` says which part the archive lacks.
pub type Parts = std::result::Result<Vec<String>, String>;

/// What to download for `package` (see [`Candidate::parts`]).
pub fn parts(apt: &Apt, package: &str) -> Result<Parts> {
    let Some(depends) = apt.depends(package)? else {
        return Ok(Err("not known to apt".into()));
    };
    let split: Vec<String> = depends
        .into_iter()
        .filter(|d| {
            ["linux-binary-", "linux-modules-", "linux-base-"]
                .iter()
                .any(|p| d.starts_with(p))
        })
        .collect();
    if !split
        .iter()
        .any(|d| d.starts_with("linux-binary-") || d.starts_with("linux-modules-"))
    {
        return Ok(Ok(vec![package.to_owned()]));
    }
    for part in &split {
        if apt.depends(part)?.is_none() {
            return Ok(Err(format!("{part} is not in the archive")));
        }
    }
    Ok(Ok(split))
}

/// Orders names like `6.1.0-9` before `6.1.0-56`: numbers compare as numbers.
fn version_key(name: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits > 0 {
            key.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            key.push((0, rest[..text].to_owned()));
            rest = &rest[text..];
        }
    }
    key
}

/// The .deb of every part, downloading those not in `debs` yet.
fn download(apt: &Apt, debs: &Path, parts: &[String]) -> Result<Vec<PathBuf>> {
    let missing: Vec<String> = parts
        .iter()
        .filter(|p| find_deb(debs, p).ok().flatten().is_none())
        .cloned()
        .collect();
    if !missing.is_empty() {
        apt.download(debs, &missing)?;
    }
    parts
        .iter()
        .map(|p| find_deb(debs, p)?.with_context(|| format!("apt-get download left no {p}_*.deb")))
        .collect()
}

fn find_deb(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(debs).with_context(|| format!("reading {}", debs.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(debs.join(&*name)));
        }
    }
    Ok(None)
}

fn unpack(cache: &Path, series: &str, package: &str, debs: &[PathBuf]) -> Result<Kernel> {
    let dir = series_dir(cache, series);
    // A half-finished earlier unpack has no `package` file: start over.
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let tree = dir.join("tree");
    fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    for deb in debs {
        run(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree),
            &format!("dpkg-deb -x {}", deb.display()),
        )?;
    }
    let kernel = locate(&tree, package)?;
    fs::write(dir.join("package"), package).context("marking the unpacked kernel complete")?;
    Ok(kernel)
}

/// Finds the kernel image and the modules of the one release in an unpacked package.
fn locate(tree: &Path, package: &str) -> Result<Kernel> {
    // Debian moved modules to /usr/lib/modules in later releases; accept both.
    let modules_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| tree.join(p))
        .find(|p| p.is_dir())
        .with_context(|| format!("no lib/modules in {}", tree.display()))?;
    let release = fs::read_dir(&modules_root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} is empty", modules_root.display()))?;
    // Split packages (linux-binary-*) keep the image beside the modules.
    let vmlinuz = [
        tree.join("boot").join(format!("vmlinuz-{release}")),
        modules_root.join(&release).join("vmlinuz"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no vmlinuz-{release} in {}", tree.display()))?;
    Ok(Kernel {
        modules: modules_root.join(&release),
        release,
        package: package.to_owned(),
        vmlinuz,
    })
}

/// Module names are spelled with `-` or `_` interchangeably.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl Kernel {
    /// The modules `wanted` and everything they depend on, dependencies first, leaving out
    /// what the kernel has built in. There is no modules.dep in the package (depmod runs at
    /// install time), so dependencies come from each module's own `depends=` field.
    pub fn module_closure(&self, wanted: &[&str]) -> Result<Vec<Module>> {
        let builtin: BTreeSet<String> = fs::read_to_string(self.modules.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(|f| normalize(f.trim_end_matches(".ko")))
            .collect();
        let mut files = BTreeMap::new();
        index(&self.modules.join("kernel"), &mut files)?;

        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in wanted {
            self.visit(&normalize(name), &builtin, &files, &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        builtin: &BTreeSet<String>,
        files: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
        depth: usize,
    ) -> Result<()> {
        if depth > 32 {
            bail!("module dependencies of {name} nest too deep (a cycle?)");
        }
        if builtin.contains(name) || !seen.insert(name.to_owned()) {
            return Ok(());
        }
        let path = files.get(name).with_context(|| {
            format!("module {name} is neither built in nor in {}", self.release)
        })?;
        let data = read_module(path)?;
        for dep in depends(&data) {
            self.visit(&normalize(&dep), builtin, files, seen, order, depth + 1)?;
        }
        order.push(Module {
            name: name.to_owned(),
            data,
        });
        Ok(())
    }
}

/// Maps module names to their files under `dir`.
fn index(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            index(&path, files)?;
            continue;
        }
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some((stem, _)) = file.split_once(".ko") {
            files.insert(normalize(stem), path);
        }
    }
    Ok(())
}

/// Reads a module, decompressing `.ko.xz`/`.ko.zst`/`.ko.gz` on the host: busybox insmod hands
/// the bytes to init_module, which wants them plain.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return fs::read(path).with_context(|| format!("reading {}", path.display())),
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => bail!("unknown module format: {}", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} (install it to unpack modules)"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The `depends=` entry of a module's .modinfo section: NUL-separated `key=value` strings.
fn depends(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(start) = module.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let value = &module[start + key.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_package_sorts_first() {
        let mut names = [
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-47-cloud-amd64-unsigned",
        ];
        names.sort_by_key(|n| std::cmp::Reverse(version_key(n)));
        assert_eq!(names[0], "linux-image-6.1.0-56-cloud-amd64-unsigned");
        assert_eq!(names[2], "linux-image-6.1.0-9-cloud-amd64-unsigned");
    }

    #[test]
    fn depends_reads_the_modinfo_field() {
        let blob = b"\x7fELF...\0license=GPL\0depends=virtio_ring,virtio\0retpoline=Y\0";
        assert_eq!(depends(blob), ["virtio_ring", "virtio"]);
        assert!(depends(b"\0license=GPL\0depends=\0name=x\0").is_empty());
    }
}
