//! Permissions: named capabilities a plan grants (`reports:read`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::text::text_type;
use crate::{Page, PageRequest, PermissionId, StoreError, ValidationError};

text_type!(
    /// 1..=64 characters of `A-Z a-z 0-9 _ . : -`.
    PermissionName, field = "name", min = 1, max = 64, charset = "_.:-"
);
text_type!(
    /// 0..=255 characters.
    PermissionDescription, field = "description", min = 0, max = 255
);

/// A permission a plan may grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// The permission's id.
    pub id: PermissionId,
    /// The unique name checks ask for (`reports:read`).
    pub name: PermissionName,
    /// What the permission allows, for people.
    pub description: PermissionDescription,
    /// When the permission was created.
    pub created_at: DateTime<Utc>,
    /// When the permission last changed.
    pub updated_at: DateTime<Utc>,
}

/// A permission to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPermission {
    /// Its unique name.
    pub name: PermissionName,
    /// What it allows.
    pub description: PermissionDescription,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionPatch {
    /// A new name, if given.
    pub name: Option<PermissionName>,
    /// A new description, if given.
    pub description: Option<PermissionDescription>,
}

/// Why a permission operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    /// There is no such permission (HTTP 404).
    #[error("permission not found")]
    NotFound,
    /// Another permission has this name (HTTP 409).
    #[error("a permission with this name already exists")]
    NameTaken,
    /// A plan grants the permission, so it cannot be deleted (HTTP 409).
    #[error("the permission is granted by a plan")]
    InUse,
    /// The input breaks a rule (HTTP 422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where permissions are kept.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
pub trait PermissionRepository: Send + Sync {
    /// Returns Err(NameTaken) if a permission with this name exists.
    fn create(
        &self,
        new: &NewPermission,
        now: DateTime<Utc>,
    ) -> Result<Permission, PermissionError>;
    /// Returns Err(NotFound) if there is no such permission.
    fn get(&self, id: PermissionId) -> Result<Permission, PermissionError>;
    /// One page of the permissions in id order.
    fn list(&self, page: PageRequest) -> Result<Page<Permission>, StoreError>;
    /// Returns Err(NotFound) or Err(NameTaken).
    fn update(
        &self,
        id: PermissionId,
        patch: &PermissionPatch,
        now: DateTime<Utc>,
    ) -> Result<Permission, PermissionError>;
    /// Returns Err(NotFound), or Err(InUse) if a plan grants it (checked
    /// atomically with the delete).
    fn delete(&self, id: PermissionId) -> Result<(), PermissionError>;
    /// Whether any plan grants the permission.
    fn is_granted(&self, id: PermissionId) -> Result<bool, StoreError>;
    /// The names among `names` that are not permissions, in the given order.
    fn missing(&self, names: &[PermissionName]) -> Result<Vec<PermissionName>, StoreError>;
}

/// The permission use cases.
#[derive(Clone)]
pub struct PermissionService {
    repo: Arc<dyn PermissionRepository>,
    clock: Arc<dyn Clock>,
}

impl PermissionService {
    /// The use cases on `repo`, with `clock` for creation and change times.
    pub fn new(repo: Arc<dyn PermissionRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { repo, clock }
    }

    /// Creates a permission; Err(NameTaken) if the name exists.
    pub fn create(&self, new: NewPermission) -> Result<Permission, PermissionError> {
        self.repo.create(&new, self.clock.now())
    }

    /// The permission `id`; Err(NotFound) if there is none.
    pub fn get(&self, id: PermissionId) -> Result<Permission, PermissionError> {
        self.repo.get(id)
    }

    /// One page of the permissions in id order.
    pub fn list(&self, page: PageRequest) -> Result<Page<Permission>, PermissionError> {
        Ok(self.repo.list(page)?)
    }

    /// Applies `patch` to the permission `id`; Err(NotFound) or Err(NameTaken).
    pub fn update(
        &self,
        id: PermissionId,
        patch: PermissionPatch,
    ) -> Result<Permission, PermissionError> {
        self.repo.update(id, &patch, self.clock.now())
    }

    /// A permission that a plan grants cannot be deleted.
    pub fn delete(&self, id: PermissionId) -> Result<(), PermissionError> {
        // An unknown id is not granted; the repository's delete says NotFound.
        if self.repo.is_granted(id)? {
            return Err(PermissionError::InUse);
        }
        self.repo.delete(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    #[test]
    fn names_follow_the_contract_charset() {
        assert!(PermissionName::parse("reports:read").is_ok());
        assert!(PermissionName::parse("a.b_c-D:9").is_ok());
        assert!(PermissionName::parse("").is_err());
        assert!(PermissionName::parse("x".repeat(64)).is_ok());
        assert!(PermissionName::parse("x".repeat(65)).is_err());
        assert!(PermissionName::parse("drop table;").is_err());
        assert!(PermissionName::parse("a'--").is_err());
        assert!(PermissionName::parse("caf\u{e9}").is_err());
    }

    #[test]
    fn descriptions_count_characters_not_bytes() {
        assert!(PermissionDescription::parse("\u{e9}".repeat(255)).is_ok());
        assert!(PermissionDescription::parse("e".repeat(256)).is_err());
    }

    #[test]
    fn permission_granted_by_a_plan_cannot_be_deleted() {
        let mut repo = MockPermissionRepository::new();
        repo.expect_is_granted().returning(|_| Ok(true));
        repo.expect_delete().never();
        let service = PermissionService::new(Arc::new(repo), Arc::new(SystemClock));

        let result = service.delete(PermissionId::from_store(3));

        assert!(matches!(result, Err(PermissionError::InUse)));
    }

    #[test]
    fn unused_permission_is_deleted() {
        let mut repo = MockPermissionRepository::new();
        repo.expect_is_granted().returning(|_| Ok(false));
        repo.expect_delete().times(1).returning(|_| Ok(()));
        let service = PermissionService::new(Arc::new(repo), Arc::new(SystemClock));

        assert!(service.delete(PermissionId::from_store(3)).is_ok());
    }
}
