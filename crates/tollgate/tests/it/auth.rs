//! Who may call what: keys, roles, a suspended user; the bootstrap admin key.

mod cases {
    use actix_web::http::{Method, StatusCode};
    use serde_json::json;
    use tollgate_persistence::Backend;

    use crate::common::{TestApp, ADMIN_KEY};

    pub async fn bad_keys_are_401_and_only_active_admins_reach_admin_routes(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        // Missing, malformed and unknown keys.
        let r = app.raw(Method::GET, "/v1/me", None, None, None).await;
        r.assert_error(401, "unauthorized");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let mut req = app.client.get(format!("{}/v1/me", app.base));
        req = req.insert_header(("Authorization", "Basic YWJjOmRlZg=="));
        let res = req.send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        app.get("/v1/me", "tg_unknownunknownunknownunknownunknown")
            .await
            .assert_error(401, "unauthorized");
        // 401 comes before any look at the body.
        app.raw(
            Method::POST,
            "/v1/plans",
            None,
            Some("{not json"),
            Some("application/json"),
        )
        .await
        .assert_error(401, "unauthorized");

        // The bootstrap key is the admin `admin`.
        let me = app.get("/v1/me", ADMIN_KEY).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["username"], "admin");
        assert_eq!(me.body["role"], "admin");

        // A user may read plans and permissions, and nothing of admins.
        let (uid, key) = app.user_with_key("bob").await;
        let plan = app.create("/v1/plans", json!({"name": "Basic"})).await;
        let perm = app
            .create("/v1/permissions", json!({"name": "x:read"}))
            .await;
        assert_eq!(app.get("/v1/plans", &key).await.status, StatusCode::OK);
        assert_eq!(
            app.get(&format!("/v1/plans/{}", plan["id"]), &key)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            app.get("/v1/permissions", &key).await.status,
            StatusCode::OK
        );
        app.get(&format!("/v1/permissions/{}", perm["id"]), &key)
            .await
            .assert_error(403, "forbidden");
        app.post("/v1/plans", &key, json!({"name": "Mine"}))
            .await
            .assert_error(403, "forbidden");
        app.get("/v1/users", &key)
            .await
            .assert_error(403, "forbidden");
        app.get("/v1/subscriptions", &key)
            .await
            .assert_error(403, "forbidden");
        app.get(&format!("/v1/users/{uid}"), &key)
            .await
            .assert_error(403, "forbidden");
        assert_eq!(app.get("/v1/me", &key).await.body["username"], "bob");

        // Suspended: GET /v1/me still works, minting keys does not.
        let r = app
            .patch(
                &format!("/v1/users/{uid}"),
                ADMIN_KEY,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let me = app.get("/v1/me", &key).await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["status"], "suspended");
        app.post("/v1/me/api-keys", &key, json!({}))
            .await
            .assert_error(403, "forbidden");
        app.stop().await;
    }
}

on_both_backends!(bad_keys_are_401_and_only_active_admins_reach_admin_routes,);

/// The bootstrap admin key's sources, on a real `tollgate` process.
mod admin_key {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use actix_web::http::StatusCode;

    const KEY: &str = "file-admin-key-0123456789abcdefghijkl";

    fn tollgate(dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.env_remove("TOLLGATE_ADMIN_KEY")
            .env_remove("TOLLGATE_ADMIN_KEY_FILE")
            .env("DATABASE_URL", dir.join("tollgate.db"))
            .env("TOLLGATE_WORKERS", "1")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        cmd
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    #[actix_web::test]
    async fn the_admin_key_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("admin_key");
        std::fs::write(&file, format!("{KEY}\n")).expect("key written");
        let port = free_port();
        let child = tollgate(dir.path())
            .env("TOLLGATE_ADMIN_KEY_FILE", &file)
            .env("TOLLGATE_BIND", format!("127.0.0.1:{port}"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tollgate starts");
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _child = Kill(child);

        let client = awc::Client::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let sent = client
                .get(format!("http://127.0.0.1:{port}/v1/me"))
                .insert_header(("Authorization", format!("Bearer {KEY}")))
                .send()
                .await;
            if let Ok(mut res) = sent {
                let body: serde_json::Value = res.json().await.expect("json");
                assert_eq!(body["username"], "admin", "{body}");
                break res.status();
            }
            assert!(Instant::now() < deadline, "tollgate did not start");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn an_admin_key_flag_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        for args in [
            vec!["--admin-key", KEY],
            vec![&format!("--admin-key={KEY}")],
            vec!["serve", "--admin-key", KEY],
        ] {
            let out = tollgate(dir.path())
                .args(&args)
                .output()
                .expect("tollgate runs");
            assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("--admin-key"), "{stderr}");
        }
    }

    #[test]
    fn both_admin_key_settings_are_a_start_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("admin_key");
        std::fs::write(&file, KEY).expect("key written");
        let out = tollgate(dir.path())
            .env("TOLLGATE_ADMIN_KEY", KEY)
            .env("TOLLGATE_ADMIN_KEY_FILE", &file)
            .env("TOLLGATE_BIND", "127.0.0.1:0")
            .output()
            .expect("tollgate runs");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("TOLLGATE_ADMIN_KEY and TOLLGATE_ADMIN_KEY_FILE"),
            "{stderr}"
        );
    }
}
