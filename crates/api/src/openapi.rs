//! `GET /openapi.json` (OpenAPI 3.1, generated from the handlers' annotations)
//! and `GET /docs` (Swagger UI, served from the binary: no internet needed).

use actix_web::{web, HttpResponse};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::routes::{
    access, api_keys, health, me, permissions, plans, reservations, subscriptions, usage, users,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate",
        description = "Subscription plans, permissions, users, API keys and metered access checks. \
                       Errors always have the shape {\"error\": {\"code\", \"message\"}}.",
    ),
    paths(
        health::healthz, health::readyz, crate::metrics::metrics,
        permissions::create, permissions::list, permissions::get, permissions::update, permissions::delete,
        plans::create, plans::list, plans::get, plans::update, plans::delete,
        users::create, users::list, users::get, users::update, users::delete,
        api_keys::create, api_keys::list, api_keys::get, api_keys::revoke,
        subscriptions::get, subscriptions::put, subscriptions::cancel, subscriptions::list,
        me::me, me::list_keys, me::create_key, me::get_key, me::revoke_key, me::subscription,
        usage::user_usage, usage::user_events, usage::my_usage, usage::my_events,
        usage::user_history, usage::my_history, usage::all_history,
        access::check, access::authorize, access::authorize_forwarded,
        reservations::create, reservations::get, reservations::commit, reservations::release,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&Conventions),
)]
pub struct ApiDoc;

/// What holds for every operation: the bearer scheme, and the error
/// answers any request may get.
struct Conventions;

const ERRORS: &[(&str, &str)] = &[
    (
        "400",
        "bad_request: not JSON, wrong types, unknown fields, bad query string",
    ),
    (
        "401",
        "unauthorized: key missing, malformed, unknown, revoked or expired",
    ),
    ("403", "forbidden: this key's role may not do this"),
    ("404", "not_found: no such resource or route"),
    ("405", "method_not_allowed"),
    ("409", "conflict: name taken, or still in use"),
    ("413", "payload_too_large: body over 64 KiB"),
    ("422", "validation_failed: a value breaks a rule"),
    ("500", "internal"),
    (
        "503",
        "unavailable: the database cannot be reached or the server is overloaded \
         (Retry-After: 1); nothing was done",
    ),
];

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tg_...")
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let needs_key = path.starts_with("/v1");
            let operations: [&mut Option<Operation>; 7] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
                &mut item.head,
                &mut item.options,
            ];
            for op in operations.into_iter().flatten() {
                for (status, description) in ERRORS {
                    if !needs_key && matches!(*status, "401" | "403" | "409" | "413" | "422") {
                        continue;
                    }
                    op.responses
                        .responses
                        .entry((*status).to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(*description)
                                .content(
                                    "application/json",
                                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// The document, built once.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", document()))
        .service(web::resource("/docs").route(web::get().to(|| async {
            HttpResponse::PermanentRedirect()
                .insert_header(("Location", "/docs/"))
                .finish()
        })));
}
