//! Real `tollgate` processes: two instances sharing one database, and a
//! kill -9 in the middle of a load.

use actix_web::http::StatusCode;

/// Also the `Server` helper of other modules (`entitlements`).
pub(crate) mod cases {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use actix_web::http::StatusCode;
    use futures_util::future::join_all;
    use serde_json::{json, Value};
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    /// A `tollgate` child process; killed when dropped.
    pub struct Server {
        pub(crate) child: Child,
        base: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    /// A started `tollgate` for tests outside this module.
    pub async fn start_for_test(url: &str) -> Server {
        start(url).await
    }

    impl Server {
        pub fn base(&self) -> &str {
            &self.base
        }
    }

    async fn start(url: &str) -> Server {
        start_logging(url, "error", Stdio::inherit()).await
    }

    async fn start_logging(url: &str, level: &str, stderr: Stdio) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env("DATABASE_URL", url)
            .env("TOLLGATE_BIND", format!("127.0.0.1:{port}"))
            .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY)
            .env("TOLLGATE_WORKERS", "2")
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tollgate starts");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = awc::Client::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = client.get(format!("{}/readyz", server.base)).send().await {
                if res.status() == StatusCode::OK {
                    return server;
                }
            }
            assert!(Instant::now() < deadline, "tollgate did not become ready");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends checks until a 429 or a failure; returns (granted units, answers).
    async fn client_until_refused(base: String, key: String, costs: Vec<i64>) -> (i64, Vec<u16>) {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        let mut granted = 0;
        let mut statuses = Vec::new();
        for i in 0.. {
            let cost = costs[i % costs.len()];
            let res = client
                .post(format!("{base}/v1/access/check"))
                .insert_header(("Authorization", format!("Bearer {key}")))
                .send_json(&json!({"permission": "p", "cost": cost}))
                .await;
            let Ok(mut res) = res else { break };
            // The answer counts only once its body arrived whole.
            let Ok(body) = res.json::<Value>().await else {
                break;
            };
            let status = res.status().as_u16();
            statuses.push(status);
            match status {
                200 => {
                    assert_eq!(body["allowed"], true);
                    granted += cost;
                }
                429 => break,
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        (granted, statuses)
    }

    pub async fn two_instances_share_one_exact_quota(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("twin", "Twin", &["p"], Some(200), "month")
            .await;
        let a = start(&app.db.url).await;
        let b = start(&app.db.url).await;
        let clients = (0..64).map(|i| {
            let base = if i % 2 == 0 {
                a.base.clone()
            } else {
                b.base.clone()
            };
            client_until_refused(base, c.key.clone(), vec![1])
        });
        let results = join_all(clients).await;
        let granted: i64 = results.iter().map(|(g, _)| g).sum();
        assert_eq!(granted, 200, "granted units must equal the limit");
        assert!(results.iter().all(|(_, s)| s.last() == Some(&429)));
        assert_eq!(app.events(c.user_id).await.len(), 200);
        assert_eq!(app.usage(c.user_id).await["used"], 200);
        drop((a, b));
        app.stop().await;
    }

    pub async fn sigterm_finishes_accepted_checks_and_exits_0(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("term", "Term", &["p"], None, "month").await;
        let mut server = start(&app.db.url).await;
        let pid = server.child.id().to_string();
        let clients = join_all(
            (0..16).map(|_| client_until_refused(server.base.clone(), c.key.clone(), vec![1])),
        );
        let terminator = async {
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
            let sent = Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill runs");
            assert!(sent.success());
        };
        let (results, ()) = futures_util::future::join(clients, terminator).await;
        let status = server.child.wait().expect("exited");
        assert_eq!(status.code(), Some(0), "tollgate must exit 0 on SIGTERM");
        let seen_200 = results
            .iter()
            .flat_map(|(_, s)| s)
            .filter(|s| **s == 200)
            .count();
        assert!(seen_200 > 0, "the load never got going");
        let events = app.events(c.user_id).await.len();
        assert!(
            events >= seen_200,
            "{events} events for {seen_200} answered 200"
        );
        assert!(events <= seen_200 + 16);
        app.stop().await;
    }

    /// One line per request with method, route, status, latency and user;
    /// never a key, its hash or the admin key.
    pub async fn logs_show_requests_but_never_keys(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app
            .customer("logme", "Logs", &["p"], Some(5), "month")
            .await;
        let log = tempfile::NamedTempFile::new().expect("log file");
        let file = log.reopen().expect("log file");
        let server = start_logging(&app.db.url, "info", Stdio::from(file)).await;
        let client = awc::Client::default();
        let res = client
            .post(format!("{}/v1/access/check", server.base))
            .insert_header(("Authorization", format!("Bearer {}", c.key)))
            .send_json(&json!({"permission": "p"}))
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let mut minted = client
            .post(format!("{}/v1/me/api-keys", server.base))
            .insert_header(("Authorization", format!("Bearer {}", c.key)))
            .send_json(&json!({"name": "secret-bearing"}))
            .await
            .expect("sent");
        let new_key: Value = minted.json().await.expect("json");
        let new_key = new_key["key"].as_str().expect("key").to_owned();
        let res = client
            .get(format!("{}/v1/me", server.base))
            .insert_header(("Authorization", "Bearer tg_wrong_key_in_a_log_test"))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let mut server = server;
        let pid = server.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        server.child.wait().expect("exited");
        let text = std::fs::read_to_string(log.path()).expect("log read");
        let hash = tollgate_domain::api_key::KeyHash::of(&c.key);
        for secret in [
            c.key.as_str(),
            &c.key[8..],
            new_key.as_str(),
            hash.as_str(),
            ADMIN_KEY,
            "tg_wrong_key_in_a_log_test",
        ] {
            assert!(!text.contains(secret), "the log shows a secret: {text}");
        }
        let line = text
            .lines()
            .find(|l| l.contains("route=/v1/access/check"))
            .unwrap_or_else(|| panic!("no request line for the check: {text}"));
        assert!(line.contains("POST /v1/access/check"), "{line}");
        assert!(line.contains("status=200"), "{line}");
        assert!(line.contains(&format!("user={}", c.user_id)), "{line}");
        assert!(line.contains("ms"), "{line}");
        assert!(text.contains("route=/v1/me status=401"), "{text}");
        let lines = text
            .lines()
            .filter(|l| l.contains("route=") && !l.contains("route=/readyz"))
            .count();
        assert_eq!(lines, 3, "one line per request: {text}");
        app.stop().await;
    }

    pub async fn kill_9_loses_no_granted_check(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let c = app.customer("crash", "Crash", &["p"], None, "month").await;
        let mut server = start(&app.db.url).await;
        let clients = join_all((0..16).map(|i| {
            client_until_refused(server.base.clone(), c.key.clone(), vec![1 + (i % 3), 2, 1])
        }));
        let killer = async {
            actix_web::rt::time::sleep(Duration::from_millis(700)).await;
            // SIGKILL: no shutdown, no flush.
            server.child.kill().expect("kill -9");
            server.child.wait().expect("reaped");
        };
        let (results, ()) = futures_util::future::join(clients, killer).await;
        let seen_granted: i64 = results.iter().map(|(g, _)| g).sum();
        let seen_200 = results
            .iter()
            .flat_map(|(_, s)| s)
            .filter(|s| **s == 200)
            .count();
        assert!(seen_200 > 0, "the load never got going");

        // After a restart, every 200 a client saw has its event.
        let again = start(&app.db.url).await;
        let events = app.events(c.user_id).await;
        let event_units: i64 = events
            .iter()
            .map(|e| e["cost"].as_i64().expect("cost"))
            .sum();
        assert!(
            events.len() >= seen_200,
            "{} events for {seen_200} answered 200",
            events.len()
        );
        assert!(event_units >= seen_granted);
        assert!(
            events.len() <= seen_200 + 16,
            "at most one check in flight per client may be granted unseen"
        );
        assert_eq!(app.usage(c.user_id).await["used"], event_units);
        drop(again);
        app.stop().await;
    }
}

/// `tollgate migrate` is idempotent; `tollgate create-admin NAME` prints a
/// new admin key once, and that key works.
#[actix_web::test]
async fn migrate_is_idempotent_and_create_admin_prints_a_new_working_key_each_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let tollgate = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.env("DATABASE_URL", &db)
            .env("RUST_LOG", "off")
            .env_remove("TOLLGATE_ADMIN_KEY");
        cmd
    };
    for _ in 0..2 {
        let out = tollgate().arg("migrate").output().expect("migrate runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = tollgate()
        .args(["create-admin", "alice"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("tg_") && key.len() >= 35, "{key}");
    let again = tollgate()
        .args(["create-admin", "alice"])
        .output()
        .expect("runs");
    let second = String::from_utf8_lossy(&again.stdout).trim().to_owned();
    assert!(
        second.starts_with("tg_") && second != key,
        "a new key each time"
    );

    let server = cases::start_for_test(&db).await;
    let client = awc::Client::default();
    for k in [&key, &second] {
        let mut res = client
            .get(format!("{}/v1/me", server.base()))
            .insert_header(("Authorization", format!("Bearer {k}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let me: serde_json::Value = res.json().await.expect("json");
        assert_eq!(me["username"], "alice");
        assert_eq!(me["role"], "admin");
    }
    let bad = tollgate()
        .args(["create-admin", "bad name"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(1));
}

/// A bad setting stops the start with one line naming it, and exit 1.
#[test]
fn bad_settings_stop_the_start_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("DATABASE_URL", "postgres://db/x")], "DATABASE_URL"),
        (&[("DATABASE_URL", ":memory:")], "DATABASE_URL"),
        (
            &[
                ("DATABASE_URL", db.as_str()),
                ("TOLLGATE_BIND", "localhost-8080"),
            ],
            "TOLLGATE_BIND",
        ),
        (
            &[
                ("DATABASE_URL", db.as_str()),
                ("TOLLGATE_BIND", "203.0.113.1:80"),
            ],
            "TOLLGATE_BIND",
        ),
        (
            &[
                ("DATABASE_URL", db.as_str()),
                ("TOLLGATE_ADMIN_KEY", "short"),
            ],
            "TOLLGATE_ADMIN_KEY",
        ),
        (
            &[
                ("DATABASE_URL", db.as_str()),
                ("TOLLGATE_EVENT_RETENTION_DAYS", "0"),
            ],
            "TOLLGATE_EVENT_RETENTION_DAYS",
        ),
        (
            &[
                ("DATABASE_URL", db.as_str()),
                ("TOLLGATE_EVENT_RETENTION_DAYS", "-3"),
            ],
            "TOLLGATE_EVENT_RETENTION_DAYS",
        ),
        (
            &[
                ("DATABASE_URL", db.as_str()),
                ("TOLLGATE_EVENT_RETENTION_DAYS", "30 days"),
            ],
            "TOLLGATE_EVENT_RETENTION_DAYS",
        ),
        (
            &[("DATABASE_URL", db.as_str()), ("TOLLGATE_POOL_SIZE", "0")],
            "TOLLGATE_POOL_SIZE",
        ),
    ];
    for (env, setting) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .env_remove("TOLLGATE_ADMIN_KEY")
            .envs(env.iter().copied())
            .env("RUST_LOG", "off")
            .output()
            .expect("tollgate runs");
        assert_eq!(out.status.code(), Some(1), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{env:?}: {stderr}");
        assert!(stderr.starts_with("tollgate: "), "{stderr}");
        assert!(stderr.contains(setting), "{env:?}: {stderr}");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--help")
        .output()
        .expect("tollgate runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for setting in [
        "DATABASE_URL",
        "TOLLGATE_BIND",
        "TOLLGATE_ADMIN_KEY",
        "TOLLGATE_POOL_SIZE",
        "TOLLGATE_WORKERS",
        "TOLLGATE_DB_TIMEOUT_MS",
        "TOLLGATE_CACHE_TTL_MS",
    ] {
        assert!(
            help.contains(setting),
            "--help does not explain {setting}: {help}"
        );
    }
}

on_both_backends!(
    two_instances_share_one_exact_quota,
    kill_9_loses_no_granted_check,
    sigterm_finishes_accepted_checks_and_exits_0,
    logs_show_requests_but_never_keys,
);
