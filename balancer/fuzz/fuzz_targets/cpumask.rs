//! Masks and cpulists: no panics, and whatever parses prints back to an equal set.
#![no_main]
use balancer::cpumask::CpuSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok((set, width)) = CpuSet::parse_mask_with_width(&text) {
        let printed = set.to_mask_string(width);
        assert_eq!(CpuSet::parse_mask(&printed).ok(), Some(set.clone()));
        assert_eq!(CpuSet::parse_list(&set.to_list_string()).ok(), Some(set));
    }
    if let Ok(set) = CpuSet::parse_list(&text) {
        assert_eq!(CpuSet::parse_list(&set.to_list_string()).ok(), Some(set.clone()));
        let mask = set.to_mask_string(0);
        assert_eq!(CpuSet::parse_mask(&mask).ok(), Some(set.clone()));
        let other = CpuSet::from_cpus(set.iter().map(|c| c / 2));
        assert!(set.intersection(&other).is_subset(&set));
        assert_eq!(set.union(&other).difference(&other), set.difference(&other));
    }
});
