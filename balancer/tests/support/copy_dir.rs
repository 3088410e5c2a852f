//! Copies a fixture tree for a test that writes to it. One definition for the tests of both
//! crates: `balancer`'s unit tests (`crate::test_support`) and `balancer-tests`
//! (`balancer_tests::copy_dir`) include this file by path.
use std::{fs, path::Path};

/// Copies `from` into `to` (created), recursively; symlinks stay links (sysfs fixtures link
/// devices to their drivers and nodes). Panics on any error: for tests only.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
    for e in entries {
        let e = e.unwrap_or_else(|e| panic!("reading {}: {e}", from.display()));
        let dest = to.join(e.file_name());
        let ty = e
            .file_type()
            .unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
        if ty.is_dir() {
            copy_dir(&e.path(), &dest);
        } else if ty.is_symlink() {
            let target = fs::read_link(e.path()).unwrap_or_else(|e| panic!("{e}"));
            std::os::unix::fs::symlink(target, &dest)
                .unwrap_or_else(|e| panic!("linking {}: {e}", dest.display()));
        } else {
            fs::copy(e.path(), &dest)
                .unwrap_or_else(|e| panic!("copying to {}: {e}", dest.display()));
        }
    }
}
