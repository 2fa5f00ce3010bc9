//! The shape of src/, checked on every test run (docs/ARCHITECTURE.md explains it):
//! imports point down the layers or sideways within one, never up; no modules import
//! each other in a circle; the model layer does no I/O; only the spawn module starts
//! processes; the metrics know plain types only.
//!
//! It reads the sources as text: `crate::` and `super::` paths outside comments,
//! resolved to the module file they name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module, bottom first.
const LAYERS: &[(&str, u8, &str)] = &[
    ("model", 0, "model"),
    ("cli", 1, "settings"),
    ("config", 1, "settings"),
    ("cluster", 2, "cluster"),
    ("runtime", 3, "runtime"),
    ("commands", 4, "fronts"),
    ("embed", 4, "fronts"),
];

/// What the model layer must not use: files, sockets, processes, the async runtime, API clients.
const IO_IN_MODEL: &[&str] =
    &["tokio::", "std::fs", "std::net", "std::process", "kube::Client", "kube::Api", "kube::api::Api"];

type Module = Vec<String>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file below src/ except the crate roots, with its module path.
fn modules() -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    collect(&src(), &mut Vec::new(), &mut out);
    out
}

fn collect(dir: &Path, prefix: &mut Module, out: &mut BTreeMap<Module, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            prefix.push(name);
            collect(&path, prefix, out);
            prefix.pop();
        } else if path.extension().is_some_and(|e| e == "rs")
            && !(prefix.is_empty() && (name == "lib" || name == "main"))
        {
            let mut module = prefix.clone();
            if name != "mod" {
                module.push(name);
            }
            out.insert(module, std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The code of a file without its comments and its unit tests.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    body.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Every `crate::a::b` and `super::a` path in the code, as module paths from the crate root.
fn imports(module: &Module, text: &str) -> Vec<Module> {
    let mut out = Vec::new();
    for (marker, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        for (i, _) in text.match_indices(marker) {
            if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut path = base.clone();
            path.extend(segments(&text[i + marker.len()..]));
            out.push(path);
        }
    }
    out
}

/// The module `super` names: the parent, whether the module is a file or a folder's mod.rs.
fn parent(module: &Module) -> Module {
    module[..module.len().saturating_sub(1)].to_vec()
}

/// `a::b::Type` -> [a, b]: the lower-case segments up to the first type, function or brace.
fn segments(rest: &str) -> Vec<String> {
    let mut out = Vec::new();
    for seg in rest.split("::") {
        let word: String = seg.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !word.starts_with(|c: char| c.is_ascii_lowercase()) {
            break;
        }
        out.push(word.clone());
        if word.len() != seg.len() {
            break;
        }
    }
    out
}

/// The deepest module file an import path reaches.
fn resolve<'a>(path: &Module, known: &'a BTreeMap<Module, String>) -> Option<&'a Module> {
    (1..=path.len()).rev().find_map(|n| known.get_key_value(&path[..n]).map(|(k, _)| k))
}

fn layer(module: &Module) -> (u8, &'static str) {
    let top = module.first().map(String::as_str).unwrap_or("");
    LAYERS
        .iter()
        .find(|(name, _, _)| *name == top)
        .map(|(_, n, l)| (*n, *l))
        .unwrap_or_else(|| panic!("src/{top} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"))
}

fn shown(m: &Module) -> String {
    format!("crate::{}", m.join("::"))
}

/// module -> the modules it imports (itself left out).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let known = modules();
    let mut edges = BTreeMap::new();
    for (module, text) in &known {
        let targets: BTreeSet<Module> = imports(module, &code(text))
            .iter()
            .filter_map(|p| resolve(p, &known).cloned())
            .filter(|t| t != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

#[test]
fn every_import_points_down_or_within_its_layer() {
    let mut upward = Vec::new();
    for (module, targets) in graph() {
        let (from, from_name) = layer(&module);
        for t in targets {
            let (to, to_name) = layer(&t);
            if to > from {
                upward.push(format!("{} ({from_name}) imports {} ({to_name})", shown(&module), shown(&t)));
            }
        }
    }
    assert!(upward.is_empty(), "imports that point up a layer:\n{}", upward.join("\n"));
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let g = graph();
    let mut state: BTreeMap<&Module, u8> = BTreeMap::new();
    for m in g.keys() {
        let mut stack = Vec::new();
        if let Some(circle) = visit(m, &g, &mut state, &mut stack) {
            panic!("import circle: {}", circle.iter().map(|m| shown(m)).collect::<Vec<_>>().join(" -> "));
        }
    }
}

/// Depth-first search; 1 = on the current path, 2 = done. Returns the circle found.
fn visit<'a>(
    m: &'a Module,
    g: &'a BTreeMap<Module, BTreeSet<Module>>,
    state: &mut BTreeMap<&'a Module, u8>,
    stack: &mut Vec<&'a Module>,
) -> Option<Vec<&'a Module>> {
    match state.get(m) {
        Some(2) => return None,
        Some(_) => {
            let start = stack.iter().position(|s| *s == m).unwrap();
            let mut circle = stack[start..].to_vec();
            circle.push(m);
            return Some(circle);
        }
        None => {}
    }
    state.insert(m, 1);
    stack.push(m);
    for t in &g[m] {
        if let Some(c) = visit(t, g, state, stack) {
            return Some(c);
        }
    }
    stack.pop();
    state.insert(m, 2);
    None
}

#[test]
fn the_model_layer_does_no_io() {
    let mut found = Vec::new();
    for (module, text) in modules().iter().filter(|(m, _)| layer(m).0 == 0) {
        for word in IO_IN_MODEL.iter().filter(|w| code(text).contains(**w)) {
            found.push(format!("{} uses {word}", shown(module)));
        }
    }
    assert!(found.is_empty(), "the model layer is pure (no I/O, no tokio):\n{}", found.join("\n"));
}

#[test]
fn only_the_spawn_module_starts_processes() {
    let spawn: Module = ["runtime", "hooks", "spawn"].map(String::from).to_vec();
    let starters: Vec<String> = modules()
        .iter()
        .filter(|(m, text)| {
            **m != spawn && (code(text).contains("Command::new") || code(text).contains("process::Command"))
        })
        .map(|(m, _)| shown(m))
        .collect();
    assert!(starters.is_empty(), "processes are started only in crate::runtime::hooks::spawn: {starters:?}");
}

#[test]
fn the_metrics_import_plain_types_only() {
    let metrics: Module = ["runtime", "metrics"].map(String::from).to_vec();
    let g = graph();
    let beyond: Vec<String> = g[&metrics].iter().filter(|t| layer(t).0 > 0).map(shown).collect();
    assert!(beyond.is_empty(), "crate::runtime::metrics may import only the model layer: {beyond:?}");
}

#[test]
fn the_check_sees_an_upward_import_when_there_is_one() {
    let module: Module = vec!["model".into(), "event".into()];
    let found = imports(&module, "use crate::runtime::watch::Tracker;\nlet x = super::fields::FieldPath::new();");
    assert_eq!(found, vec![vec!["runtime".to_string(), "watch".into()], vec!["model".into(), "fields".into()]]);
    assert!(layer(&found[0]).0 > layer(&module).0);
}
