//! `proc/interrupts`: per-CPU interrupt counts, parsed every sampling interval.
//!
//! The kernel prints (kernel/irq/proc.c, `show_interrupts`) a header of the *online* CPUs,
//! then per IRQ: `N:`, one count per online CPU, the chip name (`%8s`, may contain spaces on
//! some platforms), the hwirq number and flow name (`5-edge`, `524288-edge`, `-ioapic-level`
//! on Xen, `27 Level` with GENERIC_IRQ_SHOW_LEVEL on ARM), and the actions separated by
//! `", "`. Architecture rows (`LOC:`, `NMI:`, `ERR:`, `IPI0:`) have counts and a description;
//! some (`ERR`, `MIS`) have a single count.
use std::path::Path;

use serde::Serialize;

use super::SystemError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Interrupts {
    /// CPU id of each count column (only online CPUs have a column).
    pub cpus: Vec<u32>,
    pub rows: Vec<Row>,
    /// Malformed lines skipped.
    pub skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum RowId {
    Irq(u32),
    /// Architecture rows: "LOC", "NMI", "ERR", "IPI0".
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub id: RowId,
    /// Aligned with [`Interrupts::cpus`]; short rows (`ERR`, `MIS`) padded with zeros.
    pub counts: Vec<u64>,
    /// Numbered rows only.
    pub(crate) chip: String,
    /// Numbered rows only, e.g. "1-edge".
    pub(crate) hwirq: String,
    /// Numbered rows only.
    pub actions: Vec<String>,
    /// Named rows only, e.g. "Local timer interrupts".
    description: String,
}

impl Row {
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }
}

impl Interrupts {
    /// The row of a numbered IRQ.
    #[cfg(test)]
    fn irq(&self, number: u32) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == RowId::Irq(number))
    }
}

pub fn read(root: &Path) -> Result<Interrupts, SystemError> {
    let path = root.join("proc/interrupts");
    let text = std::fs::read_to_string(&path).map_err(|e| SystemError::io(path, e))?;
    Ok(parse(&text))
}

/// Parses the whole file. Never panics; malformed lines are skipped and counted.
pub fn parse(text: &str) -> Interrupts {
    let mut out = Interrupts::default();
    let mut lines = text.lines();
    let Some(header) = lines.by_ref().find(|l| !l.trim().is_empty()) else {
        return out;
    };
    for token in header.split_ascii_whitespace() {
        match token
            .strip_prefix("CPU")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(cpu) => out.cpus.push(cpu),
            None => {
                // Not a header: without columns no count can be aligned, so the whole file is
                // unusable.
                out.cpus.clear();
                out.skipped = text.lines().filter(|l| !l.trim().is_empty()).count();
                return out;
            }
        }
    }
    out.rows.reserve(text.len() / (out.cpus.len() * 11 + 40));
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        match parse_row(line, out.cpus.len()) {
            Some(row) => out.rows.push(row),
            None => out.skipped += 1,
        }
    }
    out
}

fn parse_row(line: &str, ncpus: usize) -> Option<Row> {
    let (label, rest) = line.split_once(':')?;
    let label = label.trim();
    if label.is_empty() || label.contains(char::is_whitespace) {
        return None;
    }
    let id = if label.bytes().all(|b| b.is_ascii_digit()) {
        RowId::Irq(label.parse().ok()?)
    } else {
        RowId::Named(label.to_string())
    };

    // Counts: up to ncpus leading decimal tokens. Byte by byte: on a 256-CPU machine this
    // loop sees 4 MB every sampling interval.
    let mut counts = Vec::with_capacity(ncpus);
    let bytes = rest.as_bytes();
    let mut pos = 0;
    let mut consumed = 0;
    while counts.len() < ncpus {
        while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
            pos += 1;
        }
        let start = pos;
        let mut value: u64 = 0;
        let mut overflow = false;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            match value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(bytes[pos] - b'0')))
            {
                Some(v) => value = v,
                None => overflow = true,
            }
            pos += 1;
        }
        // A token that is not all digits ends the counts (it is the chip or description).
        let ends_token = pos == bytes.len() || bytes[pos].is_ascii_whitespace();
        if pos == start || !ends_token || overflow {
            break;
        }
        counts.push(value);
        consumed = pos;
    }
    // Only ASCII was consumed, so this is a char boundary.
    let rest = &rest[consumed..];

    match id {
        RowId::Irq(_) => {
            // A numbered IRQ always has a count per online CPU.
            if counts.len() != ncpus {
                return None;
            }
            let (chip, hwirq, actions) = split_irq_text(rest);
            Some(Row {
                id,
                counts,
                chip,
                hwirq,
                actions,
                description: String::new(),
            })
        }
        RowId::Named(_) => {
            counts.resize(ncpus, 0);
            Some(Row {
                id,
                counts,
                chip: String::new(),
                hwirq: String::new(),
                actions: Vec::new(),
                description: rest.trim().to_string(),
            })
        }
    }
}

