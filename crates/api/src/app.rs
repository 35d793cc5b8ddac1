//! `Application::build(config, state)` then `run()`: the real server, which
//! the `tollgate` binary starts on its database and tests on port 0 with a
//! fresh one.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::{Server, ServerHandle};
use actix_web::http::KeepAlive;
use actix_web::middleware::{Condition, ErrorHandlers, Logger};
use actix_web::{web, App, HttpMessage, HttpServer};
use tollgate_domain::api_key::{ApiKeyName, ApiKeySecret};
use tollgate_domain::user::{NewUser, Role, User, UserError, UserStatus, Username};
use tollgate_domain::ValidationError;

use crate::auth::CallerId;
use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{json_error_fallback, path_error, query_error, MAX_BODY_BYTES};
use crate::routes;
use crate::state::AppState;

/// Why the server could not start; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TOLLGATE_ADMIN_KEY {}", .0.message)]
    AdminKey(ValidationError),
    #[error("cannot install TOLLGATE_ADMIN_KEY: {0}")]
    Bootstrap(String),
    #[error("TOLLGATE_BIND {addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Finds or creates the admin user `username`.
pub fn ensure_admin(state: &AppState, username: &str) -> Result<User, ApiError> {
    let username = Username::parse(username)?;
    if let Some(user) = state.users.find_by_username(&username)? {
        return Ok(user);
    }
    let new = NewUser {
        username: username.clone(),
        role: Role::Admin,
        status: UserStatus::Active,
    };
    match state.users.create(new) {
        Ok(user) => Ok(user),
        // Another instance created it meanwhile.
        Err(UserError::UsernameTaken) => state
            .users
            .find_by_username(&username)?
            .ok_or_else(|| ApiError::internal("admin user vanished")),
        Err(e) => Err(e.into()),
    }
}

/// Makes `TOLLGATE_ADMIN_KEY` a key of the user `admin`.
fn bootstrap_admin(state: &AppState, secret: &ApiKeySecret) -> Result<(), StartError> {
    let fail = |e: ApiError| StartError::Bootstrap(e.message().to_owned());
    let admin = ensure_admin(state, "admin").map_err(fail)?;
    let name = ApiKeyName::parse("TOLLGATE_ADMIN_KEY").map_err(|e| fail(e.into()))?;
    state
        .keys
        .install(admin.id, name, secret)
        .map_err(|e| fail(e.into()))
}

/// Where actix-web's `Logger` writes its lines.
const REQUEST_LOG_TARGET: &str = "actix_web::middleware::logger";

/// One line per request: client, method, path (never the query string),
/// route template, status, bytes, latency and the caller's user id. Keys
/// travel in headers, which are never logged. The method is a standard one
/// or `other`, as in the metrics: a client chooses it freely.
fn request_logger() -> Logger {
    Logger::new("%a %{method}xi %U route=%{route}xo status=%s bytes=%b %Dms user=%{user}xo")
        .log_target(REQUEST_LOG_TARGET)
        .custom_request_replace("method", |req| {
            crate::metrics::method_label(req.method()).to_owned()
        })
        .custom_response_replace("route", |res| {
            res.request().match_pattern().unwrap_or_else(|| "-".into())
        })
        .custom_response_replace("user", |res| {
            res.request()
                .extensions()
                .get::<CallerId>()
                .map(|c| c.0.to_string())
                .unwrap_or_else(|| "-".into())
        })
}

/// The keep-alive of a timeout; zero turns it off.
fn keep_alive(timeout: std::time::Duration) -> KeepAlive {
    if timeout.is_zero() {
        KeepAlive::Disabled
    } else {
        KeepAlive::Timeout(timeout)
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    state: AppState,
}

impl Application {
    /// Installs the bootstrap admin key of `config` (if any) through
    /// `state`, binds, and builds the server on `state`'s services.
    pub fn build(config: Config, state: AppState) -> Result<Self, StartError> {
        let admin_key = config.admin_secret()?;
        if let Some(secret) = &admin_key {
            bootstrap_admin(&state, secret)?;
        }
        let listener = TcpListener::bind(config.bind).map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let data = web::Data::new(state.clone());
        let log_requests = log::log_enabled!(target: REQUEST_LOG_TARGET, log::Level::Info);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .app_data(web::PathConfig::default().error_handler(path_error))
                .app_data(web::QueryConfig::default().error_handler(query_error))
                .wrap(ErrorHandlers::new().default_handler(json_error_fallback))
                .wrap(actix_web::middleware::from_fn(crate::metrics::record))
                // Skipped whole when its lines would be dropped: rendering
                // them cost ~8 % of a worker's time per access check.
                .wrap(Condition::new(log_requests, request_logger()))
                .configure(routes::configure)
                .default_service(web::to(|| async {
                    Err::<actix_web::HttpResponse, _>(ApiError::new(
                        ErrorCode::NotFound,
                        "no such route",
                    ))
                }))
        })
        .shutdown_timeout(30)
        // Set here, not left to actix-web's defaults, so what bounds a slow
        // or idle client is a setting (docs/operations.md).
        .client_request_timeout(config.timeouts.client_request)
        .client_disconnect_timeout(config.timeouts.client_disconnect)
        .keep_alive(keep_alive(config.timeouts.keep_alive));
        if let Some(workers) = config.workers {
            server = server.workers(workers);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?
            .run();
        Ok(Self {
            server,
            addr,
            state,
        })
    }

    /// The address actually bound (the port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped (SIGTERM, Ctrl-C or the handle).
    pub async fn run(self) -> std::io::Result<()> {
        self.server.await
    }
}
