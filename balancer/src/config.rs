//! The daemon's configuration: a TOML file with birq's options (same names, same meanings,
//! same defaults where birq has them) plus what the measured weights, RPS, sticking and
//! actuation need. Every key is optional; `balancer/packaging/balancer.toml` documents each one.
//!
//! Unknown keys and bad values are errors that name the key and its line: values are
//! checked while deserialising (so toml's span points at them) and the span is turned into
//! `FILE:LINE: key `name`: message`.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Deserializer, Serialize, de::Error as _};

use crate::cpumask::CpuSet;

/// Where the daemon keeps the original values it changed.
pub(crate) const DEFAULT_JOURNAL: &str = "/var/lib/balancer/journal.json";
/// The single-instance lock, in the directory systemd's `RuntimeDirectory=balancer` makes
/// (the only place under /run the hardened unit can write).
const DEFAULT_LOCK: &str = "/run/balancer/balancer.lock";
/// Where the daemon looks when `--config` is not given (a missing file means defaults).
pub(crate) const DEFAULT_CONFIG: &str = "/etc/balancer/balancer.toml";

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
    pub(crate) fn filter(self) -> log::LevelFilter {
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
    /// Seconds between measurements after a move, and while one is landing on an
    /// overloaded CPU.
    #[serde(deserialize_with = "interval")]
    pub short_interval: f64,
    /// Seconds between measurements when calm.
    #[serde(deserialize_with = "interval")]
    pub long_interval: f64,
    pub strategy: Strategy,
    /// CPUs that never get IRQs: a cpulist ("0-3,8"), or a hex mask with `0x` ("0xf0").
    #[serde(deserialize_with = "cpu_set", serialize_with = "ser_cpu_set")]
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
    /// A move must lower the busiest CPU involved by at least this much (percent): the floor
    /// under the measured noise (the policy asks more where readings swing more).
    #[serde(deserialize_with = "percent")]
    pub min_gain: f64,
    /// Intervals an IRQ stays put after a move.
    pub cooldown: u32,
    /// Intervals during which an IRQ does not go back to a CPU it left, unless the
    /// measurement contradicts why it left (a revisit, logged as such). 0 = no window.
    pub return_window: u32,
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
    /// At most this many CPUs in an rps_cpus mask we write (1 or more).
    #[serde(deserialize_with = "at_least_one")]
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
    /// Share of each interval the daemon measures (0 < share <= 1; 1 = continuously): the
    /// probes cost CPU time on the CPUs they measure, so the daemon detaches them between
    /// windows and extrapolates the window to the interval.
    #[serde(deserialize_with = "share")]
    pub measure_share: f64,
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
            return_window: 30,
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
            measure_share: 0.1,
        }
    }
}

/// One problem of a configuration file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// 1-based.
    line: usize,
    key: Option<String>,
    message: String,
}

