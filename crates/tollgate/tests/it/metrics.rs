//! `/metrics` stays bounded whatever methods and paths clients send: the
//! labels come from fixed sets (a standard method or `other`, a route
//! template or `unmatched`, an HTTP status).

mod cases {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;

    use actix_web::http::Method;
    use tollgate_persistence::Backend;

    use crate::common::TestApp;

    /// A method token no server knows, distinct for every `i` (`XKQZ` and
    /// `i` in letters, so it is a valid HTTP token).
    fn made_up_method(i: usize) -> String {
        let mut name = String::from("XKQZ");
        let mut n = i;
        loop {
            name.push(char::from(b'A' + u8::try_from(n % 26).expect("< 26")));
            n /= 26;
            if n == 0 {
                return name;
            }
        }
    }

    /// The request shapes: a route without a key, a forward-auth route
    /// without a key, an unknown path, each with any method.
    fn path(shape: usize, i: usize) -> String {
        match shape % 3 {
            0 => "/healthz".into(),
            1 => format!("/v1/authorize/x{i}"),
            _ => format!("/no/such/route/{i}"),
        }
    }

    /// One request over a fresh connection, by hand: HTTP clients refuse
    /// some methods. Returns the status line.
    fn send_raw(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        let answer = String::from_utf8_lossy(&answer);
        answer.lines().next().unwrap_or_default().to_owned()
    }

    /// Sends `(method, path)` pairs from a blocking thread; asserts each was
    /// answered with a 4xx (or 200 for `/healthz`), never a 5xx.
    async fn send_all(addr: SocketAddr, requests: Vec<(String, String)>) {
        actix_web::rt::task::spawn_blocking(move || {
            for (method, path) in requests {
                let status = send_raw(addr, &method, &path);
                assert!(
                    status.starts_with("HTTP/1.1 2") || status.starts_with("HTTP/1.1 4"),
                    "{method} {path}: {status:?}"
                );
            }
        })
        .await
        .expect("sender thread");
    }

    /// The sample lines of `/metrics` (the series), and the text.
    async fn series(app: &TestApp) -> (usize, String) {
        let r = app.raw(Method::GET, "/metrics", None, None, None).await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        let count = r
            .text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        (count, r.text)
    }

    pub async fn metrics_series_do_not_grow_with_made_up_methods_and_paths(backend: Backend) {
        let app = TestApp::spawn(backend).await;
        let addr: SocketAddr = app
            .base
            .trim_start_matches("http://")
            .parse()
            .expect("address");
        // Warm-up: every shape once, with one made-up method and with GET.
        let warm_up = (0..3)
            .flat_map(|shape| {
                [
                    ("XKQZWARM".to_owned(), path(shape, 0)),
                    ("GET".to_owned(), path(shape, 0)),
                ]
            })
            .collect();
        send_all(addr, warm_up).await;
        // The first scrape adds the series of `/metrics` itself.
        series(&app).await;
        let (before, _) = series(&app).await;

        // Act: 1,000 distinct methods over the same shapes, distinct paths.
        let flood = (0..1000).map(|i| (made_up_method(i), path(i, i))).collect();
        send_all(addr, flood).await;
        let (after, text) = series(&app).await;

        assert_eq!(
            after, before,
            "series grew from {before} to {after}:\n{text}"
        );
        assert!(
            !text.contains("XKQZ"),
            "a made-up method is a label:\n{text}"
        );
        assert!(!text.contains("/no/such"), "a raw path is a label:\n{text}");
        assert!(
            text.contains(r#"method="other",route="unmatched",status="404""#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"tollgate_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
            ),
            "{text}"
        );
        app.stop().await;
    }
}

on_both_backends!(metrics_series_do_not_grow_with_made_up_methods_and_paths);
