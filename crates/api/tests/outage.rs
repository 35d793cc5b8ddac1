//! A MariaDB that goes away under the server: requests answer 503
//! `unavailable` within the configured timeout (never 500, never hanging),
//! `/readyz` says 503, and the same process recovers when MariaDB returns.
//! Starts its own throwaway MariaDB (scripts/mariadb.sh); fails if mariadbd
//! is missing.

#![cfg(feature = "mysql")]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use common::{TestApp, ADMIN_KEY};
use tollgate_persistence::testing::TestDatabase;
use tollgate_persistence::PoolOptions;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mariadb.sh");

fn mariadb(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("scripts/mariadb.sh runs");
    assert!(
        out.status.success(),
        "mariadb.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Stops the test's MariaDB however the test ends.
struct Server<'a>(&'a Path);

impl Drop for Server<'_> {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .args(["stop", &self.0.display().to_string()])
            .output();
    }
}

#[actix_web::test]
async fn mariadb_outage_answers_503_and_the_server_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("mariadb");
    let data_s = data.display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
        .to_string();
    let url = mariadb(&["start", &data_s, &port]);
    let _server = Server(&data);
    let pool = PoolOptions {
        max_size: 8,
        timeout: Duration::from_secs(2),
        cache_ttl: Duration::from_secs(1),
        ..PoolOptions::default()
    };
    let app = TestApp::spawn_with(TestDatabase::mysql_on(&url), pool).await;
    let c = app.customer("o", "Outage", &["p"], None, "month").await;
    assert_eq!(app.check(&c.key, "p", None).await.status, StatusCode::OK);

    mariadb(&["stop", &data_s]);
    for _ in 0..3 {
        let started = Instant::now();
        app.check(&c.key, "p", None)
            .await
            .assert_error(503, "unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "a request hung: {:?}",
            started.elapsed()
        );
    }
    app.get("/v1/users", ADMIN_KEY)
        .await
        .assert_error(503, "unavailable");
    app.raw(Method::GET, "/readyz", None, None, None)
        .await
        .assert_error(503, "unavailable");
    assert_eq!(
        app.raw(Method::GET, "/healthz", None, None, None)
            .await
            .status,
        StatusCode::OK,
        "the process itself is alive"
    );

    mariadb(&["start", &data_s, &port]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.check(&c.key, "p", None).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert!(Instant::now() < deadline, "the server did not recover");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        app.raw(Method::GET, "/readyz", None, None, None)
            .await
            .status,
        StatusCode::OK
    );
    // The check before the outage and the one after it were recorded; none
    // of the refused ones were.
    assert_eq!(app.events(c.user_id).await.len(), 2);
    app.stop().await;
}
