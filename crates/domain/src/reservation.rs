//! Reservations: units held before a call whose cost is known only after
//! it, then settled. Held units count as used in every quota of the
//! window of the reservation's creation and are taken from the rate limit
//! at once; a commit keeps `n` of them (a usage event dated at the
//! creation), a release or the expiry returns them to the quotas (never to
//! the rate limit: a reservation is a request).

use chrono::{DateTime, Duration, Utc};

use std::sync::Arc;

use crate::access::Quota;
use crate::clock::Clock;
use crate::period::{UsagePeriod, Window};
use crate::usage::Cost;
use crate::user::{Role, User};
use crate::{Pending, StoreError, UserId, ValidationError};

/// A reservation's id: `rsv_`, 12 hex digits of the milliseconds since the
/// epoch when it was made, and 32 hex digits of 128 random bits. The random
/// bits make it unguessable, so that one id tells nothing of another; the
/// time before them, which its own `created_at` shows anyway, makes ids
/// sort by creation, so that a database's index of them grows at its end
/// instead of at a random page per reservation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationId(String);

impl ReservationId {
    const PREFIX: &'static str = "rsv_";

    /// The id of a reservation made at `at`, with 16 random bytes (the
    /// caller draws them).
    pub fn new(at: DateTime<Utc>, random: [u8; 16]) -> Self {
        // 48 bits of milliseconds last until the year 10889.
        let millis = at.timestamp_millis().clamp(0, (1 << 48) - 1);
        Self(format!(
            "{}{millis:012x}{}",
            Self::PREFIX,
            hex::encode(random)
        ))
    }

    /// An id as a path names it; `None` when it cannot be one (a 404).
    /// Ids of 32 digits alone (random bits without the time) were made by
    /// earlier versions and are still found.
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix(Self::PREFIX)?;
        let hex_ok = (digits.len() == 44 || digits.len() == 32)
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex_ok.then(|| Self(s.to_owned()))
    }

    /// The id as stored and shown.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A reservation to make with a check: its id and how long it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHold {
    /// The new reservation's id.
    pub id: ReservationId,
    /// How long it holds unless settled.
    pub ttl: TtlSeconds,
}

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Its id.
    pub id: ReservationId,
    /// Whose units it holds.
    pub user_id: UserId,
    /// The permission it was made for.
    pub permission: String,
    /// Its units, times and state.
    pub hold: Hold,
}

impl Reservation {
    /// A reservation of `reserved` units just made at `created_at`, held for
    /// `ttl`.
    pub fn held(
        id: ReservationId,
        user_id: UserId,
        permission: String,
        reserved: Cost,
        created_at: DateTime<Utc>,
        ttl: TtlSeconds,
    ) -> Self {
        Self {
            id,
            user_id,
            permission,
            hold: Hold {
                reserved,
                created_at,
                expires_at: ttl.expires_at(created_at),
                status: ReservationStatus::Held,
            },
        }
    }

    /// The status shown: a held reservation past its expiry is released,
    /// whether or not the sweep has written so yet.
    pub fn status_at(&self, now: DateTime<Utc>) -> ReservationStatus {
        if self.hold.expired(now) {
            ReservationStatus::Released
        } else {
            self.hold.status
        }
    }
}

/// A reservation as a settlement left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The reservation after it.
    pub reservation: Reservation,
    /// The quotas of its permission right after it, when the store had the
    /// user's plan at hand; otherwise the caller reads them.
    pub quotas: Option<Vec<Quota>>,
}

/// How a reservation is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Keep this many units.
    Commit(i64),
    /// Return every unit.
    Release,
}

impl Hold {
    /// What `settle` does to this reservation at `now`.
    pub fn settle(&self, settle: Settle, now: DateTime<Utc>) -> Result<Settlement, SettleError> {
        match settle {
            Settle::Commit(n) => self.commit(n, now),
            Settle::Release => self.release(),
        }
    }
}