/// A configuration error. `Invalid` lists every problem of the file at once, one
/// `FILE:LINE: key `name`: message` line each, so one edit fixes them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| {
            format!(
                "{file}:{}: {}{}",
                p.line,
                p.key
                    .as_ref()
                    .map(|k| format!("key `{k}`: "))
                    .unwrap_or_default(),
                p.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the machine has, for [`Config::check_machine`].
#[derive(Debug, Clone, Default)]
pub(crate) struct MachineFacts {
    /// Present CPUs, online or not.
    cpus: CpuSet,
    online: CpuSet,
    isolated: CpuSet,
    nohz_full: CpuSet,
    /// IRQ numbers of /proc/interrupts.
    irqs: BTreeSet<u32>,
}

impl MachineFacts {
    pub(crate) fn of(model: &crate::system::SystemModel) -> MachineFacts {
        MachineFacts {
            cpus: model.cpus.keys().copied().collect(),
            online: model
                .cpus
                .values()
                .filter(|c| c.online)
                .map(|c| c.id)
                .collect(),
            isolated: model.isolated.clone(),
            nohz_full: model.nohz_full.clone(),
            irqs: model.irqs.keys().copied().collect(),
        }
    }

    /// CPUs that never take IRQs whatever the config says.
    fn banned_by_kernel(&self) -> CpuSet {
        self.isolated.union(&self.nohz_full)
    }
}

impl Config {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub(crate) fn read_opt(path: &Path) -> Result<Option<Config>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConfigError::Read {
                file: path.display().to_string(),
                message: e.to_string(),
            }),
        }
    }

    pub(crate) fn read(path: &Path) -> Result<Config, ConfigError> {
        Config::read_opt(path)?.ok_or_else(|| ConfigError::Read {
            file: path.display().to_string(),
            message: "no such file".into(),
        })
    }

    /// Parses the text of a file named `file` (for messages). Every problem is reported:
    /// syntax errors, then each key's own, then the checks between keys.
    pub(crate) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let invalid = |problems: Vec<Problem>| ConfigError::Invalid {
            file: file.to_string(),
            problems,
        };
        let (table, syntax) = toml::de::DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            return Err(invalid(
                syntax
                    .iter()
                    .map(|e| problem_at(text, e.span().unwrap_or(0..0), e.message()))
                    .collect(),
            ));
        }
        // Each key alone: the text with every other key blanked out (newlines kept, so
        // toml's spans are those of the file) names its key even inside a multi-line array.
        let mut problems = Vec::new();
        let mut entries: Vec<(String, Range<usize>)> = table
            .get_ref()
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), k.span().start..v.span().end))
            .collect();
        entries.sort_by_key(|(_, span)| span.start);
        let blank = |keep: &dyn Fn(usize) -> bool| -> String {
            text.char_indices()
                .map(|(i, c)| if keep(i) || c == '\n' { c } else { ' ' })
                .collect()
        };
        let mut bad: Vec<Range<usize>> = Vec::new();
        for (key, span) in &entries {
            if let Err(e) = toml::from_str::<Config>(&blank(&|i| span.contains(&i))) {
                let mut p = problem_at(text, e.span().unwrap_or(span.clone()), e.message());
                p.key = Some(key.clone());
                problems.push(p);
                bad.push(span.clone());
            }
        }
        if !problems.is_empty() {
            // The checks between the keys that are good, so that one round of edits fixes all.
            let rest = blank(&|i| !bad.iter().any(|b| b.contains(&i)));
            if let Ok(partial) = toml::from_str::<Config>(&rest) {
                problems.extend(partial.cross_checks(text));
            }
            problems.sort_by_key(|p| p.line);
            return Err(invalid(problems));
        }
        // Keys that blanking cannot isolate (tables) still fail here.
        let config: Config = toml::from_str(text).map_err(|e| {
            let p = problem_at(text, e.span().unwrap_or(0..0), e.message());
            invalid(vec![p])
        })?;
        let problems = config.cross_checks(text);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        Ok(config)
    }

    /// Keys whose value differs between `self` and `other`, in file order of the example.
    pub(crate) fn changed_keys(&self, other: &Config) -> Vec<String> {
        let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) =
            (toml::Value::try_from(self), toml::Value::try_from(other))
        else {
            return Vec::new();
        };
        let mut keys: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Keys a running daemon cannot change: the journal holds the originals of what it
    /// changed, the lock is held from the start.
    pub(crate) const RESTART_KEYS: [&'static str; 2] = ["journal", "lock-file"];

    /// Checks between keys; the later key of a pair is the one named (the one the file sets
    /// when only one is).
    fn cross_checks(&self, text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut at = |key: &str, message: String| {
            problems.push(Problem {
                line: line_of_key(text, key).unwrap_or(1),
                key: Some(key.to_string()),
                message,
            })
        };
        let named = |a: &str, b: &str| {
            if line_of_key(text, b).is_some() || line_of_key(text, a).is_none() {
                b.to_string()
            } else {
                a.to_string()
            }
        };
        if self.short_interval > self.long_interval {
            at(
                "short-interval",
                format!(
                    "{} s is longer than long-interval ({} s)",
                    self.short_interval, self.long_interval
                ),
            );
        }
        if self.rps_off >= self.rps_threshold {
            at(
                &named("rps-threshold", "rps-off"),
                format!(
                    "rps-off {}% must be below rps-threshold ({}%)",
                    self.rps_off, self.rps_threshold
                ),
            );
        }
        // A target must end under load-limit: far below threshold, an overloaded CPU's IRQs
        // fit only on nearly idle CPUs and overloads go unrelieved. birq's 99/95 passes.
        if self.load_limit < self.threshold / 2.0 {
            at(
                &named("threshold", "load-limit"),
                format!(
                    "load-limit {}% is below half of threshold ({}%): IRQs from an overloaded \
                     CPU could only go to nearly idle CPUs",
                    self.load_limit, self.threshold
                ),
            );
        }
        problems
    }

    /// The configuration against the machine: CPUs and IRQs it names that do not exist are
    /// warnings (a file shared by machines of different sizes); no CPU left to take IRQs is
    /// an error.
    pub(crate) fn check_machine(&self, m: &MachineFacts) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        let missing = self.exclude_cpus.difference(&m.cpus);
        if !missing.is_empty() {
            warnings.push(format!(
                "exclude-cpus names CPU(s) {missing} that this machine does not have (it has \
                 {})",
                m.cpus
            ));
        }
        let missing: Vec<String> = self
            .banned_irqs
            .iter()
            .filter(|n| !m.irqs.contains(n))
            .map(u32::to_string)
            .collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "banned-irqs names IRQ(s) {} that /proc/interrupts does not list",
                missing.join(", ")
            ));
        }
        let left = m
            .online
            .difference(&self.exclude_cpus)
            .difference(&m.banned_by_kernel());
        if left.is_empty() {
            return Err(format!(
                "no online CPU may take IRQs: exclude-cpus {}, isolated {}, nohz_full {} \
                 cover every online CPU ({})",
                list_or_none(&self.exclude_cpus),
                list_or_none(&m.isolated),
                list_or_none(&m.nohz_full),
                m.online
            ));
        }
        Ok(warnings)
    }

    /// One line naming the CPUs that take no IRQs and why, for logs and `plan`.
    pub(crate) fn banned_cpus_text(&self, m: &MachineFacts) -> String {
        format!(
            "CPUs taking no IRQs: excluded {}, isolated {}, nohz_full {}",
            list_or_none(&self.exclude_cpus),
            list_or_none(&m.isolated),
            list_or_none(&m.nohz_full)
        )
    }

    pub(crate) fn threshold_frac(&self) -> f64 {
        self.threshold / 100.0
    }
    pub(crate) fn load_limit_frac(&self) -> f64 {
        self.load_limit / 100.0
    }
    pub(crate) fn rps_threshold_frac(&self) -> f64 {
        self.rps_threshold / 100.0
    }
    pub(crate) fn rps_off_frac(&self) -> f64 {
        self.rps_off / 100.0
    }
}

