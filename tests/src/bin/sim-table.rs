//! Prints the balancer simulator's comparison table (docs/benchmarks.md, "Balancer
//! simulator"): `cargo run -p balancer-tests --release --bin sim-table`.
fn main() {
    print!("{}", balancer_tests::sim::table());
}
