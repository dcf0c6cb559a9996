//! Replays every input in `fuzz/corpus/` (seeds, and inputs that once
//! crashed a fuzz target) through the fuzz entry points on the stable
//! toolchain: each must return without a panic. `scripts/fuzz.sh` runs the
//! same entry points under libFuzzer to look for new inputs.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::harness::project_root;

#[test]
fn every_corpus_input_is_handled_without_a_panic() {
    let corpus = project_root().join("fuzz/corpus");
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in imgsync::fuzz::TARGETS {
        let dir = corpus.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target has seeds)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seeds", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            replayed += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(replayed > 0);
    assert!(
        failures.is_empty(),
        "inputs that panic:\n{}",
        failures.join("\n")
    );
}
