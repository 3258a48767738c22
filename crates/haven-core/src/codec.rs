//! The one binary encoding of everything Haven writes down or sends to a peer.
//!
//! ```text
//!   Request, log entries, vote, identity ──▶ raft.redb        ─┐
//!   the replicated state (KvState)       ──▶ snapshot.bin,     ├── encode / decode here,
//!                                            InstallSnapshot   │   and nowhere else
//!   peer messages                        ──▶ frames           ─┘
//! ```
//!
//! The format is postcard: compact and positional, and NOT self-describing. A decoder is
//! told the type and reads its fields in order; nothing in the bytes says what they are.
//! Two kinds of serde types therefore cannot be stored, and must never be part of a
//! replicated value or a peer message:
//!
//! - types whose `Serialize` and `Deserialize` disagree on the shape: issue 10's detection
//!   profile was written as an enum variant (an index) and read back as a string, so every
//!   snapshot holding one was unreadable;
//! - types whose `Deserialize` asks the format what comes next (`deserialize_any`):
//!   `#[serde(untagged)]` and internally tagged enums, `#[serde(flatten)]`,
//!   `serde_json::Value`, and fields skipped when serializing (`skip_serializing_if`).
//!
//! The property tests round-trip every replicated type through these functions
//! (`haven-store/tests/encoding.rs`: snapshots and every log entry kind;
//! `haven-net`'s frame tests: peer messages), so a type that breaks a rule fails there, not
//! on an operator's disk. A stored layout only grows at its end (a field appended to a
//! versioned layout, a variant appended to an enum): what is on disk must stay readable.
//!
//! Errors say what failed and where: a decode failure is re-run with the position tracked,
//! so the message names the problem ("an enum variant is out of range") and the field by
//! its position (`[2][10][0]`: field 2 of the value, field 10 of that, ...; the format
//! stores no field names), not just postcard's "Serde Deserialization Error".

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a value could not be encoded (a map or sequence whose length is not known up front,
/// or a value that refuses to serialize). Not expected for any Haven type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the value: {0}")]
pub struct EncodeError(String);

/// Why bytes could not be decoded: what went wrong, and at which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}{}", at_path(path))]
pub struct DecodeError {
    /// Where decoding stopped, as field positions (`[2][10][0]`), when known; empty at
    /// the top level.
    pub path: String,
    pub problem: String,
}

fn at_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" (at field position {path})")
    }
}

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_stdvec(value).map_err(|error| EncodeError(describe(&error)))
}

/// Encodes `value` after `prefix` (a frame's length prefix, a format marker), into one
/// buffer.
pub fn encode_after<T: Serialize + ?Sized>(prefix: Vec<u8>, value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_extend(value, prefix).map_err(|error| EncodeError(describe(&error)))
}

/// Decodes a whole `T` from `bytes`. Bytes left over after the value are an error: they
/// mean the bytes were written with another layout, and a value read from them could be
/// wrong without anything else noticing.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(DecodeError {
            path: String::new(),
            problem: format!(
                "{} byte(s) are left over after the value: the bytes were written with another layout",
                rest.len()
            ),
        }),
        Err(_) => Err(diagnose::<T>(bytes)),
    }
}

/// Decodes `bytes` again with the position tracked, to say where the first attempt
/// failed. Only on the error path: tracking the path costs time on every field.
fn diagnose<T: DeserializeOwned>(bytes: &[u8]) -> DecodeError {
    let mut deserializer = postcard::Deserializer::from_bytes(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(_) => DecodeError { path: String::new(), problem: "the value does not decode".into() },
        Err(error) => DecodeError { path: error.path().to_string(), problem: describe(error.inner()) },
    }
}

/// The SHA-256 of `value`'s encoding, computed without building the encoding. Deterministic
/// for Haven's types (no hash-ordered collections in commands), so every replica computes
/// the same digest of the same value.
pub fn sha256<T: Serialize + ?Sized>(value: &T) -> Result<[u8; 32], EncodeError> {
    let digest =
        postcard::serialize_with_flavor(value, Sha256Flavor(ring::digest::Context::new(&ring::digest::SHA256)))
            .map_err(|error| EncodeError(describe(&error)))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok(out)
}