/// Why a reservation could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum SettleFailure {
    /// No such reservation (or not the caller's): 404.
    #[error("reservation not found")]
    NotFound,
    /// The rules refuse it (422 or 409).
    #[error(transparent)]
    Refused(#[from] SettleError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where reservations are kept and settled. Making one is a consumption
/// (see [`crate::usage::UsageRepository::consume`] with a hold).
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait ReservationRepository: Send + Sync {
    /// The reservation, if it exists. Blocks on the store.
    fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>, StoreError>;

    /// In ONE transaction, the reservation locked: decides `settle` on its
    /// state at `now` ([`Hold::settle`]) and applies it: the units not kept
    /// go back to the counters of the reservation's windows, a usage event
    /// of the kept units dated at its creation is written when there are
    /// any, and its status is set. A commit and the expiry racing: exactly
    /// one applies. Answers the reservation as it is after, once durable.
    /// With `by`, a reservation of another user is `NotFound`. Never
    /// blocks the caller's thread.
    fn settle(
        &self,
        id: &ReservationId,
        by: Option<UserId>,
        settle: Settle,
        now: DateTime<Utc>,
    ) -> Pending<Result<Settled, SettleFailure>>;
}

/// How long a reservation is held unless settled: 1..=3,600 seconds,
/// default 300.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlSeconds(i64);

impl TtlSeconds {
    /// The longest hold.
    pub const MAX: i64 = 3_600;
    /// The hold when the client names none.
    pub const DEFAULT: i64 = 300;

    /// Parses a client's `ttl_seconds`.
    pub fn parse(value: Option<i64>) -> Result<Self, ValidationError> {
        match value {
            None => Ok(Self(Self::DEFAULT)),
            Some(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            Some(_) => Err(ValidationError::new(
                "ttl_seconds",
                "must be between 1 and 3600",
            )),
        }
    }

    /// The seconds.
    pub fn get(self) -> i64 {
        self.0
    }

    /// When a reservation created at `created_at` expires.
    pub fn expires_at(self, created_at: DateTime<Utc>) -> DateTime<Utc> {
        created_at + Duration::seconds(self.0)
    }
}

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Its units are held.
    Held,
    /// Settled: `committed` units kept, the rest returned.
    Committed {
        /// The units kept.
        units: i64,
    },
    /// Released by its user or by the expiry: every unit returned.
    Released,
}

impl ReservationStatus {
    /// The status as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Committed { .. } => "committed",
            Self::Released => "released",
        }
    }
}

/// A reservation's state, as far as its settlement rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// The units held at creation.
    pub reserved: Cost,
    /// When it was created: its units count in the windows of this instant.
    pub created_at: DateTime<Utc>,
    /// When it is released unless settled before.
    pub expires_at: DateTime<Utc>,
    /// Where it is.
    pub status: ReservationStatus,
}

/// What a commit or a release does, decided on the reservation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Settle now: keep `kept` units, return `returned` to the quotas of
    /// the reservation's window.
    Apply {
        /// Units that stay used (0 for a release).
        kept: i64,
        /// Units given back to the quotas.
        returned: i64,
    },
    /// Already settled this way: answer as the first time, change nothing.
    Repeat,
}

/// Why a commit or a release cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// A commit of more than was reserved, or of a negative amount (422).
    #[error("cost must be between 0 and the reserved {reserved}")]
    OverReserved {
        /// The units reserved.
        reserved: i64,
    },
    /// Settled otherwise already: released or expired, or committed with
    /// another amount (409).
    #[error("the reservation is already {0}")]
    Settled(&'static str),
}

