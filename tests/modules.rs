//! The modules of `src/` depend on each other in one direction: no module
//! imports one that imports it back, directly or through others. Read from
//! the sources (`crate::name` outside `#[cfg(test)]`), so that a new cycle
//! fails here, with the modules that form it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each module of `src/` (test modules left out) and the modules it names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in fs::read_dir(&src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
        if path.extension().is_none_or(|ext| ext != "rs") || name == "lib" || name.ends_with("_tests") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("a module is readable");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let named = code
            .split("crate::")
            .skip(1)
            .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>())
            .filter(|module| !module.is_empty() && *module != name)
            .collect();
        graph.insert(name, named);
    }
    graph
}

/// A cycle through `start`, as the modules along it.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("a path is never empty");
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![next.clone()]].concat());
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = dependencies();
    assert!(graph.len() > 20, "found only {} modules", graph.len());
    let cycles: Vec<String> = graph.keys().filter_map(|m| cycle_from(&graph, m)).map(|c| c.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn reading_the_configuration_knows_nothing_of_compiling_it() {
    let graph = dependencies();
    let config = graph.get("config").expect("src/config.rs");
    assert!(!config.contains("compile") && !config.contains("policy"), "config imports {config:?}");
}
