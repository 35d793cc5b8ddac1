//! API keys: a random secret shown once, stored only as its SHA-256 hash.

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::text::text_type;
use crate::user::{User, UserError, UserRepository};
use crate::{ApiKeyId, Page, PageRequest, Pending, StoreError, UserId, ValidationError};

/// Every key Tollgate mints starts with this.
pub const KEY_PREFIX: &str = "tg_";
/// Characters of a key shown in listings.
pub const SHOWN_PREFIX_CHARS: usize = 8;
/// Longest bearer token looked up at all; longer ones are refused unhashed.
pub const MAX_TOKEN_CHARS: usize = 512;
/// Most live keys (neither revoked nor expired) a user may hold; minting one
/// more is refused. The bootstrap admin key is installed regardless.
pub const MAX_LIVE_KEYS: u64 = 100;

text_type!(
    /// 0..=100 characters, a label for the key's owner.
    ApiKeyName, field = "name", min = 0, max = 100
);

/// A key's secret. Never logged: its `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret(..)")
    }
}

impl ApiKeySecret {
    /// `tg_` followed by the 43 URL-safe base64 characters of 32 random bytes.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self(format!("{KEY_PREFIX}{body}"))
    }

    /// Accepts a configured key (such as the bootstrap admin key) of at least
    /// `min_chars` printable ASCII characters.
    pub fn configured(value: &str, min_chars: usize) -> Result<Self, ValidationError> {
        let len = value.chars().count();
        if len < min_chars || len > MAX_TOKEN_CHARS {
            return Err(ValidationError::new(
                "key",
                format!("must be {min_chars} to {MAX_TOKEN_CHARS} characters"),
            ));
        }
        if !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "key",
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The secret itself, to show once to its owner; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash the store keeps instead of the secret.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The first 8 characters, shown in listings to tell keys apart.
    pub fn shown_prefix(&self) -> String {
        self.0.chars().take(SHOWN_PREFIX_CHARS).collect()
    }
}

/// Hex SHA-256 of a key. Keys carry 256 random bits, so an unsalted fast hash
/// is enough: there is nothing to brute-force.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    /// The SHA-256 of a token, in lowercase hex.
    pub fn of(token: &str) -> Self {
        Self(hex::encode(Sha256::digest(token.as_bytes())))
    }

    /// Wraps a hash read back from the store.
    pub fn from_store(value: String) -> Self {
        Self(value)
    }

    /// The hash in lowercase hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An API key as stored: never its secret, only its hash's owner and dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The user the key authenticates as.
    pub user_id: UserId,
    /// The key's label, chosen by its owner.
    pub name: ApiKeyName,
    /// The first characters of the secret, to tell keys apart in lists.
    pub prefix: String,
    /// When the key was issued.
    pub created_at: DateTime<Utc>,
    /// When the key stops authenticating; `None` is never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key authenticates at `now`: it is live (not revoked, not
    /// expired), and counts toward [`MAX_LIVE_KEYS`].
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// The expiry of a key minted with a caller key that expires at `bound`: it
/// may not outlive that key. None requested means the caller key's expiry.
pub fn expiry_within(
    requested: Option<DateTime<Utc>>,
    bound: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, ValidationError> {
    match (requested, bound) {
        (Some(r), Some(b)) if r > b => Err(ValidationError::new(
            "expires_at",
            format!(
                "must not be later than the expiry of the key making it ({})",
                b.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        )),
        (Some(r), _) => Ok(Some(r)),
        (None, b) => Ok(b),
    }
}

/// What the store keeps of a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The user the key authenticates as.
    pub user_id: UserId,
    /// The key's label.
    pub name: ApiKeyName,
    /// The first characters of the secret, shown in lists.
    pub prefix: String,
    /// The hash of the secret.
    pub hash: KeyHash,
    /// When the key stops authenticating; `None` is never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    /// The user has no such key (HTTP 404).
    #[error("API key not found")]
    NotFound,
    /// The user does not exist (HTTP 404).
    #[error("user not found")]
    UserNotFound,
    /// The user already holds [`MAX_LIVE_KEYS`] live keys.
    #[error("the user already has {MAX_LIVE_KEYS} keys that are neither revoked nor expired")]
    TooManyKeys,
    /// The input breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<UserError> for ApiKeyError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => Self::UserNotFound,
            UserError::Store(s) => Self::Store(s),
            UserError::Invalid(v) => Self::Invalid(v),
            // Looking a user up cannot fail so: a bug if it does.
            e @ (UserError::UsernameTaken | UserError::LastAdmin) => {
                Self::Store(StoreError::Unexpected(Box::new(e)))
            }
        }
    }
}

