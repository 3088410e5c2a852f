//! Building the full system model of the generated 256-CPU / 1500-IRQ machine, and parsing
//! its proc/interrupts (the per-interval cost):
//!
//!     cargo bench -p balancer --bench model [-- RUNS]
//!
//! Prints mean, median, min and max over RUNS (default 200) after 10 warm-up runs. Files come
//! from the page cache, as on a live machine's procfs/sysfs (which is slower per file).
use std::time::{Duration, Instant};

use balancer::system::{ReadOptions, SystemModel, interrupts, proximity};

#[path = "../tests/support/synth.rs"]
mod synth;

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let n = times.len();
    let mean = times.iter().sum::<Duration>() / n as u32;
    println!(
        "{name:<44} n={n:<4} mean {:>8.3} ms  median {:>8.3} ms  min {:>8.3} ms  max {:>8.3} ms",
        ms(mean),
        ms(times[n / 2]),
        ms(times[0]),
        ms(times[n - 1])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    for _ in 0..10 {
        std::hint::black_box(f());
    }
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
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
        time(runs, || SystemModel::read(&s.root, &opts).expect("model")),
    );
    let irq_text = std::fs::read_to_string(s.root.join("proc/interrupts")).expect("interrupts");
    summary(
        &format!("interrupts::parse ({} KiB)", irq_text.len() / 1024),
        time(runs, || interrupts::parse(&irq_text)),
    );
    summary(
        "interrupts::read",
        time(runs, || interrupts::read(&s.root).expect("interrupts")),
    );
}
