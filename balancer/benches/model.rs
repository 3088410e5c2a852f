//! Building the full system model of the generated 256-CPU / 1500-IRQ machine, and parsing
//! its proc/interrupts (the per-interval cost):
//!
//!     cargo bench -p balancer --bench model [-- RUNS]
//!
//! Prints mean, median, min and max over RUNS (default 200) after 10 warm-up runs, of the
//! wall-clock time and of the CPU time the process used (user + system, all threads, from
//! getrusage): on a shared machine the wall clock mostly measures the other load, CPU time
//! much less so. Files come from the page cache.
use std::time::{Duration, Instant};

use balancer::system::{ReadOptions, SystemModel, interrupts, proximity};

#[path = "../tests/support/synth.rs"]
mod synth;

struct Sample {
    wall: Duration,
    cpu: Duration,
}

fn summary(name: &str, samples: &[Sample]) {
    let stats = |mut times: Vec<Duration>| {
        times.sort();
        let n = times.len();
        let mean = times.iter().sum::<Duration>() / n as u32;
        format!(
            "mean {:>7.3}  median {:>7.3}  min {:>7.3}  max {:>7.3} ms",
            ms(mean),
            ms(times[n / 2]),
            ms(times[0]),
            ms(times[n - 1])
        )
    };
    println!("{name} (n={})", samples.len());
    println!("  wall {}", stats(samples.iter().map(|s| s.wall).collect()));
    println!("  cpu  {}", stats(samples.iter().map(|s| s.cpu).collect()));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Vec<Sample> {
    for _ in 0..10 {
        std::hint::black_box(f());
    }
    (0..runs)
        .map(|_| {
            let (start, cpu) = (Instant::now(), cpu_time());
            std::hint::black_box(f());
            Sample {
                wall: start.elapsed(),
                cpu: cpu_time().saturating_sub(cpu),
            }
        })
        .collect()
}

fn main() {
    // `cargo bench` passes "--bench"; the first number is the run count.
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200)
        .max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let s = synth::write(dir.path(), &synth::Spec::large()).expect("writing the fixture");
    let text = std::fs::read_to_string(s.proximity_file.as_path()).expect("proximity file");
    let (prox, _) = proximity::parse(&text);
    let opts = ReadOptions {
        proximity: Some(prox),
    };
    let model = SystemModel::read(&s.root, &opts).expect("model");
    println!(
        "fixture: {} CPUs ({} online), {} IRQs, {} PCI devices, {} netdevs, {} warnings",
        model.cpus.len(),
        model.online_cpus().len(),
        model.irqs.len(),
        model.pci.len(),
        model.netdevs.len(),
        model.warnings.len()
    );
    summary(
        "SystemModel::read (1500 IRQs, 256 CPUs)",
        &time(runs, || SystemModel::read(&s.root, &opts).expect("model")),
    );
    let irq_text = std::fs::read_to_string(s.root.join("proc/interrupts")).expect("interrupts");
    summary(
        &format!("interrupts::parse ({} KiB)", irq_text.len() / 1024),
        &time(runs, || interrupts::parse(&irq_text)),
    );
    summary(
        "interrupts::read",
        &time(runs, || interrupts::read(&s.root).expect("interrupts")),
    );
}
