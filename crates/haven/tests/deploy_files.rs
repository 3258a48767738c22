//! The files the Debian package ships from `deploy/` agree with the code: the default
//! config parses and validates (every commented example too, so a renamed key or a
//! changed range breaks this test, not an operator's first start), the unit runs the
//! packaged paths, and its open-file limit covers the connection bounds.
//! `deploy/test-deb` checks the built package itself.

use std::collections::BTreeMap;
use std::path::PathBuf;

use haven_core::config::NodeConfigFile;
use haven_net::accept::CLIENT_LIMITS;
use haven_net::accept::PEER_LIMITS;

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
}

/// `key = value` lines of a systemd unit, by section; a key given twice keeps both.
fn unit_settings(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut settings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        settings.entry((section.clone(), key.trim().to_string())).or_default().push(value.trim().to_string());
    }
    settings
}

fn unit_value(settings: &BTreeMap<(String, String), Vec<String>>, section: &str, key: &str) -> String {
    let values = settings
        .get(&(section.to_string(), key.to_string()))
        .unwrap_or_else(|| panic!("haven.service has no {key}= in [{section}]"));
    values.last().cloned().unwrap_or_default()
}

/// The commented-out settings of the shipped config (`#key = value`), uncommented.
fn commented_settings(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix('#'))
        .filter(|rest| {
            rest.split_once(" = ")
                .is_some_and(|(key, _)| !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_shipped_config_is_valid_once_a_node_id_is_set() {
    let text = repo_file("deploy/haven.toml");
    let file = NodeConfigFile::parse(&text).expect("deploy/haven.toml parses");
    assert_eq!(file.data_dir, Some(PathBuf::from("/var/lib/haven")), "the package's data dir");
    assert!(file.node_id.is_none(), "node_id must be chosen per machine, never shipped");
    let error = file.clone().validate().expect_err("no node_id");
    assert!(error.to_string().contains("node_id"), "the first start without a node_id names it: {error}");
    let with_id = file.merge(NodeConfigFile { node_id: Some(1), ..Default::default() });
    with_id.validate().expect("valid with a node_id");
}

#[test]
fn every_commented_example_in_the_shipped_config_is_a_real_setting() {
    let text = repo_file("deploy/haven.toml");
    let examples = commented_settings(&text);
    // Every key a node config has is shown, set or as an example, except the ones an
    // operator should not be led to: a token inline (flags and files are visible; the
    // token file is shown instead) and the two insecure switches.
    const NOT_SHOWN: [&str; 3] = ["join_token", "join_trust_first_use", "insecure_dev"];
    let keys = serde_json::to_value(NodeConfigFile::default()).expect("json");
    let lines: Vec<&str> = text.lines().chain(examples.iter().map(String::as_str)).collect();
    let shown = |key: &str| lines.iter().any(|line| line.split_once(" = ").is_some_and(|(name, _)| name == key));
    for key in keys.as_object().expect("an object").keys() {
        assert!(
            shown(key) || NOT_SHOWN.contains(&key.as_str()),
            "deploy/haven.toml does not show `{key}`: add a commented example"
        );
    }
    // Each on its own: a known key (unknown keys are refused) with a value of its type.
    for example in &examples {
        NodeConfigFile::parse(example).unwrap_or_else(|error| panic!("`{example}`: {error}"));
    }
    // Together (bootstrap and join exclude each other: one at a time), with the required
    // node_id: every value is in its range and the join and TLS settings are complete.
    for excluded in ["bootstrap", "join "] {
        let together: Vec<&str> =
            examples.iter().map(String::as_str).filter(|example| !example.starts_with(excluded)).collect();
        let config = format!("{}\n{}", text, together.join("\n"));
        let file = NodeConfigFile::parse(&config).unwrap_or_else(|error| panic!("{error}\n{config}"));
        file.validate().unwrap_or_else(|error| panic!("without `{excluded}`: {error}\n{config}"));
    }
}

#[test]
fn the_unit_runs_the_packaged_binary_config_and_data_dir() {
    let unit = unit_settings(&repo_file("deploy/haven.service"));
    assert_eq!(unit_value(&unit, "Service", "ExecStart"), "/usr/bin/haven serve --config /etc/haven/haven.toml");
    assert_eq!(unit_value(&unit, "Service", "Type"), "notify", "the node sends READY=1 (src/service.rs)");
    assert_eq!(unit_value(&unit, "Service", "User"), "haven");
    let config = NodeConfigFile::parse(&repo_file("deploy/haven.toml")).expect("config");
    let data_dir = config.data_dir.expect("data_dir").display().to_string();
    assert_eq!(format!("/var/lib/{}", unit_value(&unit, "Service", "StateDirectory")), data_dir);
    assert_eq!(unit_value(&unit, "Service", "ReadWritePaths"), data_dir);
    assert_eq!(unit_value(&unit, "Service", "StateDirectoryMode"), "0700");

    // The package puts the files where the unit looks for them, and creates the user.
    let manifest: toml::Table = toml::from_str(&repo_file("crates/haven/Cargo.toml")).expect("Cargo.toml");
    let assets = manifest["package"]["metadata"]["deb"]["assets"].as_array().expect("deb assets");
    let installs = |source: &str, target: &str| {
        assets.iter().any(|asset| asset[0].as_str() == Some(source) && asset[1].as_str() == Some(target))
    };
    assert!(installs("target/release/haven", "usr/bin/"), "the binary in /usr/bin");
    assert!(installs("../../deploy/haven.toml", "etc/haven/haven.toml"), "the config in /etc/haven");
    // The postinst creates the unit's user with the config's data dir as its home, and
    // makes that dir the user's.
    let postinst = repo_file("deploy/debian/postinst");
    assert!(postinst.contains(&format!("'u haven - \"Haven node\" {data_dir} /usr/sbin/nologin'")), "{postinst}");
    assert!(postinst.contains(&format!("install -d -o haven -g haven -m 0700 {data_dir}")), "{postinst}");
}

/// Open files the node needs besides its listeners' connections: outgoing peer
/// connections (a few per member, up to 7 voters plus learners), the store's files,
/// replicated directories' files being copied, DNS, SMTP and ICMP sockets, hook pipes.
const OPEN_FILES_BESIDES_LISTENERS: u64 = 1024;

#[test]
fn the_unit_allows_the_open_files_the_connection_bounds_need() {
    let unit = unit_settings(&repo_file("deploy/haven.service"));
    let limit: u64 = unit_value(&unit, "Service", "LimitNOFILE").parse().expect("a number");
    let listeners = [CLIENT_LIMITS, PEER_LIMITS]
        .iter()
        .map(|limits| (limits.established_max + limits.handshakes_max) as u64)
        .sum::<u64>();
    assert!(
        limit >= listeners + OPEN_FILES_BESIDES_LISTENERS,
        "LimitNOFILE={limit} is below the listeners' {listeners} connections plus {OPEN_FILES_BESIDES_LISTENERS}"
    );
}

#[test]
fn the_unit_grants_no_capability_and_confines_writes_to_the_data_dir() {
    let unit = unit_settings(&repo_file("deploy/haven.service"));
    // Empty on purpose (the unit's header says why and how to add CAP_NET_RAW).
    assert_eq!(unit_value(&unit, "Service", "CapabilityBoundingSet"), "");
    assert_eq!(unit_value(&unit, "Service", "AmbientCapabilities"), "");
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(unit_value(&unit, "Service", key), value, "{key}");
    }
}
