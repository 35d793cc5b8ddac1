//! Forward-auth through a real nginx (`auth_request` -> `/v1/authorize`) in
//! front of a tiny upstream, configured as `docs/gateways.md` shows.
//!
//! Needs the `nginx` binary, so it is `#[ignore]`d in a plain `cargo test`;
//! `.ci/run` installs nginx and runs it with `--ignored`, where a missing
//! nginx fails the test.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::TestApp;
use tollgate_persistence::Backend;

/// The nginx configuration of docs/gateways.md, with test ports and paths.
fn nginx_conf(dir: &str, listen: u16, tollgate: &str, upstream: &str) -> String {
    format!(
        r#"
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    upstream tollgate {{ server {tollgate}; }}
    upstream app {{ server {upstream}; }}

    server {{
        listen 127.0.0.1:{listen};

        location /reports/ {{
            auth_request /_tollgate/reports:read;
            include {dir}/tollgate_common.conf;
            proxy_pass http://app;
        }}
        location /admin/ {{
            auth_request /_tollgate/admin:all;
            include {dir}/tollgate_common.conf;
            proxy_pass http://app;
        }}

        # The check: the client's Authorization header goes along, the body does not.
        location ~ ^/_tollgate/(?<tollgate_permission>.+)$ {{
            internal;
            proxy_pass http://tollgate/v1/authorize?permission=$tollgate_permission;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}

        # auth_request passes only 2xx, 401 and 403; any other status of the
        # check (429) becomes a 500, mapped back here.
        location @tollgate_refused {{
            default_type application/json;
            if ($tollgate_status = 429) {{
                add_header Retry-After $tollgate_retry_after always;
                add_header RateLimit-Limit $tollgate_limit always;
                add_header RateLimit-Remaining $tollgate_remaining always;
                add_header RateLimit-Reset $tollgate_reset always;
                return 429 '{{"error":{{"code":"quota_exhausted","message":"quota_exhausted: the plan\'s usage limit for this period is reached"}}}}';
            }}
            return 503;
        }}
    }}
}}
"#
    )
}

const COMMON_CONF: &str = r#"
auth_request_set $tollgate_status $upstream_status;
auth_request_set $tollgate_user $upstream_http_x_tollgate_user_id;
auth_request_set $tollgate_limit $upstream_http_ratelimit_limit;
auth_request_set $tollgate_remaining $upstream_http_ratelimit_remaining;
auth_request_set $tollgate_reset $upstream_http_ratelimit_reset;
auth_request_set $tollgate_retry_after $upstream_http_retry_after;
proxy_set_header X-Tollgate-User-Id $tollgate_user;
add_header RateLimit-Limit $tollgate_limit always;
add_header RateLimit-Remaining $tollgate_remaining always;
error_page 500 = @tollgate_refused;
"#;

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn upstream(req: HttpRequest) -> HttpResponse {
    let user = req
        .headers()
        .get("x-tollgate-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    HttpResponse::Ok().body(format!("upstream: user {user}"))
}

#[actix_web::test]
#[ignore = "needs nginx; .ci/run runs it with --ignored"]
async fn nginx_auth_request_guards_an_upstream() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let c = app
        .customer("gw", "Gateway", &["reports:read"], Some(3), "month")
        .await;

    let upstream_server = HttpServer::new(|| App::new().default_service(web::to(upstream)))
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("upstream binds");
    let upstream_addr = upstream_server.addrs()[0];
    actix_web::rt::spawn(upstream_server.run());

    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().display().to_string();
    let listen = free_port();
    let tollgate_addr = app.base.trim_start_matches("http://").to_owned();
    std::fs::write(
        dir.path().join("nginx.conf"),
        nginx_conf(&d, listen, &tollgate_addr, &upstream_addr.to_string()),
    )
    .expect("conf written");
    std::fs::write(dir.path().join("tollgate_common.conf"), COMMON_CONF).expect("conf written");
    let child = Command::new("nginx")
        .args([
            "-p",
            &d,
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx must be installed (apt-get install -y nginx)");
    let _nginx = Nginx(child);

    let client = awc::Client::default();
    let base = format!("http://127.0.0.1:{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/reports/")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let get = |path: &str, key: Option<&str>| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(key) = key {
            req = req.insert_header(("Authorization", format!("Bearer {key}")));
        }
        req.send()
    };

    // Allowed calls reach the upstream, which learns the user.
    let mut res = get("/reports/q1", Some(&c.key)).await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("ratelimit-remaining")
            .map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    let body = res.body().await.expect("body");
    assert_eq!(body, format!("upstream: user {}", c.user_id).as_bytes());

    // No key: 401; no permission: 403; neither reaches the upstream nor counts.
    assert_eq!(
        get("/reports/q1", None).await.expect("sent").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/reports/q1", Some("tg_not_a_key"))
            .await
            .expect("sent")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/admin/x", Some(&c.key)).await.expect("sent").status(),
        StatusCode::FORBIDDEN
    );

    // Over quota: the documented mapping turns the check's 429 into a 429.
    assert_eq!(
        get("/reports/q2", Some(&c.key))
            .await
            .expect("sent")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/reports/q3", Some(&c.key))
            .await
            .expect("sent")
            .status(),
        StatusCode::OK
    );
    let mut refused = get("/reports/q4", Some(&c.key)).await.expect("sent");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("retry-after").is_some());
    assert_eq!(
        refused
            .headers()
            .get("ratelimit-remaining")
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "quota_exhausted");

    assert_eq!(app.events(c.user_id).await.len(), 3);
    app.stop().await;
}