/// A key with its user, as a lookup by hash finds them (shared: the read
/// cache hands the same one to every check of that key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAndUser {
    /// The key (never its hash).
    pub key: ApiKey,
    /// Its owner, as stored when the key was looked up.
    pub user: User,
}

/// Where keys are kept.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait ApiKeyRepository: Send + Sync {
    /// Inserts `new` unless the user already has `max_live` keys that are
    /// live at `now`, counting and inserting in one write transaction that
    /// holds the user's row, so concurrent creations never exceed it.
    /// Returns Err(UserNotFound) if the user does not exist, Err(TooManyKeys)
    /// at the limit.
    fn create(
        &self,
        new: &NewApiKey,
        now: DateTime<Utc>,
        max_live: u64,
    ) -> Result<ApiKey, ApiKeyError>;
    /// The user's key with this id. Returns Err(NotFound) otherwise.
    fn get(&self, user_id: UserId, id: ApiKeyId) -> Result<ApiKey, ApiKeyError>;
    /// The user's keys, revoked ones included.
    fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<ApiKey>, StoreError>;
    /// Marks the user's key revoked (keeping the first revocation time).
    /// Returns Err(NotFound) if the user has no such key.
    fn revoke(&self, user_id: UserId, id: ApiKeyId, now: DateTime<Utc>) -> Result<(), ApiKeyError>;
    /// The key with this hash and its user. Ready at once when the adapter
    /// holds it in memory; never blocks the caller's thread.
    fn find_by_hash(&self, hash: &KeyHash) -> Pending<Result<Option<Arc<KeyAndUser>>, StoreError>>;
    /// Inserts `new` unless a key with its hash exists, and revokes the user's
    /// other unrevoked keys of the same name, in one transaction. Not bound
    /// by [`MAX_LIVE_KEYS`]: the configured bootstrap key must work at every
    /// start (it replaces, so it adds at most one live key per rotation).
    fn replace_named(&self, new: &NewApiKey, now: DateTime<Utc>) -> Result<(), ApiKeyError>;
}

/// The caller behind a valid key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user the key belongs to.
    pub user: User,
    /// The key that authenticated the call.
    pub key_id: ApiKeyId,
    /// When the caller's key expires, if ever.
    pub key_expires_at: Option<DateTime<Utc>>,
}

/// Why a token authenticates no one.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, unknown, revoked or expired key (HTTP 401).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The store failed: the token may be valid (HTTP 503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key use cases.
#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyRepository>,
    users: Arc<dyn UserRepository>,
    clock: Arc<dyn Clock>,
}

impl ApiKeyService {
    /// The use cases on `keys` and `users`, with `clock` for issue and expiry times.
    pub fn new(
        keys: Arc<dyn ApiKeyRepository>,
        users: Arc<dyn UserRepository>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { keys, users, clock }
    }

