//! The daemon's configuration: a TOML file with birq's options (same names, same meanings,
//! same defaults where birq has them) plus what the measured weights, RPS, sticking and
//! actuation need. Every key is optional; `balancer/packaging/balancer.toml` documents each one.
//!
//! Unknown keys and bad values are errors that name the key and its line: values are
//! checked while deserialising (so toml's span points at them) and the span is turned into
//! `FILE:LINE: key `name`: message`.
use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

use crate::cpumask::CpuSet;

/// Where the daemon keeps the original values it changed.
pub const DEFAULT_JOURNAL: &str = "/var/lib/balancer/journal.json";
/// The single-instance lock, in the directory systemd's `RuntimeDirectory=balancer` makes
/// (the only place under /run the hardened unit can write).
pub const DEFAULT_LOCK: &str = "/run/balancer/balancer.lock";
/// Where the daemon looks when `--config` is not given (a missing file means defaults).
pub const DEFAULT_CONFIG: &str = "/etc/balancer/balancer.toml";

/// How the IRQ to move off an overloaded CPU is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// By measured CPU time (hardirq + the softirq time it causes), best fit.
    #[default]
    Weight,
    /// birq: the IRQ with the fewest interrupts.
    Min,
    /// birq: the IRQ with the most interrupts.
    Max,
    /// birq: a random active IRQ (seeded).
    Rnd,
    /// irqbalance-like: each CPU's IRQ time shared out by interrupt counts. For comparison.
    Count,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Weight => "weight",
            Strategy::Min => "min",
            Strategy::Max => "max",
            Strategy::Rnd => "rnd",
            Strategy::Count => "count",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

/// The whole configuration. Percentages are of one CPU (0-100).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// A CPU busier than this (percent) is overloaded. birq's default is 99; measured weights
    /// let us act earlier.
    #[serde(deserialize_with = "percent")]
    pub threshold: f64,
    /// Never move an IRQ to a CPU that would end above this (percent).
    #[serde(deserialize_with = "percent")]
    pub load_limit: f64,
    /// Seconds between measurements after a move or while a CPU is overloaded.
    #[serde(deserialize_with = "interval")]
    pub short_interval: f64,
    /// Seconds between measurements when calm.
    #[serde(deserialize_with = "interval")]
    pub long_interval: f64,
    pub strategy: Strategy,
    /// CPUs that never get IRQs, in the hex form of smp_affinity.
    #[serde(deserialize_with = "hex_mask", serialize_with = "ser_mask")]
    pub exclude_cpus: CpuSet,
    /// Treat SMT siblings as CPUs (still preferring an idle core). `false`: first threads only.
    pub ht: bool,
    /// Allow CPUs of other NUMA nodes when every local CPU is loaded.
    pub non_local_cpus: bool,
    /// birq-format proximity file repairing devices' NUMA nodes.
    pub proximity: Option<PathBuf>,
    /// A CPU whose IRQ + softirq time exceeds the mean of the eligible CPUs by this much
    /// (percent of one CPU) is overloaded too.
    #[serde(deserialize_with = "percent")]
    pub imbalance: f64,
    /// A move must lower the busiest CPU involved by at least this much (percent).
    #[serde(deserialize_with = "percent")]
    pub min_gain: f64,
    /// Intervals an IRQ stays put after a move.
    pub cooldown: u32,
    /// IRQ numbers never moved.
    pub banned_irqs: Vec<u32>,
    /// Devices whose IRQs are never moved: PCI address ("0000:3b:00.0"), netdev ("eth0") or
    /// driver ("nvme").
    pub banned_devices: Vec<String>,
    /// Spread a queue too big for one CPU with rps_cpus.
    pub rps: bool,
    /// A queue above this load (percent of one CPU) gets RPS.
    #[serde(deserialize_with = "percent")]
    pub rps_threshold: f64,
    /// RPS we set is taken back when the queue's load falls below this (percent).
    #[serde(deserialize_with = "percent")]
    pub rps_off: f64,
    /// At most this many CPUs in an rps_cpus mask we write.
    pub rps_max_cpus: u32,
    /// Pin a stuck queue's threaded-NAPI kthread next to its IRQ.
    pub unstick: bool,
    /// Journal of original values, written before the first change.
    pub journal: PathBuf,
    /// Put the original values back when stopped by SIGTERM/SIGINT.
    pub restore_on_exit: bool,
    /// Prometheus text endpoint (loopback only); absent = off. SIGHUP rebinds a changed one.
    #[serde(deserialize_with = "loopback")]
    pub metrics: Option<SocketAddr>,
    /// Seed of the `rnd` strategy.
    pub seed: u64,
    pub log_level: LogLevel,
    /// Single-instance lock file.
    pub lock_file: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            threshold: 90.0,
            load_limit: 95.0,
            short_interval: 2.0,
            long_interval: 5.0,
            strategy: Strategy::Weight,
            exclude_cpus: CpuSet::new(),
            ht: true,
            non_local_cpus: false,
            proximity: None,
            imbalance: 25.0,
            min_gain: 2.0,
            cooldown: 3,
            banned_irqs: Vec::new(),
            banned_devices: Vec::new(),
            rps: true,
            rps_threshold: 90.0,
            rps_off: 50.0,
            rps_max_cpus: 4,
            unstick: true,
            journal: PathBuf::from(DEFAULT_JOURNAL),
            restore_on_exit: false,
            metrics: None,
            seed: 0,
            log_level: LogLevel::Info,
            lock_file: PathBuf::from(DEFAULT_LOCK),
        }
    }
}

