//! Idempotency keys: a client's name for one request, so that its retries
//! are answered as the original was and consume nothing.

use chrono::{DateTime, Utc};

use crate::access::Quota;
use crate::reservation::ReservationId;

/// How long a granted request's key is kept, at least: repeats within it
/// are answered from the record.
pub const KEPT_HOURS: i64 = 24;

/// A granted request as its key recorded it: what it asked and what it was
/// answered, so that a repeat gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// When the original was decided.
    pub at: DateTime<Utc>,
    /// The permission it asked for.
    pub permission: String,
    /// Its cost.
    pub cost: i64,
    /// A reservation's hold, in seconds (`None`: a check).
    pub ttl: Option<i64>,
    /// The reservation it made, if it was one.
    pub reservation: Option<ReservationId>,
    /// Every quota that applied, after it.
    pub quotas: Vec<Quota>,
}

impl Recorded {
    /// Whether a repeat asks the same as the original: the same permission,
    /// cost and (for a reservation) ttl; anything else is a client's bug
    /// (422). A check's key repeated on a reservation asks something else.
    pub fn same_request(&self, permission: &str, cost: i64, ttl: Option<i64>) -> bool {
        self.permission == permission && self.cost == cost && self.ttl == ttl
    }
}

/// The value of an `Idempotency-Key` header: 1..=255 visible ASCII
/// characters (`!` to `~`; no space, no control character). A key belongs
/// to the check's user: the same key of two users is two keys. A header,
/// not a field of the body: the API answers a bad one 400, not 422.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a header is no idempotency key. A header, not a field of the body:
/// the API answers it 400, not 422 as it does a [`crate::ValidationError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    /// Empty, or over 255 characters.
    #[error("Idempotency-Key must be 1 to 255 characters")]
    Length,
    /// A space, a control character or anything beyond visible ASCII.
    #[error("Idempotency-Key may contain only visible ASCII characters (no spaces)")]
    Charset,
}

impl IdempotencyKey {
    /// The most characters a key may have.
    pub const MAX_CHARS: usize = 255;

    /// Parses a header's raw bytes.
    pub fn parse(raw: &[u8]) -> Result<Self, IdempotencyKeyError> {
        if raw.is_empty() || raw.len() > Self::MAX_CHARS {
            return Err(IdempotencyKeyError::Length);
        }
        if !raw.iter().all(|b| (b'!'..=b'~').contains(b)) {
            return Err(IdempotencyKeyError::Charset);
        }
        // Every byte is ASCII, so the bytes are UTF-8.
        Ok(Self(raw.iter().map(|&b| char::from(b)).collect()))
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_to_255_visible_characters() {
        assert_eq!(IdempotencyKey::parse(b"a").unwrap().as_str(), "a");
        let longest = "~".repeat(255);
        assert_eq!(
            IdempotencyKey::parse(longest.as_bytes()).unwrap().as_str(),
            longest
        );
        assert!(IdempotencyKey::parse(b"order-42:retry/1?x=\"y\"").is_ok());
    }

    #[test]
    fn refuses_empty_long_spaced_control_and_non_ascii_keys() {
        let long = "x".repeat(256);
        for raw in [&b""[..], long.as_bytes()] {
            assert_eq!(IdempotencyKey::parse(raw), Err(IdempotencyKeyError::Length));
        }
        for raw in [
            &b"two words"[..],
            b"tab\there",
            b"nul\0",
            b"del\x7f",
            "caf\u{e9}".as_bytes(),
        ] {
            assert_eq!(
                IdempotencyKey::parse(raw),
                Err(IdempotencyKeyError::Charset),
                "{raw:?}"
            );
        }
    }
}
