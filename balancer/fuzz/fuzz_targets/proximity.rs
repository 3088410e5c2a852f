//! Proximity files: no panics; every rule found by lookup is one the file defined.
#![no_main]
use balancer::system::proximity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (prox, errors) = proximity::parse(&text);
    let lines = text.lines().count();
    assert!(errors.iter().all(|e| e.line >= 1 && e.line <= lines));
    for rule in prox.rules() {
        let found = prox.lookup(&rule.prefix);
        assert!(found.is_some_and(|f| f.prefix.len() >= rule.prefix.len()));
    }
    let _ = prox.lookup("0000:00:03.0");
});
