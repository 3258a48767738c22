//! The OpenAPI file is the contract: every route the router serves is in it with the
//! same methods and the same access level (`x-haven-access`), and it lists nothing the
//! router does not serve.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

/// (path, method) pairs from `api/openapi.yaml`'s `paths` section. A small line-based
/// reader is enough: paths are the two-space-indented keys under `paths:`, methods the
/// four-space-indented HTTP verbs under them.
fn openapi_routes(text: &str) -> BTreeSet<(String, String)> {
    openapi_access(text).into_keys().collect()
}

/// Each (path, method) of `paths` with the value of its six-space-indented
/// `x-haven-access:` line, if it has one.
fn openapi_access(text: &str) -> BTreeMap<(String, String), Option<String>> {
    const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];
    let mut routes = BTreeMap::new();
    let mut in_paths = false;
    let mut path = None;
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_paths = line.trim_end() == "paths:";
            path = None;
            current = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  ").filter(|rest| !rest.starts_with(' ')) {
            path = key.trim_end().strip_suffix(':').map(str::to_string);
            current = None;
        } else if let Some(key) = line.strip_prefix("    ").filter(|rest| !rest.starts_with(' ')) {
            let method = key.trim_end().trim_end_matches(':');
            current = None;
            if let (Some(path), true) = (&path, METHODS.contains(&method)) {
                routes.insert((path.clone(), method.to_string()), None);
                current = Some((path.clone(), method.to_string()));
            }
        } else if let Some(access) = line.strip_prefix("      x-haven-access:") {
            if let Some(route) = &current {
                routes.insert(route.clone(), Some(access.trim().to_string()));
            }
        }
    }
    routes
}

#[test]
fn openapi_matches_the_router() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/openapi.yaml"))
        .expect("api/openapi.yaml");
    let documented = openapi_routes(&text);
    let served: BTreeSet<(String, String)> = haven_server::api::ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(move |(method, _)| (path.to_string(), method.to_string())))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from api/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "api/openapi.yaml lists routes the router does not serve: {unserved:?}");
}

/// The access level each operation documents is the one the router enforces.
#[test]
fn openapi_documents_each_routes_access() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/openapi.yaml"))
        .expect("api/openapi.yaml");
    let documented = openapi_access(&text);
    for (path, methods) in haven_server::api::ROUTES {
        for (method, access) in *methods {
            let key = (path.to_string(), method.to_string());
            assert_eq!(
                documented.get(&key).cloned().flatten().as_deref(),
                Some(access.as_str()),
                "{method} {path}: api/openapi.yaml must say `x-haven-access: {access}`"
            );
        }
    }
}

#[test]
fn the_reader_sees_a_mismatch() {
    // The checker has teeth: a document with one method fewer is different.
    let text = "paths:\n  /v1/kv/{key}:\n    get:\n      summary: x\n    put:\n      summary: y\ncomponents:\n  x:\n    get:\n";
    let routes = openapi_routes(text);
    assert_eq!(
        routes,
        BTreeSet::from([
            ("/v1/kv/{key}".to_string(), "get".to_string()),
            ("/v1/kv/{key}".to_string(), "put".to_string())
        ])
    );
}
