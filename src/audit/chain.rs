//! The hash chain: every record carries its `seq`, the previous record's hash (`prev_hash`) and
//! its own `hash`: SHA-256 over its canonical form without `hash` (which includes `prev_hash`
//! and `seq`), or HMAC-SHA-256 with a key from the environment when one is configured (then
//! someone who can edit the files cannot recompute the chain; `key_id` names the key, so keys
//! can rotate). The first record ever links to [`GENESIS`].

use aws_lc_rs::{digest, hmac};
use serde_json::{Map, Value};

use super::record::Chained;
#[cfg(test)]
use super::record::canonical;

/// `prev_hash` of the first record of a trail.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An HMAC key and its public id (the first 16 hex digits of the key's SHA-256).
#[derive(Clone)]
pub struct ChainKey {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainKey").field("id", &self.id).finish()
    }
}

impl ChainKey {
    /// A key from its secret bytes.
    pub fn new(secret: &[u8]) -> Self {
        let id = hex(digest::digest(&digest::SHA256, secret).as_ref())[..16].to_owned();
        Self {
            id,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key id written in each record.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Where the chain stands: the next sequence number and the last hash.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The `seq` the next record gets.
    pub next_seq: u64,
    /// The hash of the last record written (or [`GENESIS`]).
    pub prev_hash: String,
    key: Option<ChainKey>,
}

impl Chain {
    /// A chain continuing after `(next_seq, prev_hash)`.
    pub fn new(next_seq: u64, prev_hash: String, key: Option<ChainKey>) -> Self {
        Self {
            next_seq,
            prev_hash,
            key,
        }
    }

    /// Numbers and links one record (an object from `Record::to_object`), advancing the chain.
    pub fn link(&mut self, mut obj: Map<String, Value>) -> Chained {
        let seq = self.next_seq;
        obj.insert("seq".into(), Value::from(seq));
        obj.insert("prev_hash".into(), Value::String(self.prev_hash.clone()));
        obj.insert(
            "key_id".into(),
            self.key
                .as_ref()
                .map_or(Value::Null, |k| Value::String(k.id.clone())),
        );
        obj.remove("hash");
        let value = Value::Object(obj);
        // One serialization: the hash covers the line without `hash`; the line is the same
        // with `"hash":"…",` spliced in before `key_id` (the key that sorts right after it).
        let (mut line, at) = super::record::canonical_marking(&value, "key_id");
        let hash = hash_of(&line, self.key.as_ref());
        if let Some(at) = at {
            line.insert_str(at, &format!("\"hash\":\"{hash}\","));
        }
        self.next_seq = seq + 1;
        self.prev_hash.clone_from(&hash);
        Chained { line, seq, hash }
    }
}

/// The hash of a record's canonical form without `hash`.
pub fn hash_of(canonical_without_hash: &str, key: Option<&ChainKey>) -> String {
    match key {
        Some(k) => hex(hmac::sign(&k.key, canonical_without_hash.as_bytes()).as_ref()),
        None => hex(digest::digest(&digest::SHA256, canonical_without_hash.as_bytes()).as_ref()),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Event, Record};

    #[test]
    fn links_number_and_chain_records() {
        let mut c = Chain::new(0, GENESIS.into(), None);
        let a = c.link(Record::new(Event::Startup, 0).to_object());
        let b = c.link(Record::new(Event::Shutdown, 1).to_object());
        assert_eq!((a.seq, b.seq), (0, 1));
        let pa: Value = serde_json::from_str(&a.line).unwrap();
        let pb: Value = serde_json::from_str(&b.line).unwrap();
        assert_eq!(pa["prev_hash"], GENESIS);
        assert_eq!(pb["prev_hash"], a.hash.as_str());
        assert_eq!(pb["hash"], b.hash.as_str());
        assert!(pb["key_id"].is_null());
        // The hash covers everything but itself.
        let mut without = pb.clone();
        without.as_object_mut().unwrap().remove("hash");
        assert_eq!(hash_of(&canonical(&without), None), b.hash);
        assert_eq!(canonical(&pb), b.line);
    }

    #[test]
    fn hmac_chain_names_its_key_and_differs() {
        let key = ChainKey::new(b"audit-key-0123456789");
        let mut plain = Chain::new(0, GENESIS.into(), None);
        let mut keyed = Chain::new(0, GENESIS.into(), Some(key.clone()));
        let a = plain.link(Record::new(Event::Startup, 0).to_object());
        let b = keyed.link(Record::new(Event::Startup, 0).to_object());
        assert_ne!(a.hash, b.hash);
        let pb: Value = serde_json::from_str(&b.line).unwrap();
        assert_eq!(pb["key_id"], key.id());
        assert_eq!(key.id().len(), 16);
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
    }
}
