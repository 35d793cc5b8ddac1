//! Users, their roles and statuses, and the rule that an active admin always remains.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::text::text_type;
use crate::{Page, PageRequest, StoreError, UserId, ValidationError};

text_type!(
    /// 1..=64 characters of `A-Z a-z 0-9 _ . -`.
    Username, field = "username", min = 1, max = 64, charset = "_.-"
);

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Manages everything through the admin routes.
    Admin,
    /// Uses its own keys, subscription and checks.
    #[default]
    User,
}

impl Role {
    /// Parses `admin` or `user`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "admin" => Ok(Self::Admin),
            "user" => Ok(Self::User),
            _ => Err(ValidationError::new("role", "must be admin or user")),
        }
    }

    /// The role as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

/// Whether a user's keys work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UserStatus {
    /// Keys authenticate and checks may be allowed.
    #[default]
    Active,
    /// Keys still authenticate, but every check is denied and nothing can be changed.
    Suspended,
}

impl UserStatus {
    /// Parses `active` or `suspended`.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            _ => Err(ValidationError::new(
                "status",
                "must be active or suspended",
            )),
        }
    }

    /// The status as the contract names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// A user: who a key authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// The unique username.
    pub username: Username,
    /// Admin or user.
    pub role: Role,
    /// Active or suspended.
    pub status: UserStatus,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
    /// When the user last changed.
    pub updated_at: DateTime<Utc>,
}

impl User {
    /// Whether the user is an admin and active: who may use the admin routes.
    pub fn is_active_admin(&self) -> bool {
        self.role == Role::Admin && self.status == UserStatus::Active
    }
}

/// A user to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Its unique username.
    pub username: Username,
    /// Its role.
    pub role: Role,
    /// Its status.
    pub status: UserStatus,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    /// A new username, if given.
    pub username: Option<Username>,
    /// A new role, if given.
    pub role: Option<Role>,
    /// A new status, if given.
    pub status: Option<UserStatus>,
}

/// Filters of the user list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Only users of this role, if given.
    pub role: Option<Role>,
    /// Only users of this status, if given.
    pub status: Option<UserStatus>,
}

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// There is no such user (HTTP 404).
    #[error("user not found")]
    NotFound,
    /// Another user has this username (HTTP 409).
    #[error("a user with this username already exists")]
    UsernameTaken,
    /// The change would leave no active admin (HTTP 409).
    #[error("the last active admin cannot be deleted, demoted or suspended")]
    LastAdmin,
    /// The input breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A check run by the repository inside the transaction of a change, with the
/// user as stored and the number of active admins, so that concurrent changes
/// cannot together break the rule it enforces.
pub type UserGuard<'a> = &'a dyn Fn(&User, u64) -> Result<(), UserError>;

/// Where users are kept.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait UserRepository: Send + Sync {
    /// Returns Err(UsernameTaken) if the username exists.
    fn create(&self, new: &NewUser, now: DateTime<Utc>) -> Result<User, UserError>;
    /// Returns Err(NotFound) if there is no such user.
    fn get(&self, id: UserId) -> Result<User, UserError>;
    /// The user with this username, if any.
    fn find_by_username(&self, username: &Username) -> Result<Option<User>, StoreError>;
    /// One page of the users matching `filter`, in id order.
    fn list(&self, filter: UserFilter, page: PageRequest) -> Result<Page<User>, StoreError>;
    /// Applies `patch` after `guard` accepted the stored user and the count of
    /// active admins, both read in the same transaction while concurrent changes
    /// of admins wait. Returns Err(NotFound), Err(UsernameTaken) or the guard's error.
    fn update<'a>(
        &self,
        id: UserId,
        patch: &UserPatch,
        now: DateTime<Utc>,
        guard: UserGuard<'a>,
    ) -> Result<User, UserError>;
    /// Deletes the user with their keys, subscriptions and usage in one
    /// transaction, after `guard` accepted them as in `update`.
    fn delete<'a>(&self, id: UserId, guard: UserGuard<'a>) -> Result<(), UserError>;
}

/// Refuses a change that would leave no active admin: `after` is what the
/// user becomes (`None` when deleted).
pub fn keep_an_active_admin(
    current: &User,
    after: Option<(Role, UserStatus)>,
    active_admins: u64,
) -> Result<(), UserError> {
    let stays_active_admin = after == Some((Role::Admin, UserStatus::Active));
    if current.is_active_admin() && !stays_active_admin && active_admins <= 1 {
        return Err(UserError::LastAdmin);
    }
    Ok(())
}

/// The user use cases.
#[derive(Clone)]
pub struct UserService {
    repo: Arc<dyn UserRepository>,
    clock: Arc<dyn Clock>,
}