/// toml's messages end with a newline and sometimes repeat the position.
fn clean_message(m: &str) -> String {
    m.trim().replace('\n', "; ")
}

fn list_or_none(set: &CpuSet) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.to_list_string()
    }
}

/// A problem at a byte span: its 1-based line, and the key written on that line (the text
/// before `=`), when there is one.
fn problem_at(text: &str, span: Range<usize>, message: &str) -> Problem {
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('#') && !k.starts_with('['));
    Problem {
        line,
        key,
        message: clean_message(message),
    }
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

/// The one range of every duration, on the command line (`--duration`, `--interval`) and in
/// the file (`short-interval`, `long-interval`): 0.1 s to a day.
pub(crate) const SECONDS: std::ops::RangeInclusive<f64> = 0.1..=86_400.0;

fn check_seconds(v: f64) -> Result<f64, String> {
    if v.is_finite() && SECONDS.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "must be between {} and {} seconds, got {v}",
            SECONDS.start(),
            SECONDS.end()
        ))
    }
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    check_seconds(f64::deserialize(d)?).map_err(D::Error::custom)
}

fn cpu_set<'de, D: Deserializer<'de>>(d: D) -> Result<CpuSet, D::Error> {
    let s = String::deserialize(d)?;
    CpuSet::parse_config(&s).map_err(|e| {
        D::Error::custom(format!(
            "{e} (want a cpu list like \"0-3,8\" or a hex mask like \"0xf0\")"
        ))
    })
}

fn ser_cpu_set<S: serde::Serializer>(set: &CpuSet, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&set.to_list_string())
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if v == 0 {
        return Err(D::Error::custom(
            "must be at least 1 (to turn RPS off set rps = false)",
        ));
    }
    Ok(v)
}