/// A configuration error: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("{file}:{line}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        file: String,
        /// 1-based.
        line: usize,
        key: Option<String>,
        message: String,
    },
}

impl Config {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn read_opt(path: &Path) -> Result<Option<Config>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConfigError::Read {
                file: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        Config::read_opt(path)?.ok_or_else(|| ConfigError::Read {
            file: path.display().to_string(),
            message: "no such file".into(),
        })
    }

    /// Parses the text of a file named `file` (for messages).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (line, key) = locate(text, &span);
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                key,
                message: clean_message(e.message()),
            }
        })?;
        // Checks between keys: the later key of the pair is the one named.
        let at = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            line: line_of_key(text, key).unwrap_or(1),
            key: Some(key.to_string()),
            message,
        };
        if config.short_interval > config.long_interval {
            return Err(at(
                "short-interval",
                format!(
                    "{} s is longer than long-interval ({} s)",
                    config.short_interval, config.long_interval
                ),
            ));
        }
        if config.rps_off >= config.rps_threshold {
            // Name the one the file sets (rps-off when both are).
            let key = if line_of_key(text, "rps-off").is_some()
                || line_of_key(text, "rps-threshold").is_none()
            {
                "rps-off"
            } else {
                "rps-threshold"
            };
            return Err(at(
                key,
                format!(
                    "{}% must be below rps-threshold ({}%)",
                    config.rps_off, config.rps_threshold
                ),
            ));
        }
        Ok(config)
    }

    pub fn threshold_frac(&self) -> f64 {
        self.threshold / 100.0
    }
    pub fn load_limit_frac(&self) -> f64 {
        self.load_limit / 100.0
    }
    pub fn rps_threshold_frac(&self) -> f64 {
        self.rps_threshold / 100.0
    }
    pub fn rps_off_frac(&self) -> f64 {
        self.rps_off / 100.0
    }
}

/// toml's messages end with a newline and sometimes repeat the position.
fn clean_message(m: &str) -> String {
    m.trim().replace('\n', "; ")
}

/// The 1-based line of a byte span, and the key written on that line (the text before `=`),
/// when there is one.
fn locate(text: &str, span: &Range<usize>) -> (usize, Option<String>) {
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
    (line, key)
}

/// The line where `key = ...` is set, if it is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
        })
        .map(|i| i + 1)
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
        return Err(D::Error::custom(format!(
            "must be a percentage between 0 and 100, got {v}"
        )));
    }
    Ok(v)
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v.is_finite() && (0.1..=3600.0).contains(&v)) {
        return Err(D::Error::custom(format!(
            "must be between 0.1 and 3600 seconds, got {v}"
        )));
    }
    Ok(v)
}

