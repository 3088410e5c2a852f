//! CPU sets in the kernel's two text forms: hex masks (`/proc/irq/N/smp_affinity`,
//! `rps_cpus`) and cpulists (`smp_affinity_list`, `online`, `local_cpulist`).
//!
//! Hand-written rather than taken from a crate: the crates we looked at either parse only one
//! of the two forms or don't reproduce the kernel's printing of the hex form (the first group's
//! width depends on the number of CPUs), which we need to round-trip files exactly.
//!
//! ## Width of the hex form
//!
//! The kernel prints a mask of `nr_cpu_ids` bits as comma-separated 32-bit groups, most
//! significant first; the first group has only as many hex digits as its bits need
//! (`(nr % 32 + 3) / 4`, or 8 when `nr` is a multiple of 32), the others have 8. So a 2-CPU
//! machine prints `3` and a 36-CPU machine `f,ffffffff`. [`CpuSet::to_mask_string`] takes the
//! number of bits; [`CpuSet::parse_mask_with_width`] returns the width (in bits) of the text it
//! parsed, so `parse_mask_with_width` then `to_mask_string(width)` gives back the same string
//! for anything the kernel printed.
use std::fmt;

use serde::{Serialize, Serializer};

/// Highest CPU id + 1 we accept. The kernel's `CONFIG_NR_CPUS` tops out at 8192; the cap only
/// keeps hostile input (`0-4294967295`) from allocating gigabytes.
pub(crate) const MAX_CPUS: u32 = 1 << 16;

/// Why a mask or cpulist did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("empty cpu mask")]
    Empty,
    #[error("invalid hex digit {0:?} in cpu mask")]
    BadHex(char),
    #[error("cpu mask group {0:?} has more than 8 hex digits")]
    GroupTooLong(String),
    #[error("empty group in cpu mask")]
    EmptyGroup,
    #[error("invalid cpu number {0:?} in cpu list")]
    BadNumber(String),
    #[error("cpu {0} is beyond the supported maximum ({MAX_CPUS})")]
    TooLarge(u64),
    #[error("reversed range {0}-{1} in cpu list")]
    ReversedRange(u32, u32),
    #[error("invalid stride {0:?} in cpu list")]
    BadStride(String),
    #[error("{0:?} is not a cpu list; a hex mask needs its prefix: \"0x{0}\"")]
    HexWithoutPrefix(String),
}

