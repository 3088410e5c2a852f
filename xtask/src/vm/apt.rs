//! The matrix's own apt configuration under `.cache/vm/apt/`: its own sources (Debian
//! bullseye, bookworm, trixie-backports and sid, with their security suites), lists, cache
//! and status, so that no row depends on, or changes, what the host's apt knows. The sources
//! point at the archive host the host's own apt uses (a mirror or proxy there is kept).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use super::proc::{output, run};

/// Suites of the main archive and of the security archive that the rows draw from.
const ARCHIVE_SUITES: &[&str] = &["bullseye", "bookworm", "trixie-backports", "sid"];
const SECURITY_SUITES: &[&str] = &["bullseye-security", "bookworm-security"];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEFAULT_ARCHIVE: &str = "http://deb.debian.org/debian";

/// Debian release names (and aliases) a host source may name, before any `-suffix`.
const DEBIAN_RELEASES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// apt with the matrix's own configuration.
pub struct Apt {
    root: PathBuf,
}

/// Where the host's apt gets Debian from.
#[derive(Debug, PartialEq, Eq)]
pub struct Mirrors {
    pub archive: String,
    pub security: String,
    /// The host file that named them, or a note that none did.
    pub from: String,
}

impl Apt {
    pub fn new(cache: &Path) -> Apt {
        Apt {
            root: cache.join("apt"),
        }
    }

    fn sources(&self) -> PathBuf {
        self.root.join("sources.list")
    }

    fn lists(&self) -> PathBuf {
        self.root.join("state/lists")
    }

