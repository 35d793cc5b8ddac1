//! Starts the real application on port 0 with a fresh database, and talks to it.

#![allow(dead_code)]

use actix_web::dev::ServerHandle;
use actix_web::http::{Method, StatusCode};
use serde_json::Value;
use tollgate::{Config, Tollgate};
use tollgate_persistence::testing::TestDatabase;
use tollgate_persistence::{Backend, Database};

pub const ADMIN_KEY: &str = "bootstrap-admin-key-0123456789abcdef";

pub struct TestApp {
    pub base: String,
    pub client: awc::Client,
    handle: ServerHandle,
    pub db: TestDatabase,
    /// The running server's own database (its faults, pool and threads),
    /// beside the test's own handle `db.db` on the same data.
    pub server_db: Database,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error shape and code of `docs/api.md` (Errors), and returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.text);
        let message = self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error without message: {}", self.text))
            .to_owned();
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "error body has extra fields: {}",
            self.text
        );
        for leak in [
            "i64", "u32", "struct ", "Dto", "diesel", "SELECT", "sqlite", "/work", ".rs",
        ] {
            assert!(!message.contains(leak), "message leaks `{leak}`: {message}");
        }
        message
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(TestDatabase::new(backend), TestDatabase::pool_options()).await
    }

    /// The application on a given database with given pool settings.
    pub async fn spawn_with(db: TestDatabase, pool: tollgate_persistence::PoolOptions) -> Self {
        Self::spawn_config(db, pool, Default::default()).await
    }

    /// The application with given connection timeouts.
    pub async fn spawn_config(
        db: TestDatabase,
        pool: tollgate_persistence::PoolOptions,
        timeouts: tollgate_api::config::ConnectionTimeouts,
    ) -> Self {
        let config = Config {
            database_url: db.url.clone(),
            pool,
            server: tollgate_api::Config {
                bind: "127.0.0.1:0".parse().expect("address"),
                admin_key: Some(ADMIN_KEY.into()),
                workers: Some(2),
                timeouts,
            },
        };
        let Tollgate { app, db: server_db } = Tollgate::build(config).expect("application starts");
        let base = format!("http://{}", app.local_addr());
        let handle = app.handle();
        actix_web::rt::spawn(app.run());
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .finish();
        Self {
            base,
            client,
            handle,
            db,
            server_db,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }

    /// Sends a request with an optional key and raw body (sent as JSON).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
        content_type: Option<&str>,
    ) -> Resp {
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct.as_bytes()));
        }
        send_to(&self.client, &self.base, method, path, key, body, &headers).await
    }

    /// A JSON request with extra headers (raw bytes, so that a test can send
    /// what a client should not).
    pub async fn with_headers(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        headers: &[(&str, &[u8])],
    ) -> Resp {
        let body = body.map(|b| b.to_string());
        let mut all: Vec<(&str, &[u8])> = headers.to_vec();
        if body.is_some() {
            all.push(("Content-Type", b"application/json"));
        }
        send_to(
            &self.client,
            &self.base,
            method,
            path,
            Some(key),
            body.as_deref(),
            &all,
        )
        .await
    }

    pub async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| b.to_string());
        let ct = body.as_ref().map(|_| "application/json");
        self.raw(method, path, Some(key), body.as_deref(), ct).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::POST, path, key, Some(body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, key, Some(body)).await
    }

    pub async fn put(&self, path: &str, key: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, key, Some(body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.call(Method::DELETE, path, key, None).await
    }

    /// Creates something and returns its body, asserting 201 and Location.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, ADMIN_KEY, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.text);
        let id = r.body["id"].as_i64().expect("id");
        let location = r.header("location").expect("Location header");
        assert!(location.ends_with(&format!("/{id}")) || location.ends_with("/subscription"));
        r.body
    }

    /// A user with a key; returns (user id, key).
    pub async fn user_with_key(&self, username: &str) -> (i64, String) {
        let user = self
            .create("/v1/users", serde_json::json!({"username": username}))
            .await;
        let id = user["id"].as_i64().expect("id");
        let key = self
            .create(&format!("/v1/users/{id}/api-keys"), serde_json::json!({}))
            .await;
        (id, key["key"].as_str().expect("key").to_owned())
    }
}

