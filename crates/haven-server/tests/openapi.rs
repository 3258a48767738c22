//! The OpenAPI file is the contract: every route the router serves is in it with the
//! same methods, and it lists nothing the router does not serve.

use std::collections::BTreeSet;

/// (path, method) pairs from `api/openapi.yaml`'s `paths` section. A small line-based
/// reader is enough: paths are the two-space-indented keys under `paths:`, methods the
/// four-space-indented HTTP verbs under them.
fn openapi_routes(text: &str) -> BTreeSet<(String, String)> {
    const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  ").filter(|rest| !rest.starts_with(' ')) {
            path = key.trim_end().strip_suffix(':').map(str::to_string);
        } else if let Some(key) = line.strip_prefix("    ").filter(|rest| !rest.starts_with(' ')) {
            let method = key.trim_end().trim_end_matches(':');
            if let (Some(path), true) = (&path, METHODS.contains(&method)) {
                routes.insert((path.clone(), method.to_string()));
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
        .flat_map(|(path, methods)| methods.iter().map(move |method| (path.to_string(), method.to_string())))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from api/openapi.yaml: {undocumented:?}");
    assert!(unserved.is_empty(), "api/openapi.yaml lists routes the router does not serve: {unserved:?}");
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
