//! The layering rule of ARCHITECTURE.md, checked on the source tree: each
//! layer (content ← store ← engine ← commands ← cli ← main) uses only the
//! layers below it, a verb never calls another verb, and no code is
//! `unsafe`. A change that breaks the rule fails here with the file, the
//! line and the layer it reached.

use std::path::{Path, PathBuf};

use super::harness::project_root;

/// The layers, bottom up. `error` is shared by every layer, with `content`.
const LAYERS: [&str; 6] = ["content", "store", "engine", "commands", "cli", "main"];

fn rank(layer: &str) -> Option<usize> {
    match layer {
        "error" | "Error" | "ErrorClass" | "Result" => Some(0),
        other => LAYERS.iter().position(|l| *l == other),
    }
}

/// The layer a source file belongs to, and the verb module when it is one.
fn layer_of(rel: &Path) -> (usize, Option<String>) {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [file] if file == "main" => (5, None),
        [file] if file == "lib" || file == "error" => (0, None),
        // The fuzz entry points reach every parser, commands included.
        [file] if file == "fuzz" => (3, None),
        [dir, ..] if dir == "cli" => (4, None),
        [dir, verb, ..] if dir == "commands" => {
            let verb = (verb != "mod" && verb != "mirror" && !verb.ends_with("tests"))
                .then(|| verb.clone());
            (3, verb)
        }
        [dir, ..] => (
            rank(dir).unwrap_or_else(|| panic!("{} is in no layer", rel.display())),
            None,
        ),
        [] => unreachable!("a file has a name"),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::a::b` (library) or `imgsync::a::b` / `cli::` (binary)
/// path on a line, as (first segment, second segment).
fn paths_on(line: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for prefix in ["crate::", "imgsync::"] {
        let mut rest = line;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let mut segs = rest
                .split("::")
                .map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')).next());
            let first = segs.next().flatten().unwrap_or_default().to_string();
            let second = segs.next().flatten().map(str::to_string);
            found.push((first, second));
        }
    }
    found
}

#[test]
fn layers_use_only_what_is_below_them() {
    let src = project_root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "the source tree was not found");
    let mut breaks = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let (own, verb) = layer_of(rel);
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (first, second) in paths_on(line) {
                let target = if first == "cli" {
                    Some(4)
                } else {
                    rank(&first)
                };
                let Some(target) = target else { continue };
                if target > own {
                    breaks.push(format!(
                        "{}:{}: the {} layer uses {first} (above it)",
                        rel.display(),
                        n + 1,
                        LAYERS[own]
                    ));
                }
                if let (Some(verb), "commands", Some(other)) = (&verb, first.as_str(), &second)
                    && other != verb
                    && other != "mirror"
                {
                    breaks.push(format!(
                        "{}:{}: the verb {verb} uses the verb {other}",
                        rel.display(),
                        n + 1
                    ));
                }
            }
            if code.contains("unsafe") && !code.contains("forbid(unsafe_code)") {
                breaks.push(format!("{}:{}: unsafe code", rel.display(), n + 1));
            }
        }
    }
    assert!(breaks.is_empty(), "layering breaks:\n{}", breaks.join("\n"));
}

#[test]
fn a_use_of_a_higher_layer_is_seen() {
    // The check itself: a store line reaching the engine is found, a doc
    // comment or a lower layer is not.
    assert_eq!(
        paths_on("use crate::engine::CopyOptions;"),
        [("engine".to_string(), Some("CopyOptions".to_string()))]
    );
    assert_eq!(layer_of(Path::new("store/registry/client.rs")), (1, None));
    assert_eq!(
        layer_of(Path::new("commands/save.rs")),
        (3, Some("save".to_string()))
    );
    assert_eq!(layer_of(Path::new("commands/mirror/plan.rs")), (3, None));
    assert!(paths_on("let x = mycrate::engine::y;").is_empty());
}