    /// `apt-get`/`apt-cache` reading only the matrix's sources and state. The host's
    /// apt.conf.d still applies (a proxy configured there is wanted), minus its extra index
    /// targets (AppStream metadata).
    pub fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        let r = &self.root;
        let mut opts = vec![
            format!("Dir::Etc::SourceList={}", self.sources().display()),
            format!(
                "Dir::Etc::SourceParts={}",
                r.join("sources.list.d").display()
            ),
            format!("Dir::Etc::Preferences={}", r.join("preferences").display()),
            format!(
                "Dir::Etc::PreferencesParts={}",
                r.join("preferences.d").display()
            ),
            format!("Dir::State={}", r.join("state").display()),
            format!("Dir::State::status={}", r.join("state/status").display()),
            format!("Dir::Cache={}", r.join("cache").display()),
            // Hosts (Docker images) often turn the package cache off; without it every
            // apt-cache call parses all the lists again (3.5 s against 0.6 s here).
            "Dir::Cache::pkgcache=pkgcache.bin".into(),
            "Dir::Cache::srcpkgcache=srcpkgcache.bin".into(),
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
        ];
        // apt's download sandbox user cannot write to the root-owned cache: root fetches.
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            opts.push("APT::Sandbox::User=root".into());
        }
        cmd.arg("-q");
        for o in opts {
            cmd.args(["-o", &o]);
        }
        cmd
    }

    /// Writes the sources (from the host's mirrors) and fetches the lists when there are
    /// none yet or the sources changed. `update` = false only writes and reports whether the
    /// lists are usable.
    pub fn prepare(&self, update: bool) -> Result<bool> {
        for dir in [
            "sources.list.d",
            "preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
        ] {
            let d = self.root.join(dir);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let status = self.root.join("state/status");
        if !status.exists() {
            fs::write(&status, "").with_context(|| format!("creating {}", status.display()))?;
        }
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing (apt-get install debian-archive-keyring)");
        }
        let text = sources_list(&host_mirrors());
        let changed = fs::read_to_string(self.sources()).ok().as_deref() != Some(text.as_str());
        if changed {
            fs::write(self.sources(), &text)
                .with_context(|| format!("writing {}", self.sources().display()))?;
        }
        let have_lists = fs::read_dir(self.lists())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false);
        if (changed || !have_lists) && update {
            self.update()?;
            return Ok(true);
        }
        Ok(have_lists && !changed)
    }

    pub fn update(&self) -> Result<()> {
        eprintln!(
            "xtask vm: apt-get update with the matrix's own sources ({})",
            self.sources().display()
        );
        run(
            self.command("apt-get").arg("update"),
            "apt-get update (matrix sources)",
        )
    }

    /// `apt-cache search --names-only <pattern>`: package names.
    pub fn search(&self, pattern: &str) -> Result<Vec<String>> {
        let out = output(
            self.command("apt-cache")
                .args(["search", "--names-only", pattern]),
            "apt-cache search",
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// The suites each of `packages` is in (`apt-cache madison`).
    pub fn suites(&self, packages: &[String]) -> Result<Vec<(String, String)>> {
        if packages.is_empty() {
            return Ok(Vec::new());
        }
        let out = output(
            self.command("apt-cache").arg("madison").args(packages),
            "apt-cache madison",
        )?;
        Ok(out.lines().filter_map(parse_madison).collect())
    }

    /// The candidate version's `Depends` of a package, names only (first of alternatives);
    /// `None` when apt knows no such package.
    pub fn depends(&self, package: &str) -> Result<Option<Vec<String>>> {
        let out = output(
            self.command("apt-cache")
                .args(["show", "--no-all-versions", package]),
            "apt-cache show",
        )?;
        if !out.lines().any(|l| l.starts_with("Package:")) {
            return Ok(None);
        }
        Ok(Some(
            out.lines()
                .find_map(|l| l.strip_prefix("Depends:"))
                .map(parse_depends)
                .unwrap_or_default(),
        ))
    }

    /// `apt-get download` of `packages` into `dir`.
    pub fn download(&self, dir: &Path, packages: &[String]) -> Result<()> {
        run(
            self.command("apt-get")
                .arg("download")
                .args(packages)
                .current_dir(dir),
            &format!("apt-get download {}", packages.join(" ")),
        )
    }
}

/// `name | version | uri suite/component arch Packages` -> (name, suite).
fn parse_madison(line: &str) -> Option<(String, String)> {
    let mut fields = line.split('|').map(str::trim);
    let name = fields.next()?;
    let _version = fields.next()?;
    let suite = fields
        .next()?
        .split_whitespace()
        .nth(1)?
        .split('/')
        .next()?;
    Some((name.to_owned(), suite.to_owned()))
}

/// `a (= 1), b | c, d` -> [a, b, d].
fn parse_depends(text: &str) -> Vec<String> {
    text.split(',')
        .filter_map(|alt| alt.split('|').next()?.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The matrix's sources.list for `m`.
fn sources_list(m: &Mirrors) -> String {
    let mut text = format!(
        "# Written by cargo xtask vm: the kernel matrix's own sources, on the archive host\n\
         # the host's apt uses ({}). Rewritten when that changes.\n",
        m.from
    );
    for suite in ARCHIVE_SUITES {
        text.push_str(&format!(
            "deb [signed-by={KEYRING}] {} {suite} main\n",
            m.archive
        ));
    }
    for suite in SECURITY_SUITES {
        text.push_str(&format!(
            "deb [signed-by={KEYRING}] {} {suite} main\n",
            m.security
        ));
    }
    text
}

/// The Debian archive and security URIs of the host's own sources (`/etc/apt/sources.list`
/// and `sources.list.d/*.list|*.sources`), else deb.debian.org.
pub fn host_mirrors() -> Mirrors {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    let mut entries = Vec::new();
    for f in &files {
        let Ok(text) = fs::read_to_string(f) else {
            continue;
        };
        let parsed = if f.extension().is_some_and(|e| e == "sources") {
            parse_deb822(&text)
        } else {
            parse_one_line(&text)
        };
        entries.extend(
            parsed
                .into_iter()
                .map(|(u, s)| (u, s, f.display().to_string())),
        );
    }
    mirrors_from(&entries)
}

/// Picks the archive (a Debian suite that is not `-security`) and the security URI from
/// (uri, suite, file) entries; derives what is missing.
fn mirrors_from(entries: &[(String, String, String)]) -> Mirrors {
    let debian = |s: &str| DEBIAN_RELEASES.contains(&s.split('-').next().unwrap_or(s));
    let archive = entries
        .iter()
        .find(|(_, s, _)| debian(s) && !s.ends_with("-security"));
    let security = entries
        .iter()
        .find(|(_, s, _)| debian(s) && s.ends_with("-security"));
    let trim = |u: &str| u.trim_end_matches('/').to_owned();
    match (archive, security) {
        (Some(a), Some(s)) => Mirrors {
            archive: trim(&a.0),
            security: trim(&s.0),
            from: if a.2 == s.2 {
                a.2.clone()
            } else {
                format!("{}, {}", a.2, s.2)
            },
        },
        (Some(a), None) => Mirrors {
            archive: trim(&a.0),
            security: format!("{}-security", trim(&a.0)),
            from: a.2.clone(),
        },
        (None, Some(s)) => Mirrors {
            archive: trim(&s.0).trim_end_matches("-security").to_owned(),
            security: trim(&s.0),
            from: s.2.clone(),
        },
        (None, None) => Mirrors {
            archive: DEFAULT_ARCHIVE.into(),
            security: format!("{DEFAULT_ARCHIVE}-security"),
            from: "no Debian source on the host: deb.debian.org".into(),
        },
    }
}

/// `deb [options] uri suite components...` lines -> (uri, suite).
fn parse_one_line(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
            rest.drain(..=end);
        }
        if let [uri, suite, ..] = rest.as_slice() {
            out.push(((*uri).to_owned(), (*suite).to_owned()));
        }
    }
    out
}

/// deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Enabled:`) -> (uri, suite).
fn parse_deb822(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_default()
        };
        if !field("Types").split_whitespace().any(|t| t == "deb")
            || field("Enabled").eq_ignore_ascii_case("no")
        {
            continue;
        }
        for uri in field("URIs").split_whitespace() {
            for suite in field("Suites").split_whitespace() {
                out.push((uri.to_owned(), suite.to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sources_in_both_formats_give_the_mirrors() {
        let deb822 = "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n\
                      Suites: bookworm bookworm-updates\nComponents: main\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n";
        let mut entries: Vec<_> = parse_deb822(deb822)
            .into_iter()
            .map(|(u, s)| (u, s, "debian.sources".to_owned()))
            .collect();
        let m = mirrors_from(&entries);
        assert_eq!(m.archive, "http://mirror.example/debian");
        assert_eq!(m.security, "http://mirror.example/debian-security");

        let list = "# old style\ndeb [arch=amd64 signed-by=/k.gpg] http://proxy:3142/debian/ sid main\n\
                    deb-src http://x/debian sid main\ndeb https://packages.cloud.google.com/apt cloud-sdk main\n";
        assert_eq!(
            parse_one_line(list),
            [
                ("http://proxy:3142/debian/".to_owned(), "sid".to_owned()),
                (
                    "https://packages.cloud.google.com/apt".to_owned(),
                    "cloud-sdk".to_owned()
                )
            ]
        );
        entries = parse_one_line(list)
            .into_iter()
            .map(|(u, s)| (u, s, "sources.list".to_owned()))
            .collect();
        let m = mirrors_from(&entries);
        assert_eq!(m.archive, "http://proxy:3142/debian");
        assert_eq!(m.security, "http://proxy:3142/debian-security");
        assert_eq!(mirrors_from(&[]).archive, DEFAULT_ARCHIVE);
    }

    #[test]
    fn disabled_stanzas_and_other_archives_are_ignored() {
        let text = "Types: deb\nURIs: http://a/debian\nSuites: trixie\nEnabled: no\n\n\
                    Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n";
        let entries: Vec<_> = parse_deb822(text)
            .into_iter()
            .map(|(u, s)| (u, s, "x".to_owned()))
            .collect();
        assert_eq!(mirrors_from(&entries).archive, DEFAULT_ARCHIVE);
    }

    #[test]
    fn madison_and_depends_parse() {
        let line = "linux-image-5.10.0-43-cloud-amd64-unsigned | 5.10.251-5 | \
                    http://deb.debian.org/debian-security bullseye-security/main amd64 Packages";
        assert_eq!(
            parse_madison(line),
            Some((
                "linux-image-5.10.0-43-cloud-amd64-unsigned".into(),
                "bullseye-security".into()
            ))
        );
        assert_eq!(
            parse_depends(
                " dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, kmod, \
                 linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)"
            ),
            ["dracut", "kmod", "linux-binary-7.3.4+deb13-cloud-amd64"]
        );
    }
}
