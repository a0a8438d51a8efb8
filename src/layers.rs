//! The layering of [`crate::LAYERS`], checked: every path into the crate that a
//! module's code (not its tests) names — `use` lines and inline `crate::…`,
//! `super::…` paths alike — points to its own layer or one below, and the
//! modules' imports close no circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One import of another top-level module: where, from, to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    at: String,
    from: String,
    to: String,
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `engine/consumer.rs` is
/// `[engine, consumer]`, `engine/mod.rs` is `[engine]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

/// The code of a file without its test modules and comments.
fn code(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            // A test module: skip to its closing brace at the same indentation.
            let indent = line.len() - trimmed.len();
            let close = format!("{}}}", " ".repeat(indent));
            for inner in lines.by_ref() {
                if inner == close {
                    break;
                }
            }
            continue;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// The first segment of each path that starts with `prefix` (`crate::` or a
/// run of `super::`), with `{a, b::c}` groups opened.
fn heads_after(code: &str, prefix: &str) -> Vec<(usize, String)> {
    let mut heads = Vec::new();
    let mut from = 0;
    while let Some(found) = code[from..].find(prefix) {
        let at = from + found;
        from = at + prefix.len();
        // Not the tail of a longer path or name (`super::super::`, `my_crate::`).
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // `{a, b::{c, d}, e}`: the names at depth 0.
            let mut depth = 0;
            let mut name = String::new();
            let mut at_start = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_start = true,
                    c if depth == 0 && at_start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if depth == 0 && at_start && !name.is_empty() => {
                        heads.push((line, std::mem::take(&mut name)));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                heads.push((line, name));
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                heads.push((line, name));
            }
        }
    }
    heads
}

/// Every import of another top-level module in `text`, the file at `relative`.
fn imports(relative: &Path, text: &str) -> Vec<Import> {
    let module = module_path(relative);
    let code = code(text);
    let mut found = Vec::new();
    let mut push = |line: usize, to: String| {
        if to != module[0] && to != "self" && to != "super" {
            found.push(Import { at: format!("src/{}:{line}", relative.display()), from: module[0].clone(), to });
        }
    };
    for (line, head) in heads_after(&code, "crate::") {
        push(line, head);
    }
    // `super::` from depth d reaches the crate root after d of them.
    for depth in 1..=module.len() {
        let prefix = "super::".repeat(depth);
        if depth == module.len() {
            for (line, head) in heads_after(&code, &prefix) {
                if head != "super" {
                    push(line, head);
                }
            }
        }
    }
    found
}

fn crate_imports() -> Vec<Import> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().to_owned();
        // The entry points and the crate root sit above every layer.
        // This checker is a test module of the crate root.
        let above = ["main.rs", "lib.rs", "layers.rs"].iter().any(|f| relative == Path::new(f));
        if above || relative.starts_with("bin") {
            continue;
        }
        all.extend(imports(&relative, &std::fs::read_to_string(&file).unwrap()));
    }
    all
}

/// What breaks the layering: imports that point up, and circles.
fn violations(imports: &[Import], layers: &BTreeMap<&str, u8>) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in imports {
        let (Some(from), Some(to)) = (layers.get(i.from.as_str()), layers.get(i.to.as_str())) else {
            wrong.push(format!("{}: `{}` → `{}`: a module without a layer in LAYERS", i.at, i.from, i.to));
            continue;
        };
        if to > from {
            wrong.push(format!(
                "{}: `{}` (layer {from}) imports `{}` (layer {to}): an import points up; move the shared value down",
                i.at, i.from, i.to
            ));
        }
        graph.entry(i.from.as_str()).or_default().insert(i.to.as_str());
    }
    // A circle: a module that reaches itself.
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<&str>> = vec![vec![start]];
        while let Some(path) = stack.pop() {
            for next in graph.get(path.last().unwrap()).into_iter().flatten() {
                if next == start {
                    let circle = path.iter().chain([next]).copied().collect::<Vec<_>>().join(" → ");
                    wrong.push(format!("an import circle: {circle}"));
                } else if seen.insert(*next) {
                    stack.push(path.iter().copied().chain([*next]).collect());
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    wrong
}

fn layers() -> BTreeMap<&'static str, u8> {
    crate::LAYERS.iter().copied().collect()
}

#[test]
fn every_import_points_down_and_none_closes_a_circle() {
    let imports = crate_imports();
    assert!(imports.len() > 50, "the reader found the crate's imports: {}", imports.len());
    let wrong = violations(&imports, &layers());
    assert!(wrong.is_empty(), "the layers of lib.rs are broken:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';')).collect();
    let layered: BTreeSet<&str> = crate::LAYERS.iter().map(|(m, _)| *m).collect();
    assert_eq!(declared, layered);
}

#[test]
fn the_reader_finds_what_breaks_the_layers() {
    // One of the imports that once closed the circle: kpl (1) → processor (4).
    let kpl = "use md5::Md5;\nfn f(k: &str) -> String { crate::processor::truncate(k, 64) }\n";
    let found = imports(Path::new("kpl.rs"), kpl);
    assert_eq!(found, [Import { at: "src/kpl.rs:2".into(), from: "kpl".into(), to: "processor".into() }]);
    // Inline, grouped, through `super::` from a nested file, in a comment, in tests.
    let nested = "use crate::{model::Record, retry::{Backoff}, aws};\n\
                  fn g() { super::super::metrics::describe(); super::held::x(); }\n\
                  // crate::app::run\n\
                  #[cfg(test)]\nmod tests {\n    use crate::app::run;\n}\n";
    let tos: Vec<String> = imports(Path::new("engine/consumer.rs"), nested).into_iter().map(|i| i.to).collect();
    assert_eq!(tos, ["model", "retry", "aws", "metrics"]);
    let mut with_circle = crate_imports();
    with_circle.extend(found);
    let wrong = violations(&with_circle, &layers());
    assert!(wrong.iter().any(|w| w.contains("`kpl` (layer 1) imports `processor` (layer 4)")), "{wrong:?}");
    assert!(wrong.iter().any(|w| w.starts_with("an import circle: ") && w.contains("kpl")), "{wrong:?}");
}