/// Splits "IO-APIC   5-edge      ACPI:Ged, foo" into chip, hwirq and actions.
fn split_irq_text(text: &str) -> (String, String, Vec<String>) {
    let tokens: Vec<(usize, &str)> = token_spans(text).collect();
    // The hwirq token: the first one after the chip that starts with a digit or '-'
    // ("5-edge", "524288-edge", "-ioapic-level", "27"). Chip names may contain spaces, so
    // everything before it is the chip.
    let hw = tokens
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, (_, t))| looks_like_hwirq(t))
        .map(|(i, _)| i);
    let (chip_end, hwirq, actions_from) = match hw {
        Some(i) => {
            let mut hwirq = tokens[i].1.to_string();
            let mut next = i + 1;
            // GENERIC_IRQ_SHOW_LEVEL prints "Level"/"Edge" as a separate word.
            if let Some((_, t)) = tokens.get(next)
                && (*t == "Level" || *t == "Edge")
            {
                hwirq.push(' ');
                hwirq.push_str(t);
                next += 1;
            }
            (i, hwirq, next)
        }
        // No hwirq (old kernels print "IR-PCI-MSI-edge"; chip "None"): the first word is the
        // chip, the rest are actions.
        None => (tokens.len().min(1), String::new(), tokens.len().min(1)),
    };
    let chip = tokens[..chip_end]
        .iter()
        .map(|(_, t)| *t)
        .collect::<Vec<_>>()
        .join(" ");
    let actions = match tokens.get(actions_from) {
        Some(&(start, _)) => text[start..]
            .trim_end()
            .split(", ")
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        None => Vec::new(),
    };
    (chip, hwirq, actions)
}

fn looks_like_hwirq(t: &str) -> bool {
    match t.as_bytes().first() {
        Some(b) if b.is_ascii_digit() => {
            // "27" or "5-edge": digits, then nothing or '-' and a flow name.
            let digits = t.bytes().take_while(u8::is_ascii_digit).count();
            digits == t.len() || t.as_bytes()[digits] == b'-'
        }
        Some(b'-') => t.len() > 1,
        _ => false,
    }
}