impl Hold {
    /// Whether the expiry has released it by `now` (a held reservation at
    /// or past `expires_at` is released, whether or not the background
    /// sweep has written so yet).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.status == ReservationStatus::Held && now >= self.expires_at
    }

    /// The window of `period` its units count in: the one that contains
    /// its creation, whenever it is settled.
    pub fn window(&self, period: UsagePeriod) -> Window {
        period.window_at(self.created_at)
    }

    /// A commit of `n` units at `now`. An `n` outside `0..=reserved` is
    /// refused first, whatever the state: a request that is wrong in
    /// itself is 422 before it can be a conflict.
    pub fn commit(&self, n: i64, now: DateTime<Utc>) -> Result<Settlement, SettleError> {
        let reserved = self.reserved.get();
        if !(0..=reserved).contains(&n) {
            return Err(SettleError::OverReserved { reserved });
        }
        match self.status {
            ReservationStatus::Committed { units } if units == n => Ok(Settlement::Repeat),
            ReservationStatus::Committed { .. } => Err(SettleError::Settled("committed")),
            ReservationStatus::Released => Err(SettleError::Settled("released")),
            ReservationStatus::Held if self.expired(now) => Err(SettleError::Settled("released")),
            ReservationStatus::Held => Ok(Settlement::Apply {
                kept: n,
                returned: reserved - n,
            }),
        }
    }

    /// A release, by its user or by the expiry's sweep (a held reservation
    /// can always be released, expired or not).
    pub fn release(&self) -> Result<Settlement, SettleError> {
        match self.status {
            ReservationStatus::Committed { .. } => Err(SettleError::Settled("committed")),
            ReservationStatus::Released => Ok(Settlement::Repeat),
            ReservationStatus::Held => Ok(Settlement::Apply {
                kept: 0,
                returned: self.reserved.get(),
            }),
        }
    }
}

/// Reading and settling reservations, each only by its user or an admin.
#[derive(Clone)]
pub struct ReservationService {
    repo: Arc<dyn ReservationRepository>,
    clock: Arc<dyn Clock>,
}

