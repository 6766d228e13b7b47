//! The handler's own HTTP server against slow and idle clients, and HSTS on API answers.

use remarketable_handler::serve::serve;
use remarketable_handler::{app, AppState};
use remarketable_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the server with a one-second header-read timeout; answers its address.
async fn start(extra: &[(&str, &str)]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(AppState::new(settings_with("postgres://unused/db", extra)));
    let timeout = Duration::from_secs(1);
    tokio::spawn(serve(listener, app(state), timeout, std::future::pending()));
    addr
}

/// Reads until the server closes the connection (or 10 s pass); answers what was read and
/// when the connection ended.
async fn until_closed(stream: &mut TcpStream) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), None),
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed() {
    let addr = start(&[]).await;

    // Headers that never end: closed after the timeout, without an answer to act on.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n")
        .await
        .unwrap();
    let (_, closed) = until_closed(&mut slow).await;
    let closed = closed.expect("a client that never finishes its headers is disconnected");
    assert!(closed < Duration::from_secs(5), "{closed:?}");

    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = until_closed(&mut silent).await;
    assert!(closed.is_some(), "a silent connection is disconnected");

    // A request answered, then the keep-alive connection left idle: closed too.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ready"), "{answer}");
    assert!(
        closed.is_some(),
        "an idle keep-alive connection is disconnected"
    );
}

#[tokio::test]
async fn hsts_is_sent_only_when_configured() {
    for (extra, expected) in [
        (vec![], None),
        (
            vec![("HSTS_MAX_AGE_SECONDS", "31536000")],
            Some("max-age=31536000; includeSubDomains"),
        ),
    ] {
        let addr = start(&extra).await;
        for path in ["/api/v1/openapi.json", "/api/dashboard/", "/api/v1/nope"] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .unwrap();
            let (answer, _) = until_closed(&mut stream).await;
            let head = answer
                .split("\r\n\r\n")
                .next()
                .unwrap()
                .to_ascii_lowercase();
            let hsts = head
                .lines()
                .find_map(|l| l.strip_prefix("strict-transport-security: "));
            assert_eq!(
                hsts,
                expected.map(str::to_ascii_lowercase).as_deref(),
                "{path}: {head}"
            );
        }
    }
}
