//! Proximity overrides in birq's format, for firmware that reports a PCI device's NUMA node as
//! -1 or wrongly:
//!
//! ```text
//! 0000: node 1                  # every device in domain 0000
//! 0000:08:00.0 node 0           # more specific: wins for this device
//! 0000:00:1c.6 cpumask ff       # CPUs 0-7, in the hex form of smp_affinity
//! ```
//!
//! `#` starts a comment, blank lines are ignored, addresses may be prefixes and the longest
//! matching prefix wins (case-insensitive). [`parse`] reports bad lines with their line number
//! and skips them; a repeated prefix replaces the earlier rule and is reported too. Every
//! command reads the file through [`load`], which refuses a file with any bad line (all of
//! them listed in one error) or naming a node or CPU the machine lacks.
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::SystemError;
use crate::cpumask::CpuSet;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Proximity {
    /// Sorted by prefix length, longest first, so the first match is the answer.
    rules: Vec<ProximityRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProximityRule {
    /// Lowercased PCI address or prefix.
    pub prefix: String,
    pub(crate) target: ProximityTarget,
    /// 1-based line in the file.
    pub(crate) line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProximityTarget {
    Node(u32),
    CpuMask(CpuSet),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct ProximityError {
    /// 1-based.
    pub line: usize,
    text: String,
    message: String,
}

impl Proximity {
    /// The rule for a full PCI address: the longest matching prefix.
    pub fn lookup(&self, pci_addr: &str) -> Option<&ProximityRule> {
        let addr = pci_addr.trim();
        self.rules.iter().find(|r| {
            addr.len() >= r.prefix.len()
                && addr.as_bytes()[..r.prefix.len()].eq_ignore_ascii_case(r.prefix.as_bytes())
        })
    }

    pub fn rules(&self) -> &[ProximityRule] {
        &self.rules
    }

    /// Reads and parses a file.
    pub fn read(path: &Path) -> Result<(Proximity, Vec<ProximityError>), SystemError> {
        let text = std::fs::read_to_string(path).map_err(|e| SystemError::io(path, e))?;
        Ok(parse(&text))
    }
}

/// Why [`load`] refused a proximity file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("proximity file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem, one `FILE:LINE: message: "text"` line each.
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<ProximityError>,
    },
}

fn render(path: &Path, problems: &[ProximityError]) -> String {
    problems
        .iter()
        .map(|e| format!("{}:{}: {}: {:?}", path.display(), e.line, e.message, e.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and checks a proximity file against the machine under `root`: nodes must
/// exist (`sys/devices/system/node/nodeN`) and a cpumask must name present CPUs
/// (`sys/devices/system/cpu/present`). What cannot be read from the machine is not checked.
pub(crate) fn load(path: &Path, root: &Path) -> Result<Proximity, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (prox, mut problems) = parse(&text);
    let nodes_dir = root.join("sys/devices/system/node");
    let nodes: Option<std::collections::BTreeSet<u32>> =
        std::fs::read_dir(&nodes_dir).ok().map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
                .collect()
        });
    let present = std::fs::read_to_string(root.join("sys/devices/system/cpu/present"))
        .ok()
        .and_then(|t| CpuSet::parse_list(&t).ok());
    let lines: Vec<&str> = text.lines().collect();
    for rule in prox.rules() {
        let message = match &rule.target {
            ProximityTarget::Node(n) => nodes.as_ref().filter(|ns| !ns.contains(n)).map(|ns| {
                let have: Vec<String> = ns.iter().map(u32::to_string).collect();
                format!("node {n} does not exist (nodes: {})", have.join(", "))
            }),
            ProximityTarget::CpuMask(mask) => present
                .as_ref()
                .map(|p| mask.difference(p))
                .filter(|missing| !missing.is_empty())
                .map(|missing| {
                    format!(
                        "cpumask names CPU(s) {missing} that do not exist (present: {})",
                        present.clone().unwrap_or_default()
                    )
                }),
        };
        if let Some(message) = message {
            problems.push(ProximityError {
                line: rule.line,
                text: lines.get(rule.line - 1).copied().unwrap_or("").to_string(),
                message,
            });
        }
    }
    if problems.is_empty() {
        Ok(prox)
    } else {
        problems.sort_by_key(|e| e.line);
        Err(LoadError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Parses the file; never fails as a whole: bad lines come back as errors.
pub fn parse(text: &str) -> (Proximity, Vec<ProximityError>) {
    let mut rules: Vec<ProximityRule> = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let error = |message: &str| ProximityError {
            line,
            text: raw.to_string(),
            message: message.to_string(),
        };
        let words: Vec<&str> = content.split_ascii_whitespace().collect();
        let [prefix, keyword, value] = words[..] else {
            errors.push(error(
                "expected `<pci address or prefix> node N|cpumask HEX`",
            ));
            continue;
        };
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            errors.push(error("the address may hold only hex digits, ':' and '.'"));
            continue;
        }
        let target = match keyword {
            "node" => match value.parse::<u32>() {
                Ok(n) if n < crate::cpumask::MAX_CPUS => ProximityTarget::Node(n),
                _ => {
                    errors.push(error("node must be a non-negative number"));
                    continue;
                }
            },
            "cpumask" => match CpuSet::parse_mask(value) {
                Ok(mask) if !mask.is_empty() => ProximityTarget::CpuMask(mask),
                Ok(_) => {
                    errors.push(error("empty cpumask"));
                    continue;
                }
                Err(e) => {
                    errors.push(error(&format!("bad cpumask: {e}")));
                    continue;
                }
            },
            _ => {
                errors.push(error("expected `node` or `cpumask`"));
                continue;
            }
        };
        let prefix = prefix.to_ascii_lowercase();
        if let Some(old) = rules.iter_mut().find(|r| r.prefix == prefix) {
            errors.push(error(&format!("replaces the rule of line {}", old.line)));
            old.target = target;
            old.line = line;
            continue;
        }
        rules.push(ProximityRule {
            prefix,
            target,
            line,
        });
    }
    // Stable: equal lengths can't both match one address unless equal, which was merged.
    rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    (Proximity { rules }, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birq_example() {
        let (p, errors) =
            parse("0000: node 1\n0000:08:00.0 node 0\n0000:00:1c.6 cpumask ff\n# it's comment\n\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(p.rules().len(), 3);
        assert_eq!(
            p.lookup("0000:08:00.0").unwrap().target,
            ProximityTarget::Node(0)
        );
        assert_eq!(
            p.lookup("0000:08:00.1").unwrap().target,
            ProximityTarget::Node(1)
        );
        assert_eq!(
            p.lookup("0000:00:1C.6").unwrap().target,
            ProximityTarget::CpuMask(CpuSet::first_n(8))
        );
        assert_eq!(p.lookup("0001:00:00.0"), None);
        assert_eq!(p.lookup("0000:08:00.0").unwrap().line, 2);
    }

    #[test]
    fn load_lists_every_problem_and_checks_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/devices/system/node/node0")).unwrap();
        std::fs::create_dir_all(root.join("sys/devices/system/cpu")).unwrap();
        std::fs::write(root.join("sys/devices/system/cpu/present"), "0-3\n").unwrap();
        let file = root.join("pxm");
        std::fs::write(
            &file,
            "0000: node 0\nzz node 1\n0000:01 node 1\n0000:02 cpumask f0\n0000:03 color 1\n",
        )
        .unwrap();
        let e = load(&file, root).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        let f = file.display().to_string();
        assert!(lines[0].starts_with(&format!("{f}:2: the address")), "{e}");
        assert!(
            lines[1].starts_with(&format!("{f}:3: node 1 does not exist (nodes: 0)")),
            "{e}"
        );
        assert!(
            lines[2].starts_with(&format!("{f}:4: cpumask names CPU(s) 4-7")),
            "{e}"
        );
        assert!(
            lines[3].starts_with(&format!("{f}:5: expected `node`")),
            "{e}"
        );
        std::fs::write(&file, "0000: node 0\n0000:02 cpumask 3\n").unwrap();
        assert_eq!(load(&file, root).unwrap().rules().len(), 2);
        assert!(matches!(
            load(&root.join("missing"), root),
            Err(LoadError::Read { .. })
        ));
    }

    #[test]
    fn bad_lines_have_numbers() {
        let (p, errors) = parse(
            "0000:3b node 1   # trailing comment\n\
             0000:3b node 2\n\
             zz node 1\n\
             0000: node -1\n\
             0000: cpumask xyz\n\
             0000: cpumask 0\n\
             0000: color 1\n\
             0000: node\n\
             0000: node 1 extra\n",
        );
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(p.rules().len(), 1);
        assert_eq!(
            p.lookup("0000:3b:00.0").unwrap().target,
            ProximityTarget::Node(2)
        );
        assert!(
            errors[0]
                .to_string()
                .starts_with("line 2: replaces the rule of line 1")
        );
    }
}