impl ReservationService {
    /// The use cases on `repo`, with `clock` for expiries.
    pub fn new(repo: Arc<dyn ReservationRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock }
    }

    /// The reservation, when `viewer` may see it: its user, or an admin;
    /// for anyone else it does not exist. Blocks on the store.
    pub fn get(&self, viewer: &User, id: &ReservationId) -> Result<Reservation, SettleFailure> {
        match self.repo.reservation(id)? {
            Some(r) if r.user_id == viewer.id || viewer.role == Role::Admin => Ok(r),
            _ => Err(SettleFailure::NotFound),
        }
    }

    /// Commits or releases the reservation, when `viewer` may see it (its
    /// user, or an admin), decided on its state in the store. Never blocks
    /// the caller's thread.
    pub fn settle(
        &self,
        viewer: &User,
        id: &ReservationId,
        settle: Settle,
    ) -> Pending<Result<Settled, SettleFailure>> {
        let by = (viewer.role != Role::Admin).then_some(viewer.id);
        self.repo.settle(id, by, settle, self.clock.now())
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn held(reserved: i64, created_at: DateTime<Utc>, ttl: i64) -> Hold {
        let ttl = TtlSeconds::parse(Some(ttl)).unwrap();
        Hold {
            reserved: Cost::parse(Some(reserved)).unwrap(),
            created_at,
            expires_at: ttl.expires_at(created_at),
            status: ReservationStatus::Held,
        }
    }

    #[test]
    fn ids_sort_by_creation_and_parse_back() {
        let earlier = ReservationId::new(at(2026, 12, 31, 23, 59, 59), [0xff; 16]);
        let later = ReservationId::new(at(2027, 1, 1, 0, 0, 0), [0; 16]);
        assert_eq!(
            earlier.as_str(),
            format!("rsv_{:012x}{}", 1_798_761_599_000_i64, "ff".repeat(16))
        );
        assert!(earlier.as_str() < later.as_str());
        assert_eq!(ReservationId::parse(later.as_str()), Some(later));
        // An id of an earlier version: random digits alone.
        let old = format!("rsv_{}", "0a".repeat(16));
        assert_eq!(
            ReservationId::parse(&old).map(|id| id.as_str().to_owned()),
            Some(old)
        );
        for bad in [
            "rsv_",
            "rsv_0A",
            "res_00",
            &format!("rsv_{}", "0".repeat(40)),
        ] {
            assert_eq!(ReservationId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ttl_is_one_to_3600_seconds_default_300() {
        assert_eq!(TtlSeconds::parse(None).unwrap().get(), 300);
        assert_eq!(TtlSeconds::parse(Some(1)).unwrap().get(), 1);
        assert_eq!(TtlSeconds::parse(Some(3600)).unwrap().get(), 3600);
        for bad in [0, -1, 3601, i64::MAX] {
            assert_eq!(
                TtlSeconds::parse(Some(bad)).unwrap_err().field,
                "ttl_seconds"
            );
        }
    }

    #[test]
    fn a_reservation_of_the_last_second_of_a_day_counts_in_that_day() {
        let created = at(2026, 12, 31, 23, 59, 59);
        let hold = held(10, created, 60);
        let after_midnight = at(2027, 1, 1, 0, 0, 30);
        assert_eq!(
            hold.commit(4, after_midnight),
            Ok(Settlement::Apply {
                kept: 4,
                returned: 6
            })
        );
        let day = hold.window(UsagePeriod::Day);
        assert_eq!(day.start, at(2026, 12, 31, 0, 0, 0));
        assert_eq!(day.end, Some(at(2027, 1, 1, 0, 0, 0)));
        assert_eq!(
            hold.window(UsagePeriod::Month).start,
            at(2026, 12, 1, 0, 0, 0)
        );
    }

    #[test]
    fn a_commit_keeps_zero_to_reserved_units() {
        let now = at(2026, 6, 1, 12, 0, 0);
        let hold = held(5, now, 300);
        assert_eq!(
            hold.commit(0, now),
            Ok(Settlement::Apply {
                kept: 0,
                returned: 5
            })
        );
        assert_eq!(
            hold.commit(5, now),
            Ok(Settlement::Apply {
                kept: 5,
                returned: 0
            })
        );
        assert_eq!(
            hold.commit(6, now),
            Err(SettleError::OverReserved { reserved: 5 })
        );
        assert_eq!(
            hold.commit(-1, now),
            Err(SettleError::OverReserved { reserved: 5 })
        );
    }

    #[test]
    fn a_settled_reservation_answers_its_repeat_and_refuses_anything_else() {
        let now = at(2026, 6, 1, 12, 0, 0);
        let committed = Hold {
            status: ReservationStatus::Committed { units: 3 },
            ..held(5, now, 300)
        };
        assert_eq!(committed.commit(3, now), Ok(Settlement::Repeat));
        assert_eq!(
            committed.commit(2, now),
            Err(SettleError::Settled("committed"))
        );
        assert_eq!(committed.release(), Err(SettleError::Settled("committed")));
        let released = Hold {
            status: ReservationStatus::Released,
            ..held(5, now, 300)
        };
        assert_eq!(released.release(), Ok(Settlement::Repeat));
        assert_eq!(
            released.commit(6, now),
            Err(SettleError::OverReserved { reserved: 5 })
        );
        assert_eq!(
            released.commit(1, now),
            Err(SettleError::Settled("released"))
        );
    }

    #[test]
    fn the_expiry_wins_over_a_late_commit() {
        let created = at(2026, 6, 1, 12, 0, 0);
        let hold = held(5, created, 60);
        let last_moment = at(2026, 6, 1, 12, 0, 59);
        assert!(!hold.expired(last_moment));
        assert!(matches!(
            hold.commit(1, last_moment),
            Ok(Settlement::Apply { .. })
        ));
        let expiry = at(2026, 6, 1, 12, 1, 0);
        assert!(hold.expired(expiry));
        assert_eq!(
            hold.commit(1, expiry),
            Err(SettleError::Settled("released"))
        );
        assert_eq!(
            hold.release(),
            Ok(Settlement::Apply {
                kept: 0,
                returned: 5
            })
        );
    }
}
