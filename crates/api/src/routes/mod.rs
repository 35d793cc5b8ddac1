//! The HTTP routes, a module per concept, and the helpers their DTOs share.

pub mod access;
pub mod api_keys;
pub mod health;
pub mod me;
pub mod permissions;
pub mod plans;
pub mod reservations;
pub mod subscriptions;
pub mod usage;
pub mod users;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::{Page, PageRequest, ValidationError};

use crate::error::ApiError;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // `/v1` first: the router tries services in order, and the API docs'
    // `/docs/{_:.*}` is a regular expression every request would run.
    cfg.service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(crate::auth::require_key))
            // The access routes first: the router tries resources in order,
            // and every call of a customer's API goes through these.
            .configure(access::configure)
            .configure(reservations::configure)
            .configure(access::configure_forwarded)
            .configure(permissions::configure)
            .configure(plans::configure)
            .configure(users::configure)
            .configure(api_keys::configure)
            .configure(subscriptions::configure)
            .configure(me::configure)
            .configure(usage::configure),
    );
    health::configure(cfg);
    crate::metrics::configure(cfg);
    crate::openapi::configure(cfg);
}

/// RFC 3339 in UTC with a `Z`, to the second.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 timestamp from a client.
pub fn parse_timestamp(field: &'static str, value: &str) -> Result<DateTime<Utc>, ValidationError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ValidationError::new(field, "must be an RFC 3339 timestamp"))
}

/// A required field of a create body: absent or null is 422.
pub fn required<T>(field: &'static str, value: Option<T>) -> Result<T, ValidationError> {
    value.ok_or_else(|| ValidationError::new(field, "is required"))
}

/// A non-nullable field of a PATCH body: absent keeps it, null is 422.
pub fn not_null<T>(
    field: &'static str,
    value: Option<Option<T>>,
) -> Result<Option<T>, ValidationError> {
    match value {
        None => Ok(None),
        Some(None) => Err(ValidationError::new(field, "must not be null")),
        Some(Some(v)) => Ok(Some(v)),
    }
}

/// `limit` and `after` of a list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1..=500, default 50
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Items with an id above this one
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

impl ListQuery {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.after)
    }
}

/// A bad `limit` or `after` is a bad query string (400).
pub fn page_request(limit: Option<i64>, after: Option<i64>) -> Result<PageRequest, ApiError> {
    PageRequest::parse(limit, after)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    pub items: Vec<T>,
    /// The `after` of the next page; null on the last page
    pub next_after: Option<i64>,
}

impl<T> ListResponse<T> {
    pub fn from_page<D>(page: Page<D>, f: impl FnMut(D) -> T) -> Self {
        let page = page.map(f);
        Self {
            items: page.items,
            next_after: page.next_after,
        }
    }
}

/// 201 with the resource and its `Location`.
pub fn created<T: Serialize>(location: String, body: &T) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(body)
}
