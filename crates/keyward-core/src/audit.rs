//! The audit log's hash chain: what an event's hash covers and what a checkpoint's MAC covers.
//!
//! Every stored event carries `prev_hash` (the hash of the event before it; [`GENESIS`] for the
//! first event of the chain) and `hash = SHA-256(domain ‖ prev_hash ‖ canonical content)`. The
//! canonical content is every column of the event *as stored* (the details are the stored JSON
//! text, byte for byte), each field length-prefixed so that no two different events encode
//! alike. A checkpoint pins the chain at one event: its `seq`, its `hash`, whether the events up
//! to it may be deleted (`cut`), when it was made, and a MAC under a key derived from the pepper.
//!
//! No IO: the store computes hashes when it appends, `keyward audit verify` recomputes them.

use aws_lc_rs::digest;

use crate::secret::{ct_eq, Pepper};

/// The `prev_hash` of the first event of a chain.
pub const GENESIS: [u8; 32] = [0; 32];

/// The pepper-derived key's purpose for checkpoint MACs.
const CHECKPOINT_PURPOSE: &str = "audit-checkpoint-v1";

/// An audit event as stored, every column raw (what the hash covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub kind: String,
    pub severity: String,
    pub target: Option<String>,
    pub source_ip: Option<String>,
    /// The stored JSON text, verbatim.
    pub details: String,
    /// `None` for events stored before the chain existed.
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

impl ChainRow {
    /// The hash this row must carry given the hash of the event before it.
    pub fn compute_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"keyward-audit-event-v1\0");
        ctx.update(prev);
        ctx.update(&self.seq.to_be_bytes());
        ctx.update(&self.at.to_be_bytes());
        field(&mut ctx, &self.actor);
        field(&mut ctx, &self.kind);
        field(&mut ctx, &self.severity);
        opt_field(&mut ctx, self.target.as_deref());
        opt_field(&mut ctx, self.source_ip.as_deref());
        field(&mut ctx, &self.details);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

fn field(ctx: &mut digest::Context, s: &str) {
    ctx.update(&(s.len() as u64).to_be_bytes());
    ctx.update(s.as_bytes());
}

fn opt_field(ctx: &mut digest::Context, s: Option<&str>) {
    match s {
        None => ctx.update(&[0]),
        Some(s) => {
            ctx.update(&[1]);
            field(ctx, s);
        }
    }
}

/// A hash read from the store as exactly 32 bytes.
pub fn hash32(bytes: &[u8]) -> Option<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).ok()
}

/// A signed checkpoint of the chain: the event `seq` had hash `hash` when it was made (`at`,
/// Unix seconds). A `cut` checkpoint also allows the events up to `seq` to be deleted (the
/// store's delete trigger checks for one); the others are anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: [u8; 32],
    pub cut: bool,
    pub at: i64,
    pub mac: [u8; 32],
}

impl Checkpoint {
    /// A new checkpoint, its MAC computed with the pepper.
    pub fn sign(pepper: &Pepper, seq: i64, hash: [u8; 32], cut: bool, at: i64) -> Checkpoint {
        let mac = pepper.mac(CHECKPOINT_PURPOSE, &checkpoint_content(seq, &hash, cut, at));
        Checkpoint {
            seq,
            hash,
            cut,
            at,
            mac,
        }
    }

    /// Whether the MAC is the pepper's (constant-time comparison).
    pub fn verify(&self, pepper: &Pepper) -> bool {
        let want = pepper.mac(
            CHECKPOINT_PURPOSE,
            &checkpoint_content(self.seq, &self.hash, self.cut, self.at),
        );
        ct_eq(&want, &self.mac)
    }
}

fn checkpoint_content(seq: i64, hash: &[u8; 32], cut: bool, at: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(80);
    v.extend_from_slice(b"keyward-audit-checkpoint-v1\0");
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(hash);
    v.push(u8::from(cut));
    v.extend_from_slice(&at.to_be_bytes());
    v
}

/// Lower-case hex of a hash (for reports).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row() -> ChainRow {
        ChainRow {
            seq: 7,
            at: 1_800_000_000,
            actor: "admin".into(),
            kind: "key.created".into(),
            severity: "info".into(),
            target: Some("key_1".into()),
            source_ip: None,
            details: r#"{"a":1}"#.into(),
            prev_hash: None,
            hash: None,
        }
    }

    #[test]
    fn every_field_and_the_previous_hash_change_the_hash() {
        let base = row().compute_hash(&GENESIS);
        assert_eq!(base, row().compute_hash(&GENESIS), "deterministic");
        assert_ne!(base, row().compute_hash(&[1; 32]));
        let edits: [fn(&mut ChainRow); 8] = [
            |r| r.seq = 8,
            |r| r.at += 1,
            |r| r.actor = "admin2".into(),
            |r| r.kind = "key.revoked".into(),
            |r| r.severity = "high".into(),
            |r| r.target = None,
            |r| r.source_ip = Some(String::new()),
            |r| r.details = r#"{"a": 1}"#.into(),
        ];
        for edit in edits {
            let mut r = row();
            edit(&mut r);
            assert_ne!(r.compute_hash(&GENESIS), base, "{r:?}");
        }
    }

    #[test]
    fn fields_are_length_prefixed_so_moving_text_between_them_changes_the_hash() {
        let mut a = row();
        a.actor = "ad".into();
        a.kind = "minkey.created".into();
        let mut b = row();
        b.actor = "admin".into();
        b.kind = "key.created".into();
        assert_ne!(a.compute_hash(&GENESIS), b.compute_hash(&GENESIS));
        // An absent target and an empty one differ.
        let mut c = row();
        c.target = None;
        let mut d = row();
        d.target = Some(String::new());
        assert_ne!(c.compute_hash(&GENESIS), d.compute_hash(&GENESIS));
    }

    #[test]
    fn a_checkpoint_verifies_with_its_pepper_only_and_covers_every_field() {
        let p = Pepper::from_text("pepper-0123456789abcdef0123456789abcdef").unwrap();
        let other = Pepper::from_text("other-pepper-0123456789abcdef0123456789").unwrap();
        let cp = Checkpoint::sign(&p, 10, [3; 32], true, 99);
        assert!(cp.verify(&p));
        assert!(!cp.verify(&other));
        for bad in [
            Checkpoint { seq: 11, ..cp.clone() },
            Checkpoint {
                hash: [4; 32],
                ..cp.clone()
            },
            Checkpoint {
                cut: false,
                ..cp.clone()
            },
            Checkpoint { at: 100, ..cp.clone() },
            Checkpoint {
                mac: [0; 32],
                ..cp.clone()
            },
        ] {
            assert!(!bad.verify(&p), "{bad:?}");
        }
        // The derived key is not the pepper's digest of anything a credential could be.
        assert_ne!(p.mac("audit-checkpoint-v1", b"x"), p.digest(b"x").0);
        assert_ne!(p.mac("a", b"x"), p.mac("b", b"x"));
    }

    #[test]
    fn hashes_read_back_must_be_32_bytes() {
        assert!(hash32(&[0; 32]).is_some());
        assert!(hash32(&[0; 31]).is_none());
        assert!(hash32(&[]).is_none());
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
