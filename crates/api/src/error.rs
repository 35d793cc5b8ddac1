//! The one error type of the API and its mapping to HTTP, in a single place.

use std::error::Error as StdError;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use tollgate_domain::access::{AccessError, CheckError};
use tollgate_domain::api_key::{ApiKeyError, AuthError};
use tollgate_domain::permission::PermissionError;
use tollgate_domain::plan::PlanError;
use tollgate_domain::reservation::{SettleError, SettleFailure};
use tollgate_domain::subscription::SubscriptionError;
use tollgate_domain::user::UserError;
use tollgate_domain::{StoreError, ValidationError};

/// The error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    ValidationFailed,
    /// 429 of `/v1/authorize` and the middleware: the plan's quota is used up.
    QuotaExhausted,
    /// 429 of `/v1/authorize` and the middleware: the plan's rate limit.
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValidationFailed => "validation_failed",
            Self::QuotaExhausted => "quota_exhausted",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::QuotaExhausted | Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code for a status the framework produced on its own.
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 => Self::Conflict,
            413 => Self::PayloadTooLarge,
            422 => Self::ValidationFailed,
            429 => Self::QuotaExhausted,
            503 => Self::Unavailable,
            s if s >= 500 => Self::Internal,
            _ => Self::BadRequest,
        }
    }

    /// The message of a framework error with this code.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::BadRequest => "the request is malformed",
            Self::Unauthorized => "missing or invalid API key",
            Self::Forbidden => "this key may not do this",
            Self::NotFound => "no such route",
            Self::MethodNotAllowed => "this route does not allow this method",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "the body is larger than 64 KiB",
            Self::ValidationFailed => "the request breaks a rule",
            Self::QuotaExhausted => "a usage limit for this period is reached",
            Self::RateLimited => "the plan's rate limit is reached; retry later",
            Self::Unavailable => {
                "the database is unavailable or the server is overloaded; try again"
            }
            Self::Internal => "internal error",
        }
    }
}

/// An error answered to a client. The message is safe to show; the cause,
/// if any, only goes to the log.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    cause: Option<Box<dyn StdError + Send + Sync>>,
}

/// The JSON of an error body.
pub fn error_json(code: ErrorCode, message: &str) -> String {
    serde_json::to_string(&ErrorBody {
        error: ErrorDetail {
            code: code.as_str().to_owned(),
            message: message.to_owned(),
        },
    })
    .unwrap_or_else(|_| String::from(r#"{"error":{"code":"internal","message":"internal error"}}"#))
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            cause: None,
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            ErrorCode::Unauthorized.default_message(),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn validation(e: ValidationError) -> Self {
        Self::new(ErrorCode::ValidationFailed, e.to_string())
    }

    /// A bug: the client sees a generic message, the log sees the cause.
    pub fn internal(cause: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: ErrorCode::Internal.default_message().into(),
            cause: Some(cause.into()),
        }
    }

    fn log(&self) {
        let Some(cause) = &self.cause else { return };
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        match self.code {
            ErrorCode::Internal => log::error!("internal error: {chain}"),
            _ => log::warn!("{}: {chain}", self.code.as_str()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let mut response = HttpResponse::build(self.code.status());
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        match self.code {
            ErrorCode::Unauthorized => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            // The database is away or the server overloaded: nothing was
            // done, and a retry after a second may succeed.
            ErrorCode::Unavailable => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            _ => {}
        }
        response.body(error_json(self.code, &self.message))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self {
                code: ErrorCode::Unavailable,
                message: ErrorCode::Unavailable.default_message().into(),
                cause: Some(Box::new(e)),
            },
            e @ StoreError::Unexpected(_) => Self::internal(e),
        }
    }
}

impl From<CheckError> for ApiError {
    fn from(e: CheckError) -> Self {
        match e {
            CheckError::KeyReused => Self::new(
                ErrorCode::ValidationFailed,
                "Idempotency-Key: was used for another request (another permission, cost or ttl)",
            ),
            CheckError::Store(e) => e.into(),
        }
    }
}

impl From<SettleFailure> for ApiError {
    fn from(e: SettleFailure) -> Self {
        match e {
            SettleFailure::NotFound => Self::not_found("reservation"),
            SettleFailure::Refused(SettleError::OverReserved { reserved }) => {
                Self::validation(ValidationError::new(
                    "cost",
                    format!("must be between 0 and the reserved {reserved}"),
                ))
            }
            SettleFailure::Refused(e @ SettleError::Settled(_)) => Self::conflict(e.to_string()),
            SettleFailure::Store(e) => e.into(),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::validation(e)
    }
}

impl From<PermissionError> for ApiError {
    fn from(e: PermissionError) -> Self {
        match e {
            PermissionError::NotFound => Self::not_found("permission"),
            PermissionError::NameTaken => {
                Self::conflict("a permission with this name already exists")
            }
            PermissionError::InUse => Self::conflict("the permission is granted by a plan"),
            PermissionError::Invalid(v) => Self::validation(v),
            PermissionError::Store(s) => s.into(),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::NotFound => Self::not_found("plan"),
            PlanError::NameTaken => Self::conflict("a plan with this name already exists"),
            PlanError::InUse => Self::conflict("the plan has active subscriptions"),
            PlanError::UnknownPermission(name) => Self::new(
                ErrorCode::ValidationFailed,
                format!("permissions names an unknown permission: {name}"),
            ),
            PlanError::Invalid(v) => Self::validation(v),
            PlanError::Store(s) => s.into(),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::NotFound => Self::not_found("user"),
            UserError::UsernameTaken => Self::conflict("a user with this username already exists"),
            UserError::LastAdmin => {
                Self::conflict("the last active admin cannot be deleted, demoted or suspended")
            }
            UserError::Invalid(v) => Self::validation(v),
            UserError::Store(s) => s.into(),
        }
    }
}

impl From<ApiKeyError> for ApiError {
    fn from(e: ApiKeyError) -> Self {
        match e {
            ApiKeyError::NotFound => Self::not_found("API key"),
            ApiKeyError::UserNotFound => Self::not_found("user"),
            e @ ApiKeyError::TooManyKeys => Self::conflict(format!(
                "{e}; revoke one (DELETE .../api-keys/{{key_id}}) before making another"
            )),
            ApiKeyError::Invalid(v) => Self::validation(v),
            ApiKeyError::Store(s) => s.into(),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::UserNotFound => Self::not_found("user"),
            SubscriptionError::UnknownPlan => {
                Self::new(ErrorCode::ValidationFailed, "plan_id names no plan")
            }
            SubscriptionError::NoActiveSubscription => Self::not_found("active subscription"),
            SubscriptionError::AlreadyActive => {
                Self::conflict("the user already has an active subscription")
            }
            SubscriptionError::Invalid(v) => Self::validation(v),
            SubscriptionError::Store(s) => s.into(),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NoActiveSubscription => Self::not_found("active subscription"),
            AccessError::Store(s) => s.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized => Self::unauthorized(),
            AuthError::Store(s) => s.into(),
        }
    }
}

/// The one error shape of every route.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// bad_request, unauthorized, forbidden, not_found, method_not_allowed,
    /// conflict, payload_too_large, validation_failed, quota_exhausted,
    /// unavailable or internal
    #[schema(example = "validation_failed")]
    pub code: String,
    #[schema(example = "usage_limit must be >= 0")]
    pub message: String,
}
