//! proc/interrupts: any text parses without panicking, and what it returns is consistent.
#![no_main]
use balancer::system::interrupts::{self, RowId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let table = interrupts::parse(&text);
    for row in &table.rows {
        assert_eq!(row.counts.len(), table.cpus.len());
        if let RowId::Named(_) = row.id {
            assert!(row.actions.is_empty());
        }
        let _ = row.total();
    }
});