/// A set of CPU ids, stored as a bitmap.
///
/// Kept normalised (no trailing zero words) so that derived equality and hashing compare sets,
/// not capacities. Serialises as its cpulist string (`"0-3,8"`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl CpuSet {
    pub fn new() -> CpuSet {
        CpuSet::default()
    }

    /// CPU ids at or above [`MAX_CPUS`] are ignored.
    pub fn from_cpus(cpus: impl IntoIterator<Item = u32>) -> CpuSet {
        let mut set = CpuSet::new();
        for cpu in cpus {
            set.insert(cpu);
        }
        set
    }

    /// All CPUs `0..n`.
    #[cfg(test)]
    pub(crate) fn first_n(n: u32) -> CpuSet {
        CpuSet::from_cpus(0..n.min(MAX_CPUS))
    }

    /// Parses the kernel's hex mask form (`ff`, `00000000,00000003`), any number of groups,
    /// surrounding whitespace and a trailing newline allowed.
    pub fn parse_mask(text: &str) -> Result<CpuSet, MaskError> {
        CpuSet::parse_mask_with_width(text).map(|(set, _)| set)
    }

    /// Like [`CpuSet::parse_mask`], also returning the width in bits the text spells out
    /// (32 per group, 4 per digit of the first group): pass it to
    /// [`CpuSet::to_mask_string`] to print the same text back.
    pub fn parse_mask_with_width(text: &str) -> Result<(CpuSet, u32), MaskError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(MaskError::Empty);
        }
        let groups: Vec<&str> = text.split(',').collect();
        if groups.len() as u64 * 32 > u64::from(MAX_CPUS) {
            return Err(MaskError::TooLarge(groups.len() as u64 * 32));
        }
        let mut set = CpuSet::new();
        let mut width = 0u32;
        for (i, group) in groups.iter().enumerate() {
            if group.is_empty() {
                return Err(MaskError::EmptyGroup);
            }
            if group.len() > 8 {
                return Err(MaskError::GroupTooLong((*group).to_string()));
            }
            let mut value = 0u32;
            for c in group.chars() {
                let digit = c.to_digit(16).ok_or(MaskError::BadHex(c))?;
                value = (value << 4) | digit;
            }
            // Group i (from the left) holds bits [base, base + 32).
            let base = (groups.len() - 1 - i) as u32 * 32;
            let mut bits = value;
            while bits != 0 {
                let bit = bits.trailing_zeros();
                set.insert(base + bit);
                bits &= bits - 1;
            }
            width += if i == 0 { group.len() as u32 * 4 } else { 32 };
        }
        Ok((set, width))
    }

    /// Parses a cpulist: `0-3,8,10-11`, the stride form `0-15:2/4` (in 0-15, the first 2 of
    /// every 4), surrounding whitespace allowed; an empty string is the empty set.
    pub fn parse_list(text: &str) -> Result<CpuSet, MaskError> {
        let text = text.trim();
        let mut set = CpuSet::new();
        if text.is_empty() {
            return Ok(set);
        }
        for item in text.split(',') {
            let item = item.trim();
            let (range, stride) = match item.split_once(':') {
                Some((range, stride)) => (range, Some(stride)),
                None => (item, None),
            };
            let (lo, hi) = match range.split_once('-') {
                Some((lo, hi)) => (parse_cpu(lo)?, parse_cpu(hi)?),
                None => {
                    let cpu = parse_cpu(range)?;
                    (cpu, cpu)
                }
            };
            if lo > hi {
                return Err(MaskError::ReversedRange(lo, hi));
            }
            let (used, group) = match stride {
                None => (1, 1),
                Some(s) => {
                    let bad = || MaskError::BadStride(s.to_string());
                    let (used, group) = s.split_once('/').ok_or_else(bad)?;
                    let used: u32 = used.trim().parse().map_err(|_| bad())?;
                    let group: u32 = group.trim().parse().map_err(|_| bad())?;
                    if used == 0 || group == 0 || used > group {
                        return Err(bad());
                    }
                    (used, group)
                }
            };
            if stride.is_none() {
                set.insert_range(lo, hi);
            } else {
                let mut start = lo;
                while start <= hi {
                    let end = start.saturating_add(used - 1).min(hi);
                    set.insert_range(start, end);
                    match start.checked_add(group) {
                        Some(next) => start = next,
                        None => break,
                    }
                }
            }
        }
        Ok(set)
    }

    /// Parses a CPU set as written in our configuration: a cpulist (`"0-3,8"`, `"0"` is
    /// CPU 0, `""` no CPU) unless it starts with `0x`, which makes it a hex mask
    /// (`"0x3"`, `"0xff,00000000"`) in the form of smp_affinity. The same rule as
    /// irqbalance's IRQBALANCE_BANNED_CPULIST vs IRQBALANCE_BANNED_CPUS, in one key: a bare
    /// `"f0"` is refused rather than guessed at.
    pub(crate) fn parse_config(text: &str) -> Result<CpuSet, MaskError> {
        let text = text.trim();
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            return CpuSet::parse_mask(hex);
        }
        CpuSet::parse_list(text).map_err(|e| match e {
            MaskError::BadNumber(_) if text.bytes().all(|b| b.is_ascii_hexdigit() || b == b',') => {
                MaskError::HexWithoutPrefix(text.to_string())
            }
            e => e,
        })
    }

    /// The kernel's hex form for a bitmap of `nr_cpus` bits (see the module docs for the
    /// width rule). If the set holds CPUs at or above `nr_cpus` the mask is widened to keep
    /// them rather than silently dropping them. `nr_cpus == 0` prints as if 1.
    pub fn to_mask_string(&self, nr_cpus: u32) -> String {
        let nbits = nr_cpus.max(self.last().map_or(0, |c| c + 1)).max(1);
        let groups = nbits.div_ceil(32);
        let first_digits = match nbits % 32 {
            0 => 8,
            rem => rem.div_ceil(4) as usize,
        };
        let mut out = String::with_capacity(groups as usize * 9);
        for g in (0..groups).rev() {
            let value = self.group32(g);
            if g == groups - 1 {
                out.push_str(&format!("{value:0first_digits$x}"));
            } else {
                out.push_str(&format!(",{value:08x}"));
            }
        }
        out
    }

    /// The cpulist form, ranges collapsed: `0-3,8,10-11`; the empty set prints as "".
    pub fn to_list_string(&self) -> String {
        let mut out = String::new();
        let mut iter = self.iter().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !out.is_empty() {
                out.push(',');
            }
            if start == end {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
        }
        out
    }

    pub(crate) fn contains(&self, cpu: u32) -> bool {
        let (w, b) = (cpu as usize / 64, cpu % 64);
        self.words.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// Ignores CPU ids at or above [`MAX_CPUS`]; returns whether the CPU was newly added.
    pub(crate) fn insert(&mut self, cpu: u32) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        let (w, b) = (cpu as usize / 64, cpu % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let had = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        !had
    }

    /// CPU ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(w as u32 * 64 + b)
            })
        })
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The lowest CPU id.
    pub fn first(&self) -> Option<u32> {
        self.words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| i as u32 * 64 + w.trailing_zeros())
    }

    /// The highest CPU id.
    pub(crate) fn last(&self) -> Option<u32> {
        let w = self.words.len().checked_sub(1)?;
        Some(w as u32 * 64 + 63 - self.words[w].leading_zeros())
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let n = self.words.len().max(other.words.len());
        let words = (0..n)
            .map(|i| self.word(i) | other.word(i))
            .collect::<Vec<_>>();
        CpuSet::from_words(words)
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        let n = self.words.len().min(other.words.len());
        CpuSet::from_words((0..n).map(|i| self.word(i) & other.word(i)).collect())
    }

    /// CPUs in `self` and not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet::from_words(
            (0..self.words.len())
                .map(|i| self.word(i) & !other.word(i))
                .collect(),
        )
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        (0..self.words.len()).all(|i| self.word(i) & !other.word(i) == 0)
    }

    pub(crate) fn intersects(&self, other: &CpuSet) -> bool {
        (0..self.words.len().min(other.words.len())).any(|i| self.word(i) & other.word(i) != 0)
    }

    fn insert_range(&mut self, lo: u32, hi: u32) {
        // lo..=hi were checked against MAX_CPUS by parse_cpu.
        for cpu in lo..=hi {
            self.insert(cpu);
        }
    }

    fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// Bits [32 g, 32 g + 32) as a number.
    fn group32(&self, g: u32) -> u32 {
        let word = self.word(g as usize / 2);
        if g.is_multiple_of(2) {
            word as u32
        } else {
            (word >> 32) as u32
        }
    }

    fn from_words(words: Vec<u64>) -> CpuSet {
        let mut set = CpuSet { words };
        set.normalize();
        set
    }

    fn normalize(&mut self) {
        while self.words.last() == Some(&0) {
            self.words.pop();
        }
    }
}