impl UserService {
    /// The use cases on `repo`, with `clock` for creation and change times.
    pub fn new(repo: Arc<dyn UserRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock }
    }

    /// Creates a user; Err(UsernameTaken) if the username exists.
    pub fn create(&self, new: NewUser) -> Result<User, UserError> {
        self.repo.create(&new, self.clock.now())
    }

    /// The user `id`; Err(NotFound) if there is none.
    pub fn get(&self, id: UserId) -> Result<User, UserError> {
        self.repo.get(id)
    }

    /// The user with this username, if any.
    pub fn find_by_username(&self, username: &Username) -> Result<Option<User>, UserError> {
        Ok(self.repo.find_by_username(username)?)
    }

    /// One page of the users matching `filter`, in id order.
    pub fn list(&self, filter: UserFilter, page: PageRequest) -> Result<Page<User>, UserError> {
        Ok(self.repo.list(filter, page)?)
    }

    /// The last active admin cannot be demoted or suspended.
    pub fn update(&self, id: UserId, patch: UserPatch) -> Result<User, UserError> {
        let guard = |current: &User, admins: u64| {
            let role = patch.role.unwrap_or(current.role);
            let status = patch.status.unwrap_or(current.status);
            keep_an_active_admin(current, Some((role, status)), admins)
        };
        self.repo.update(id, &patch, self.clock.now(), &guard)
    }

    /// The last active admin cannot be deleted.
    pub fn delete(&self, id: UserId) -> Result<(), UserError> {
        let guard = |current: &User, admins: u64| keep_an_active_admin(current, None, admins);
        self.repo.delete(id, &guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn user(id: i64, role: Role, status: UserStatus) -> User {
        let now = Utc::now();
        User {
            id: UserId::from_store(id),
            username: Username::parse(format!("u{id}")).expect("valid"),
            role,
            status,
            created_at: now,
            updated_at: now,
        }
    }

    /// A repository whose stored user is `stored` and that counts `admins`
    /// active admins; it applies the patch only if the guard lets it.
    fn repo_with(stored: User, admins: u64) -> MockUserRepository {
        let mut repo = MockUserRepository::new();
        let for_update = stored.clone();
        repo.expect_update().returning(move |_, patch, _, guard| {
            guard(&for_update, admins)?;
            let mut next = for_update.clone();
            next.role = patch.role.unwrap_or(next.role);
            next.status = patch.status.unwrap_or(next.status);
            Ok(next)
        });
        repo.expect_delete()
            .returning(move |_, guard| guard(&stored, admins));
        repo
    }

    fn service(repo: MockUserRepository) -> UserService {
        UserService::new(Arc::new(repo), Arc::new(SystemClock))
    }

    #[test]
    fn last_active_admin_cannot_be_demoted() {
        let s = service(repo_with(user(1, Role::Admin, UserStatus::Active), 1));
        let patch = UserPatch {
            role: Some(Role::User),
            ..UserPatch::default()
        };
        assert!(matches!(
            s.update(UserId::from_store(1), patch),
            Err(UserError::LastAdmin)
        ));
    }

    #[test]
    fn last_active_admin_cannot_be_suspended() {
        let s = service(repo_with(user(1, Role::Admin, UserStatus::Active), 1));
        let patch = UserPatch {
            status: Some(UserStatus::Suspended),
            ..UserPatch::default()
        };
        assert!(matches!(
            s.update(UserId::from_store(1), patch),
            Err(UserError::LastAdmin)
        ));
    }

    #[test]
    fn last_active_admin_cannot_be_deleted() {
        let s = service(repo_with(user(1, Role::Admin, UserStatus::Active), 1));
        assert!(matches!(
            s.delete(UserId::from_store(1)),
            Err(UserError::LastAdmin)
        ));
    }

    #[test]
    fn an_admin_can_be_demoted_while_another_remains() {
        let s = service(repo_with(user(1, Role::Admin, UserStatus::Active), 2));
        let patch = UserPatch {
            role: Some(Role::User),
            ..UserPatch::default()
        };
        let updated = s.update(UserId::from_store(1), patch).expect("allowed");
        assert_eq!(updated.role, Role::User);
        assert!(s.delete(UserId::from_store(1)).is_ok());
    }

    #[test]
    fn last_admin_may_be_renamed() {
        let s = service(repo_with(user(1, Role::Admin, UserStatus::Active), 1));
        let patch = UserPatch {
            username: Some(Username::parse("root").expect("valid")),
            ..UserPatch::default()
        };
        assert!(s.update(UserId::from_store(1), patch).is_ok());
    }

    #[test]
    fn plain_user_can_be_deleted_even_with_one_admin() {
        let s = service(repo_with(user(2, Role::User, UserStatus::Active), 1));
        assert!(s.delete(UserId::from_store(2)).is_ok());
    }

    #[test]
    fn usernames_follow_the_contract_charset() {
        assert!(Username::parse("alice_01.b-c").is_ok());
        assert!(Username::parse("alice:b").is_err());
        assert!(Username::parse("").is_err());
        assert!(Username::parse("a".repeat(65)).is_err());
        assert!(Username::parse("robert'); DROP TABLE users;--").is_err());
    }
}