/// Whitespace-separated tokens with their byte offsets.
fn token_spans(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = &text[pos..];
        let start = pos + rest.find(|c: char| !c.is_whitespace())?;
        let len = text[start..]
            .find(char::is_whitespace)
            .unwrap_or(text.len() - start);
        pos = start + len;
        Some((start, &text[start..start + len]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config
 38:          0       5442 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
NMI:          0          0   Non-maskable interrupts
LOC:      30831      31522   Local timer interrupts
ERR:          0
MIS:          0
";

    #[test]
    fn host_shapes() {
        let t = parse(HOST);
        assert_eq!(t.cpus, vec![0, 1]);
        assert_eq!(t.skipped, 0);
        assert_eq!(t.rows.len(), 7);
        let r = t.irq(24).unwrap();
        assert_eq!(r.chip, "IO-APIC");
        assert_eq!(r.hwirq, "5-edge");
        assert_eq!(r.actions, vec!["ACPI:Ged"]);
        assert_eq!(r.counts, vec![1, 0]);
        let r = t.irq(38).unwrap();
        assert_eq!(r.chip, "PCI-MSIX-0000:00:03.0");
        assert_eq!(r.actions, vec!["virtio2-input.0"]);
        assert_eq!(r.total(), 5442);
        let loc = &t.rows[4];
        assert_eq!(loc.id, RowId::Named("LOC".into()));
        assert_eq!(loc.description, "Local timer interrupts");
        assert_eq!(loc.counts, vec![30831, 31522]);
        let err = &t.rows[5];
        assert_eq!(err.counts, vec![0, 0]);
        assert_eq!(err.description, "");
    }

    #[test]
    fn other_shapes() {
        let text = "            CPU0       CPU2       CPU3
  0:         40          0          0   IO-APIC   2-edge      timer
  9:          0          0          0  IR-IO-APIC    9-fasteoi   acpi
 16:          0          0          0  IR-IO-APIC   16-fasteoi   i801_smbus, i2c_designware.0
120:          0          0          0  DMAR-MSI    0-edge      dmar0
136:   12345678          0          5  IR-PCI-MSI 1572864-edge      eth0-TxRx-0
140:          1          2          3  IR-PCI-MSIX-0000:3b:00.0    5-edge      mlx5_comp4@pci:0000:3b:00.0
 11:          7          0          0     GICv3  30 Level     arch_timer
 12:          0          0          0  xen-pirq    -ioapic-level  acpi
 13:          0          0          0  IR-PCI-MSI-edge      eth1-rx-0
 14:          0          0          0  intel gpio chip  17-edge   gpio-keys
 15:          0          0          0   None
IPI0:       100        200        300       Rescheduling interrupts
PIN:          0          0          0   Posted-interrupt notification event
garbage
 99: 1 2
xx yy: 1
";
        let t = parse(text);
        assert_eq!(t.cpus, vec![0, 2, 3]);
        assert_eq!(t.skipped, 3);
        let r = t.irq(16).unwrap();
        assert_eq!(r.chip, "IR-IO-APIC");
        assert_eq!(r.hwirq, "16-fasteoi");
        assert_eq!(r.actions, vec!["i801_smbus", "i2c_designware.0"]);
        let r = t.irq(136).unwrap();
        assert_eq!(r.chip, "IR-PCI-MSI");
        assert_eq!(r.hwirq, "1572864-edge");
        assert_eq!(r.counts, vec![12345678, 0, 5]);
        let r = t.irq(11).unwrap();
        assert_eq!((r.chip.as_str(), r.hwirq.as_str()), ("GICv3", "30 Level"));
        assert_eq!(r.actions, vec!["arch_timer"]);
        let r = t.irq(12).unwrap();
        assert_eq!(
            (r.chip.as_str(), r.hwirq.as_str()),
            ("xen-pirq", "-ioapic-level")
        );
        let r = t.irq(13).unwrap();
        assert_eq!((r.chip.as_str(), r.hwirq.as_str()), ("IR-PCI-MSI-edge", ""));
        assert_eq!(r.actions, vec!["eth1-rx-0"]);
        let r = t.irq(14).unwrap();
        assert_eq!(r.chip, "intel gpio chip");
        assert_eq!(r.actions, vec!["gpio-keys"]);
        let r = t.irq(15).unwrap();
        assert_eq!(r.chip, "None");
        assert!(r.actions.is_empty());
        let ipi = t
            .rows
            .iter()
            .find(|r| r.id == RowId::Named("IPI0".into()))
            .unwrap();
        assert_eq!(ipi.counts, vec![100, 200, 300]);
    }

    #[test]
    fn hostile_input() {
        for text in [
            "",
            "\n\n",
            "CPU0\n0:",
            "CPU0\n:",
            "CPU0\n 1: 99999999999999999999999 x",
            "not a header\n 1: 2 x y",
            "CPU0 CPU1\n1: 1 2 ",
            "CPU0\n1: 1 é, ,  ,",
            "CPU0\n1: 1 x 5",
        ] {
            let _ = parse(text);
        }
        assert_eq!(parse("not a header\n 1: 2 x y").skipped, 2);
    }
}