fn parse_cpu(text: &str) -> Result<u32, MaskError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MaskError::BadNumber(text.to_string()));
    }
    match text.parse::<u64>() {
        Ok(n) if n < u64::from(MAX_CPUS) => Ok(n as u32),
        Ok(n) => Err(MaskError::TooLarge(n)),
        // Only overflow is left: all digits were checked.
        Err(_) => Err(MaskError::TooLarge(u64::MAX)),
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({})", self.to_list_string())
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list_string())
    }
}

impl Serialize for CpuSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_list_string())
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<T: IntoIterator<Item = u32>>(iter: T) -> Self {
        CpuSet::from_cpus(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[u32]) -> CpuSet {
        CpuSet::from_cpus(cpus.iter().copied())
    }

    #[test]
    fn config_form_is_a_cpulist_unless_prefixed() {
        assert_eq!(CpuSet::parse_config("0").unwrap(), set(&[0]));
        assert_eq!(CpuSet::parse_config("0-1").unwrap(), set(&[0, 1]));
        assert_eq!(
            CpuSet::parse_config(" 0-3,8 ").unwrap(),
            set(&[0, 1, 2, 3, 8])
        );
        assert_eq!(CpuSet::parse_config("").unwrap(), CpuSet::new());
        assert_eq!(CpuSet::parse_config("0x3").unwrap(), set(&[0, 1]));
        assert_eq!(CpuSet::parse_config("0xf0").unwrap(), set(&[4, 5, 6, 7]));
        assert_eq!(CpuSet::parse_config("0x1,00000000").unwrap(), set(&[32]));
        assert_eq!(
            CpuSet::parse_config("f0"),
            Err(MaskError::HexWithoutPrefix("f0".into()))
        );
        assert!(CpuSet::parse_config("0x").is_err());
        assert!(CpuSet::parse_config("0-x").is_err());
    }

    #[test]
    fn parse_mask_forms() {
        assert_eq!(CpuSet::parse_mask("3\n").unwrap(), set(&[0, 1]));
        assert_eq!(
            CpuSet::parse_mask("00000000,00000003").unwrap(),
            set(&[0, 1])
        );
        assert_eq!(
            CpuSet::parse_mask("80000000,00000001").unwrap(),
            set(&[0, 63])
        );
        assert_eq!(CpuSet::parse_mask("0").unwrap(), CpuSet::new());
        assert_eq!(
            CpuSet::parse_mask("f,ffffffff").unwrap(),
            CpuSet::first_n(36)
        );
        let wide = format!("1{}", ",00000000".repeat(8));
        assert_eq!(CpuSet::parse_mask(&wide).unwrap(), set(&[256]));
        assert_eq!(CpuSet::parse_mask(""), Err(MaskError::Empty));
        assert_eq!(CpuSet::parse_mask("g"), Err(MaskError::BadHex('g')));
        assert_eq!(CpuSet::parse_mask("1,,2"), Err(MaskError::EmptyGroup));
        assert!(matches!(
            CpuSet::parse_mask("123456789"),
            Err(MaskError::GroupTooLong(_))
        ));
        assert!(CpuSet::parse_mask(&"0,".repeat(5000)).is_err());
    }

    #[test]
    fn mask_round_trip_kernel_widths() {
        for (text, nr) in [
            ("3", 2),
            ("f", 4),
            ("3f", 6),
            ("ffffffff", 32),
            ("f,ffffffff", 36),
            ("00000001,00000000,00000000,00000000", 128),
            (
                "ffffffff,ffffffff,ffffffff,ffffffff,ffffffff,ffffffff,ffffffff,ffffffff",
                256,
            ),
            ("0001,00000000", 48),
        ] {
            let (parsed, width) = CpuSet::parse_mask_with_width(text).unwrap();
            assert_eq!(parsed.to_mask_string(width), text, "width of {text}");
            assert_eq!(parsed.to_mask_string(nr), text, "nr_cpus for {text}");
        }
        assert_eq!(set(&[40]).to_mask_string(4), "100,00000000");
        assert_eq!(CpuSet::new().to_mask_string(0), "0");
    }

    #[test]
    fn parse_list_forms() {
        assert_eq!(CpuSet::parse_list("").unwrap(), CpuSet::new());
        assert_eq!(CpuSet::parse_list("\n").unwrap(), CpuSet::new());
        assert_eq!(
            CpuSet::parse_list("0-3,8,10-11\n").unwrap(),
            set(&[0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(
            CpuSet::parse_list("0-15:2/4").unwrap(),
            set(&[0, 1, 4, 5, 8, 9, 12, 13])
        );
        assert_eq!(
            CpuSet::parse_list("5-3"),
            Err(MaskError::ReversedRange(5, 3))
        );
        assert!(CpuSet::parse_list("0-4294967295").is_err());
        assert!(CpuSet::parse_list("99999999999999999999999").is_err());
        assert!(CpuSet::parse_list("a").is_err());
        assert!(CpuSet::parse_list("1,").is_err());
        assert!(CpuSet::parse_list("0-7:0/4").is_err());
        assert!(CpuSet::parse_list("0-7:5/4").is_err());
        assert!(CpuSet::parse_list("+1").is_err());
    }

    #[test]
    fn list_round_trip() {
        for text in ["0-3,8,10-11", "0", "1,3,5", "0-255", "", "7,64-127,1000"] {
            assert_eq!(CpuSet::parse_list(text).unwrap().to_list_string(), text);
        }
    }

    #[test]
    fn set_operations() {
        let a = set(&[0, 1, 2, 70]);
        let b = set(&[2, 3, 70]);
        assert_eq!(a.union(&b), set(&[0, 1, 2, 3, 70]));
        assert_eq!(a.intersection(&b), set(&[2, 70]));
        assert_eq!(a.difference(&b), set(&[0, 1]));
        assert_eq!(b.difference(&a), set(&[3]));
        assert!(set(&[2, 70]).is_subset(&a));
        assert!(!b.is_subset(&a));
        assert!(CpuSet::new().is_subset(&a));
        assert_eq!(a.len(), 4);
        assert_eq!(a.first(), Some(0));
        assert_eq!(a.last(), Some(70));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 1, 2, 70]);
        // Normalised: without the high CPU it equals a set that never had it.
        let mut c = a.difference(&set(&[70]));
        assert_eq!(c, set(&[0, 1, 2]));
        assert_eq!(set(&[0]).difference(&set(&[0])), CpuSet::new());
        assert!(set(&[0]).difference(&set(&[0])).is_empty());
        assert!(!c.insert(MAX_CPUS));
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0-2,70\"");
    }
}