    /// Mints a key from 32 random bytes the caller drew. The secret is
    /// returned once and only its hash is stored. An expiry must lie ahead;
    /// a user at [`MAX_LIVE_KEYS`] gets Err(TooManyKeys).
    pub fn issue(
        &self,
        user_id: UserId,
        name: ApiKeyName,
        expires_at: Option<DateTime<Utc>>,
        random: [u8; 32],
    ) -> Result<(ApiKey, ApiKeySecret), ApiKeyError> {
        let now = self.clock.now();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(ValidationError::new("expires_at", "must be in the future").into());
        }
        let secret = ApiKeySecret::from_random(random);
        let new = NewApiKey {
            user_id,
            name,
            prefix: secret.shown_prefix(),
            hash: secret.hash(),
            expires_at,
        };
        let key = self.keys.create(&new, now, MAX_LIVE_KEYS)?;
        Ok((key, secret))
    }

    /// [`Self::issue`] for the caller's own user, through the caller's key:
    /// the new key expires no later than that key (see [`expiry_within`]).
    pub fn issue_own(
        &self,
        caller: &Principal,
        name: ApiKeyName,
        expires_at: Option<DateTime<Utc>>,
        random: [u8; 32],
    ) -> Result<(ApiKey, ApiKeySecret), ApiKeyError> {
        let expires_at = expiry_within(expires_at, caller.key_expires_at)?;
        self.issue(caller.user.id, name, expires_at, random)
    }

    /// The user's keys, revoked ones included, one page in id order.
    pub fn list(&self, user_id: UserId, page: PageRequest) -> Result<Page<ApiKey>, ApiKeyError> {
        self.users.get(user_id)?;
        Ok(self.keys.list(user_id, page)?)
    }

    /// The user's key `id`; Err(NotFound) if the user has no such key.
    pub fn get(&self, user_id: UserId, id: ApiKeyId) -> Result<ApiKey, ApiKeyError> {
        self.users.get(user_id)?;
        self.keys.get(user_id, id)
    }

    /// Revokes the user's key `id` now; Err(NotFound) if the user has no such key.
    pub fn revoke(&self, user_id: UserId, id: ApiKeyId) -> Result<(), ApiKeyError> {
        self.users.get(user_id)?;
        self.keys.revoke(user_id, id, self.clock.now())
    }

    /// The principal of a bearer token, or Unauthorized. Never blocks the
    /// caller's thread, and is ready at once when the store holds the key
    /// in memory.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
            return Err(AuthError::Unauthorized);
        }
        let found = self.keys.find_by_hash(&KeyHash::of(token)).await?;
        let found = found.ok_or(AuthError::Unauthorized)?;
        if !found.key.is_usable_at(self.clock.now()) {
            return Err(AuthError::Unauthorized);
        }
        Ok(Principal {
            user: found.user.clone(),
            key_id: found.key.id,
            key_expires_at: found.key.expires_at,
        })
    }

    /// Makes `secret` a key of `user_id` named `name`, revoking that user's
    /// earlier keys of the same name (a rotated bootstrap key stops working).
    pub fn install(
        &self,
        user_id: UserId,
        name: ApiKeyName,
        secret: &ApiKeySecret,
    ) -> Result<(), ApiKeyError> {
        let new = NewApiKey {
            user_id,
            name,
            prefix: secret.shown_prefix(),
            hash: secret.hash(),
            expires_at: None,
        };
        self.keys.replace_named(&new, self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::pending::poll_ready;
    use crate::user::{MockUserRepository, Role, UserStatus, Username};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid")
            .with_timezone(&Utc)
    }

    fn user() -> User {
        let now = at("2026-01-01T00:00:00Z");
        User {
            id: UserId::from_store(7),
            username: Username::parse("alice").expect("valid"),
            role: Role::User,
            status: UserStatus::Active,
            created_at: now,
            updated_at: now,
        }
    }

    fn key(expires_at: Option<&str>, revoked_at: Option<&str>) -> ApiKey {
        ApiKey {
            id: ApiKeyId::from_store(1),
            user_id: UserId::from_store(7),
            name: ApiKeyName::parse("").expect("valid"),
            prefix: "tg_abcde".into(),
            created_at: at("2026-01-01T00:00:00Z"),
            expires_at: expires_at.map(at),
            revoked_at: revoked_at.map(at),
        }
    }

    fn service_with(found: Option<ApiKey>, now: &str) -> ApiKeyService {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_find_by_hash().returning(move |_| {
            let found = found
                .clone()
                .map(|key| Arc::new(KeyAndUser { key, user: user() }));
            crate::pending::ready(Ok(found))
        });
        ApiKeyService::new(
            Arc::new(keys),
            Arc::new(MockUserRepository::new()),
            Arc::new(FixedClock(at(now))),
        )
    }

    #[test]
    fn minted_keys_have_the_contract_shape() {
        let secret = ApiKeySecret::from_random([7u8; 32]);
        let s = secret.expose();
        assert!(s.starts_with("tg_"));
        assert_eq!(s.len(), 3 + 43);
        assert!(s[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(secret.shown_prefix(), &s[..8]);
        assert_ne!(secret.hash().as_str(), s);
        assert_eq!(secret.hash().as_str().len(), 64);
        assert!(!format!("{secret:?}").contains(&s[3..]));
    }

    #[test]
    fn valid_key_authenticates() {
        let s = service_with(Some(key(None, None)), "2026-06-01T00:00:00Z");
        let p = poll_ready(s.authenticate("tg_whatever")).expect("authenticated");
        assert_eq!(p.user.id, UserId::from_store(7));
    }

    #[test]
    fn unknown_revoked_and_expired_keys_are_refused() {
        let unknown = service_with(None, "2026-06-01T00:00:00Z");
        assert!(matches!(
            poll_ready(unknown.authenticate("tg_x")),
            Err(AuthError::Unauthorized)
        ));
        let revoked = service_with(
            Some(key(None, Some("2026-02-01T00:00:00Z"))),
            "2026-06-01T00:00:00Z",
        );
        assert!(matches!(
            poll_ready(revoked.authenticate("tg_x")),
            Err(AuthError::Unauthorized)
        ));
        let expired = service_with(
            Some(key(Some("2026-06-01T00:00:00Z"), None)),
            "2026-06-01T00:00:00Z",
        );
        assert!(matches!(
            poll_ready(expired.authenticate("tg_x")),
            Err(AuthError::Unauthorized)
        ));
        let not_yet = service_with(
            Some(key(Some("2026-06-01T00:00:01Z"), None)),
            "2026-06-01T00:00:00Z",
        );
        assert!(poll_ready(not_yet.authenticate("tg_x")).is_ok());
    }

    #[test]
    fn empty_or_huge_tokens_are_refused_without_lookup() {
        let s = ApiKeyService::new(
            Arc::new(MockApiKeyRepository::new()),
            Arc::new(MockUserRepository::new()),
            Arc::new(FixedClock(at("2026-06-01T00:00:00Z"))),
        );
        assert!(matches!(
            poll_ready(s.authenticate("")),
            Err(AuthError::Unauthorized)
        ));
        assert!(matches!(
            poll_ready(s.authenticate(&"x".repeat(MAX_TOKEN_CHARS + 1))),
            Err(AuthError::Unauthorized)
        ));
    }

    #[test]
    fn expiry_in_the_past_is_refused() {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_create().never();
        let s = ApiKeyService::new(
            Arc::new(keys),
            Arc::new(MockUserRepository::new()),
            Arc::new(FixedClock(at("2026-06-01T00:00:00Z"))),
        );
        let result = s.issue(
            UserId::from_store(7),
            ApiKeyName::parse("ci").expect("valid"),
            Some(at("2026-05-01T00:00:00Z")),
            [1; 32],
        );
        assert!(matches!(result, Err(ApiKeyError::Invalid(_))));
    }

    fn issuing_service(now: &str) -> ApiKeyService {
        let mut keys = MockApiKeyRepository::new();
        keys.expect_create()
            .withf(|_, _, max_live| *max_live == MAX_LIVE_KEYS)
            .returning(|new, now, _| {
                Ok(ApiKey {
                    id: ApiKeyId::from_store(2),
                    user_id: new.user_id,
                    name: new.name.clone(),
                    prefix: new.prefix.clone(),
                    created_at: now,
                    expires_at: new.expires_at,
                    revoked_at: None,
                })
            });
        ApiKeyService::new(
            Arc::new(keys),
            Arc::new(MockUserRepository::new()),
            Arc::new(FixedClock(at(now))),
        )
    }

    fn caller(key_expires_at: Option<&str>) -> Principal {
        Principal {
            user: user(),
            key_id: ApiKeyId::from_store(1),
            key_expires_at: key_expires_at.map(at),
        }
    }

    #[test]
    fn own_keys_expire_no_later_than_the_caller_key() {
        let s = issuing_service("2026-06-01T00:00:00Z");
        let name = || ApiKeyName::parse("ci").expect("valid");
        let bounded = caller(Some("2026-07-01T00:00:00Z"));

        let (inherited, _) = s
            .issue_own(&bounded, name(), None, [1; 32])
            .expect("issued");
        assert_eq!(inherited.expires_at, Some(at("2026-07-01T00:00:00Z")));
        let (same, _) = s
            .issue_own(&bounded, name(), Some(at("2026-07-01T00:00:00Z")), [2; 32])
            .expect("issued");
        assert_eq!(same.expires_at, Some(at("2026-07-01T00:00:00Z")));
        let (earlier, _) = s
            .issue_own(&bounded, name(), Some(at("2026-06-15T00:00:00Z")), [3; 32])
            .expect("issued");
        assert_eq!(earlier.expires_at, Some(at("2026-06-15T00:00:00Z")));
        let later = s.issue_own(&bounded, name(), Some(at("2026-07-01T00:00:01Z")), [4; 32]);
        assert!(matches!(later, Err(ApiKeyError::Invalid(_))));

        let unbounded = caller(None);
        let (forever, _) = s
            .issue_own(&unbounded, name(), None, [5; 32])
            .expect("issued");
        assert_eq!(forever.expires_at, None);
        let (far, _) = s
            .issue_own(
                &unbounded,
                name(),
                Some(at("2099-01-01T00:00:00Z")),
                [6; 32],
            )
            .expect("issued");
        assert_eq!(far.expires_at, Some(at("2099-01-01T00:00:00Z")));
    }

    #[test]
    fn configured_keys_need_32_printable_characters() {
        assert!(ApiKeySecret::configured(&"a".repeat(31), 32).is_err());
        assert!(ApiKeySecret::configured(&"a".repeat(32), 32).is_ok());
        assert!(ApiKeySecret::configured(&format!("{} b", "a".repeat(32)), 32).is_err());
    }
}