fn hex_mask<'de, D: Deserializer<'de>>(d: D) -> Result<CpuSet, D::Error> {
    let s = String::deserialize(d)?;
    CpuSet::parse_mask(&s)
        .map_err(|e| D::Error::custom(format!("{e} (want a hex mask like \"f0\")")))
}

fn ser_mask<S: serde::Serializer>(set: &CpuSet, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&set.to_mask_string(0))
}

fn loopback<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    let addr: SocketAddr = s.parse().map_err(|_| {
        D::Error::custom(format!(
            "{s:?} is not an address:port (e.g. \"127.0.0.1:9717\")"
        ))
    })?;
    if !addr.ip().is_loopback() {
        return Err(D::Error::custom(format!(
            "{addr} is not a loopback address: the endpoint has no authentication"
        )));
    }
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "b.toml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_birq_names() {
        assert_eq!(Config::parse("", "b.toml").unwrap(), Config::default());
        let c = Config::parse(
            "threshold = 99\nload-limit = 95.5\nshort-interval = 2\nlong-interval = 5\n\
             strategy = \"rnd\"\nexclude-cpus = \"f0\"\nht = false\nnon-local-cpus = true\n\
             proximity = \"/etc/balancer/pxm\"\nbanned-irqs = [1, 9]\n\
             banned-devices = [\"eth0\", \"0000:00:1f.2\"]\nmetrics = \"127.0.0.1:9717\"\n",
            "b.toml",
        )
        .unwrap();
        assert_eq!(c.threshold, 99.0);
        assert_eq!(c.load_limit, 95.5);
        assert_eq!(c.strategy, Strategy::Rnd);
        assert_eq!(c.exclude_cpus, CpuSet::from_cpus([4, 5, 6, 7]));
        assert!(!c.ht && c.non_local_cpus);
        assert_eq!(c.banned_irqs, vec![1, 9]);
        assert_eq!(c.metrics, Some("127.0.0.1:9717".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let e = err("threshold = 90\n\nthreshhold = 80\n");
        assert!(
            e.starts_with("b.toml:3: key `threshhold`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let e = err("# comment\nload-limit = 150\n");
        assert!(
            e.starts_with("b.toml:2: key `load-limit`: must be a percentage"),
            "{e}"
        );
        let e = err("strategy = \"fastest\"\n");
        assert!(
            e.starts_with("b.toml:1: key `strategy`: unknown variant"),
            "{e}"
        );
        let e = err("ht = true\nexclude-cpus = \"xz\"\n");
        assert!(
            e.starts_with("b.toml:2: key `exclude-cpus`: invalid hex digit"),
            "{e}"
        );
        let e = err("metrics = \"0.0.0.0:9717\"\n");
        assert!(
            e.contains("b.toml:1: key `metrics`: 0.0.0.0:9717 is not a loopback"),
            "{e}"
        );
        let e = err("ht = \"yes\"\n");
        assert!(e.starts_with("b.toml:1: key `ht`:"), "{e}");
        let e = err("short-interval = 0\n");
        assert!(
            e.starts_with("b.toml:1: key `short-interval`: must be between"),
            "{e}"
        );
        let e = err("cooldown = -1\n");
        assert!(e.starts_with("b.toml:1: key `cooldown`:"), "{e}");
    }

    #[test]
    fn cross_key_checks_name_the_key() {
        let e = err("long-interval = 1\nshort-interval = 3\n");
        assert!(
            e.starts_with("b.toml:2: key `short-interval`: 3 s is longer"),
            "{e}"
        );
        let e = err("rps-threshold = 40\n");
        assert!(e.starts_with("b.toml:1: key `rps-threshold`"), "{e}");
        let e = err("rps-threshold = 40\nrps-off = 60\n");
        assert!(e.starts_with("b.toml:2: key `rps-off`"), "{e}");
    }

    #[test]
    fn the_shipped_example_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/balancer.toml");
        assert_eq!(Config::read(&path).unwrap(), Config::default());
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = err("threshold = 90\nthreshold 80\n");
        assert!(e.starts_with("b.toml:2:"), "{e}");
    }
}
