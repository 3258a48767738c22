//! Property-based fuzzing of every pure decoder of untrusted text: config files, key
//! fingerprints, bearer tokens, roles and keys. Each must answer every input with a value
//! or an error, never a panic. `PROPTEST_CASES` raises the number of cases for a longer
//! run (`docs/fuzzing.md`).

use haven_core::auth::parse_token;
use haven_core::config::parse_fingerprint;
use haven_core::config::NodeConfigFile;
use haven_core::key::validate_key;
use proptest::prelude::*;

/// Text that looks like a config file: known keys, random values, random junk.
fn config_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "node_id",
            "data_dir",
            "client_addr",
            "peer_addr",
            "join",
            "bootstrap",
            "failed_pings",
            "join_fingerprint",
            "insecure_dev",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[^\"\\\\]{0,40}\"",
        Just("true".to_string()),
        Just("[1, 2]".to_string()),
        ".{0,20}",
    ];
    prop::collection::vec((key, value), 0..8)
        .prop_map(|lines| lines.into_iter().map(|(k, v)| format!("{k} = {v}\n")).collect())
}

proptest! {
    #[test]
    fn config_files_never_panic(text in config_like()) {
        if let Ok(file) = NodeConfigFile::parse(&text) {
            let _ = file.validate();
        }
    }

    #[test]
    fn arbitrary_text_as_config_never_panics(text in ".{0,200}") {
        let _ = NodeConfigFile::parse(&text).map(NodeConfigFile::validate);
    }

    #[test]
    fn config_errors_are_one_line(text in config_like()) {
        match NodeConfigFile::parse(&text).and_then(NodeConfigFile::validate) {
            Ok(_) => {}
            Err(error) => prop_assert!(!error.to_string().contains('\n'), "{}", error),
        }
    }

    #[test]
    fn fingerprints_parse_or_refuse(text in "(sha256:)?[0-9a-fA-F]{0,70}|.{0,80}") {
        if let Some(normal) = parse_fingerprint(&text) {
            prop_assert!(normal.starts_with("sha256:") && normal.len() == 71);
            prop_assert_eq!(parse_fingerprint(&normal), Some(normal.clone()));
        }
    }

    #[test]
    fn tokens_parse_or_refuse(text in "(hvn_)?[0-9a-f]{0,20}_?[A-Za-z0-9_-]{0,50}|.{0,100}") {
        let _ = parse_token(&text);
    }

    #[test]
    fn roles_parse_or_refuse(text in ".{0,20}") {
        let _ = text.parse::<haven_core::auth::Role>();
    }

    #[test]
    fn keys_validate_or_refuse(text in ".{0,1100}") {
        let _ = validate_key(&text);
    }
}