fn share<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
        return Err(D::Error::custom(format!(
            "must be a share above 0 and at most 1, got {v}"
        )));
    }
    Ok(v)
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
             strategy = \"rnd\"\nexclude-cpus = \"4-7\"\nht = false\nnon-local-cpus = true\n\
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
            e.starts_with("b.toml:2: key `exclude-cpus`: invalid cpu number"),
            "{e}"
        );
        let e = err("exclude-cpus = \"f0\"\n");
        assert!(e.contains("a hex mask needs its prefix: \"0xf0\""), "{e}");
        let e = err("rps-max-cpus = 0\n");
        assert!(
            e.starts_with("b.toml:1: key `rps-max-cpus`: must be at least 1"),
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
        let e = err("measure-share = 0\n");
        assert!(
            e.starts_with("b.toml:1: key `measure-share`: must be a share"),
            "{e}"
        );
        assert!(err("measure-share = 1.5\n").contains("key `measure-share`"));
        assert_eq!(
            Config::parse("measure-share = 1\n", "b.toml")
                .unwrap()
                .measure_share,
            1.0
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
    fn every_problem_is_reported_at_once() {
        let e = err("threshold = 150\nbanned-irqs = [\n  1,\n  \"x\",\n]\nbogus = 1\nht = 2\n");
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(
            lines[0].starts_with("b.toml:1: key `threshold`: must be a percentage"),
            "{e}"
        );
        // Inside a multi-line array: the element's line, and the key.
        assert!(lines[1].starts_with("b.toml:4: key `banned-irqs`:"), "{e}");
        assert!(
            lines[2].starts_with("b.toml:6: key `bogus`: unknown field"),
            "{e}"
        );
        assert!(lines[3].starts_with("b.toml:7: key `ht`:"), "{e}");
        // Checks between keys are all reported too, also next to bad values.
        let e = err("threshold = 99\nload-limit = 10\nrps-max-cpus = 0\n");
        assert_eq!(e.lines().count(), 2, "{e}");
        assert!(e.contains("b.toml:2: key `load-limit`"), "{e}");
        let e = err("long-interval = 1\nshort-interval = 3\nrps-threshold = 40\nrps-off = 60\n");
        assert_eq!(e.lines().count(), 2, "{e}");
    }

    #[test]
    fn cpu_sets_are_cpulists_or_prefixed_masks() {
        let c = Config::parse("exclude-cpus = \"0\"\n", "b.toml").unwrap();
        assert_eq!(c.exclude_cpus, CpuSet::from_cpus([0]));
        let c = Config::parse("exclude-cpus = \"0-1\"\n", "b.toml").unwrap();
        assert_eq!(c.exclude_cpus, CpuSet::from_cpus([0, 1]));
        let c = Config::parse("exclude-cpus = \"0x3\"\n", "b.toml").unwrap();
        assert_eq!(c.exclude_cpus, CpuSet::from_cpus([0, 1]));
    }

    #[test]
    fn threshold_and_load_limit_must_agree() {
        let e = err("threshold = 99\nload-limit = 10\n");
        assert!(
            e.starts_with("b.toml:2: key `load-limit`: load-limit 10% is below half"),
            "{e}"
        );
        // birq's defaults pass.
        Config::parse("threshold = 99\nload-limit = 95\n", "b.toml").unwrap();
    }

    #[test]
    fn the_machine_decides_what_exists() {
        let m = MachineFacts {
            cpus: CpuSet::first_n(4),
            online: CpuSet::first_n(4),
            isolated: CpuSet::from_cpus([3]),
            nohz_full: CpuSet::new(),
            irqs: [1, 9].into_iter().collect(),
        };
        let c = Config::parse(
            "exclude-cpus = \"2-5\"\nbanned-irqs = [9, 99999]\n",
            "b.toml",
        )
        .unwrap();
        let w = c.check_machine(&m).unwrap();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("CPU(s) 4-5"), "{w:?}");
        assert!(w[1].contains("IRQ(s) 99999"), "{w:?}");
        let c = Config::parse("exclude-cpus = \"0-2\"\n", "b.toml").unwrap();
        let e = c.check_machine(&m).unwrap_err();
        assert!(e.starts_with("no online CPU may take IRQs"), "{e}");
        assert_eq!(
            c.banned_cpus_text(&m),
            "CPUs taking no IRQs: excluded 0-2, isolated 3, nohz_full none"
        );
    }

    #[test]
    fn changed_keys_are_named() {
        let a = Config::default();
        let b = Config::parse(
            "threshold = 80\nexclude-cpus = \"1\"\nmetrics = \"127.0.0.1:9\"\n",
            "b.toml",
        )
        .unwrap();
        assert_eq!(
            a.changed_keys(&b),
            vec!["exclude-cpus", "metrics", "threshold"]
        );
        assert!(a.changed_keys(&a.clone()).is_empty());
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