/// Runs each case on SQLite (`…::sqlite::case`), and on MariaDB with the
/// `mysql` feature (`…::mariadb::case`: `.ci/run`'s second pass selects
/// them by that name).
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::cases::$case(tollgate_persistence::Backend::Sqlite).await;
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mariadb {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::cases::$case(tollgate_persistence::Backend::Mysql).await;
                }
            )*
        }
    };
}

/// Sends a request to the server at `base` (this app's, or another
/// process's) with an optional key, raw body and extra headers.
pub async fn send_to(
    client: &awc::Client,
    base: &str,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
    headers: &[(&str, &[u8])],
) -> Resp {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(key) = key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    for (name, value) in headers {
        let value = actix_web::http::header::HeaderValue::from_bytes(value).expect("header value");
        req = req.append_header((*name, value));
    }
    let mut res = match body {
        Some(b) => req.send_body(b.to_owned()).await,
        None => req.send().await,
    }
    .expect("request sent");
    let bytes = res.body().limit(10 * 1024 * 1024).await.expect("body read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = if text.is_empty() {
        Value::Null
    } else {
        // Not JSON (metrics, HTML): kept as a string; JSON assertions fail on it.
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
    };
    Resp {
        status: res.status(),
        headers: res.headers().clone(),
        body,
        text,
    }
}

/// A customer set up for access checks.
pub struct Customer {
    pub user_id: i64,
    pub key: String,
    pub plan_id: i64,
}

impl TestApp {
    /// Makes sure the permissions exist (ignores 409).
    pub async fn permissions(&self, names: &[&str]) {
        for name in names {
            let r = self
                .post(
                    "/v1/permissions",
                    ADMIN_KEY,
                    serde_json::json!({"name": name}),
                )
                .await;
            assert!(
                r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT,
                "{}",
                r.text
            );
        }
    }

    /// A plan (named `plan`), a user subscribed to it, and their key.
    pub async fn customer(
        &self,
        username: &str,
        plan: &str,
        perms: &[&str],
        limit: Option<i64>,
        period: &str,
    ) -> Customer {
        let plan = serde_json::json!({"name": plan, "permissions": perms,
                                      "usage_limit": limit, "usage_period": period});
        self.customer_of(username, plan).await
    }

    /// The plan of the body `plan` (its permissions created first), a user
    /// subscribed to it, and their key.
    pub async fn customer_of(&self, username: &str, plan: Value) -> Customer {
        let perms: Vec<String> = plan["permissions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let perms: Vec<&str> = perms.iter().map(String::as_str).collect();
        self.permissions(&perms).await;
        let plan = self.create("/v1/plans", plan).await;
        let plan_id = plan["id"].as_i64().expect("id");
        let (user_id, key) = self.user_with_key(username).await;
        let r = self
            .put(
                &format!("/v1/users/{user_id}/subscription"),
                ADMIN_KEY,
                serde_json::json!({"plan_id": plan_id}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        Customer {
            user_id,
            key,
            plan_id,
        }
    }

    pub async fn check(&self, key: &str, permission: &str, cost: Option<i64>) -> Resp {
        let mut body = serde_json::json!({"permission": permission});
        if let Some(cost) = cost {
            body["cost"] = cost.into();
        }
        self.post("/v1/access/check", key, body).await
    }

    /// The user's usage report.
    pub async fn usage(&self, user_id: i64) -> Value {
        let r = self
            .get(&format!("/v1/users/{user_id}/usage"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body
    }

    /// All of the user's usage events.
    pub async fn events(&self, user_id: i64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let r = self
                .get(
                    &format!("/v1/users/{user_id}/usage/events?limit=500&after={after}"),
                    ADMIN_KEY,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            all.extend(r.body["items"].as_array().expect("items").iter().cloned());
            match r.body["next_after"].as_i64() {
                Some(a) => after = a,
                None => return all,
            }
        }
    }
}
