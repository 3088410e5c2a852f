//! Prints the balancer simulator's comparison table (docs/benchmarks.md, "Balancer
//! simulator"): `cargo run -p balancer-tests --release --bin sim-table`.
//! `sim-table trace "<scenario>" [strategy]` prints every interval's plan of one run instead.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("trace") {
        let name = args.get(1).cloned().unwrap_or_default();
        let strategy = match args.get(2).map(String::as_str) {
            Some("count") => balancer::config::Strategy::Count,
            Some("rnd") => balancer::config::Strategy::Rnd,
            _ => balancer::config::Strategy::Weight,
        };
        let Some(sc) = balancer_tests::sim::scenarios()
            .into_iter()
            .find(|s| s.name == name)
        else {
            eprintln!("no scenario {name:?}");
            std::process::exit(2);
        };
        let r = balancer_tests::sim::run(&sc, strategy);
        for (i, (plan, max)) in r.plans.iter().zip(&r.max_load).enumerate() {
            println!("interval {i}: max CPU demand {:.0}%", 100.0 * max);
            for a in &plan.actions {
                println!("  action: {}", a.reason);
            }
            for f in &plan.findings {
                println!("  finding: {}", f.message);
            }
        }
        return;
    }
    print!("{}", balancer_tests::sim::table());
}