/// A postcard output that feeds a SHA-256 context instead of a buffer.
struct Sha256Flavor(ring::digest::Context);

impl postcard::ser_flavors::Flavor for Sha256Flavor {
    type Output = ring::digest::Digest;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update(&[data]);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<ring::digest::Digest> {
        Ok(self.0.finish())
    }
}

/// postcard's errors in words an operator can act on (its own texts are terse, and its
/// "Serde Deserialization Error" says nothing).
fn describe(error: &postcard::Error) -> String {
    use postcard::Error::*;
    match error {
        DeserializeUnexpectedEnd => "the data ends early (cut short or written with another layout)".into(),
        DeserializeBadVarint => "a number is malformed".into(),
        DeserializeBadBool => "a flag is neither 0 nor 1".into(),
        DeserializeBadChar => "a character is invalid".into(),
        DeserializeBadUtf8 => "a text is not UTF-8".into(),
        DeserializeBadOption => "an optional value's marker is neither 0 nor 1".into(),
        DeserializeBadEnum => "an enum variant is out of range".into(),
        DeserializeBadEncoding => "the data is not well encoded".into(),
        SerdeDeCustom => {
            "a value was refused by its type (an unknown enum variant or a value out of its rules; written by \
             another layout?)"
                .into()
        }
        WontImplement => {
            "the type asks the decoder what comes next (untagged enum, flatten, JSON value), which this binary \
             format cannot answer"
                .into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Inner {
        flag: bool,
        name: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Outer {
        id: u64,
        inner: Inner,
        by_key: BTreeMap<String, u32>,
    }

    fn sample() -> Outer {
        Outer {
            id: 7,
            inner: Inner { flag: true, name: "x".into() },
            by_key: BTreeMap::from([("a".into(), 1), ("b".into(), 2)]),
        }
    }

    #[test]
    fn round_trip_and_prefix() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode::<Outer>(&bytes).unwrap(), sample());
        let framed = encode_after(vec![9, 9], &sample()).unwrap();
        assert_eq!(&framed[..2], &[9, 9]);
        assert_eq!(&framed[2..], &bytes[..]);
    }

    /// A failure names the field where decoding stopped and what was wrong with it.
    #[test]
    fn errors_name_the_field_and_the_problem() {
        let mut bytes = encode(&sample()).unwrap();
        // `inner.flag` (field 0 of field 1) is the second byte, after the one-byte varint 7.
        bytes[1] = 2;
        let error = decode::<Outer>(&bytes).unwrap_err();
        assert_eq!(error.path, "[1][0]");
        assert_eq!(error.to_string(), "a flag is neither 0 nor 1 (at field position [1][0])");

        let good = encode(&sample()).unwrap();
        let error = decode::<Outer>(&good[..good.len() - 1]).unwrap_err();
        assert!(error.problem.contains("ends early"), "{error}");
        assert!(error.path.starts_with("[2]"), "{error}");

        let mut long = good.clone();
        long.push(0);
        let error = decode::<Outer>(&long).unwrap_err();
        assert!(error.problem.contains("1 byte(s) are left over"), "{error}");
    }

    /// The types the module docs forbid fail here, which is why they must stay out of
    /// replicated values: an untagged enum and a JSON value need `deserialize_any`.
    #[test]
    fn self_describing_types_do_not_round_trip() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Untagged {
            Number(u64),
            Text(String),
        }
        let bytes = encode(&Untagged::Text("a".into())).unwrap();
        assert!(decode::<Untagged>(&bytes).is_err());
        let bytes = encode(&serde_json::json!({"a": 1})).unwrap();
        let error = decode::<serde_json::Value>(&bytes).unwrap_err();
        assert!(error.problem.contains("asks the decoder what comes next"), "{error}");
    }

    #[test]
    fn sha256_is_that_of_the_encoding() {
        let bytes = encode(&sample()).unwrap();
        let expected = ring::digest::digest(&ring::digest::SHA256, &bytes);
        assert_eq!(sha256(&sample()).unwrap().as_slice(), expected.as_ref());
        let mut other = sample();
        other.inner.name = "y".into();
        assert_ne!(sha256(&other).unwrap(), sha256(&sample()).unwrap());
    }
}
