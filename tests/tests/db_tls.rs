//! TLS of database connections (`sslmode`, `sslrootcert`) against real servers: a private
//! PostgreSQL 15 with `ssl = on` and self-signed certificates, started by
//! `tests/scripts/tls-pg`, and the project's test server, which runs without TLS
//! (`TEST_DATABASE_URL`). The TLS test skips, saying why, only when initdb or openssl is
//! missing.

use remarketable_core::db;
use remarketable_tests::{admin_url, settings_for};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tls-pg");

/// A running private server; stopped and removed when dropped, also when a test fails.
struct TlsServer {
    dir: PathBuf,
    port: u16,
}

impl TlsServer {
    /// `None` (after saying why) when the tools to build one are missing.
    fn start() -> Option<TlsServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("rmk-tls-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(SCRIPT)
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .output()
            .expect("run tests/scripts/tls-pg");
        let server = TlsServer { dir, port };
        match out.status.code() {
            Some(0) => Some(server),
            Some(2) => {
                eprintln!(
                    "skipping the TLS test: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            _ => panic!(
                "tls-pg start failed: {}\n(see {}/server.log)",
                String::from_utf8_lossy(&out.stderr),
                server.dir.display()
            ),
        }
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A URL to the server at 127.0.0.1 with `query` (e.g. `sslmode=require`).
    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }

    /// The server's certificate and highest TLS version, switched with a reload.
    async fn serve(&self, cert: &str, max_version: &str) {
        let admin = connect(&self.url("sslmode=disable")).await.unwrap();
        let stem = cert.trim_end_matches(".crt");
        let key = self.cert(&format!("{stem}.key"));
        // One statement each: ALTER SYSTEM refuses to run in the implicit transaction of a
        // multi-statement string.
        for (name, value) in [
            ("ssl_cert_file", self.cert(cert).display().to_string()),
            ("ssl_key_file", key.display().to_string()),
            ("ssl_max_protocol_version", max_version.to_owned()),
        ] {
            admin
                .batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
                .await
                .unwrap();
        }
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        // The reload is a signal: wait until a new session sees it.
        for _ in 0..100 {
            let c = connect(&self.url("sslmode=disable")).await.unwrap();
            let file: String = c.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
            if Path::new(&file) == self.cert(cert) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not reload its certificate");
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new(SCRIPT).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects the way the CLI does: the URL read by `parse_database_url`, then `connect_with`.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (config, tls) = db::parse_database_url(url, None).map_err(|e| e.to_string())?;
    db::connect_with(&config, &tls)
        .await
        .map_err(|e| e.to_string())
}

/// An error and its sources, as `{:#}` of anyhow prints them.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Whether this session is encrypted, and with which TLS version.
async fn ssl_of(client: &tokio_postgres::Client) -> (bool, Option<String>) {
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn encrypted(url: &str) -> bool {
    let client = connect(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    ssl_of(&client).await.0
}

async fn refused(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(e) => {
            assert!(e.contains("DATABASE_URL"), "{e}");
            e
        }
    }
}

#[tokio::test]
async fn sslmodes_against_a_self_signed_server() {
    let Some(server) = TlsServer::start() else {
        return;
    };
    let v1 = server.cert("v1.crt");
    let v3 = server.cert("v3.crt");
    let root = |path: &Path| format!("sslrootcert={}", path.display());

    // The server starts with the X.509 version-1 certificate rustls cannot verify.
    assert!(!encrypted(&server.url("sslmode=disable")).await);
    // prefer (also the default) and require encrypt without verifying, as libpq does.
    assert!(encrypted(&server.url("application_name=default")).await);
    assert!(encrypted(&server.url("sslmode=prefer")).await);
    let client = connect(&server.url("sslmode=require")).await.unwrap();
    assert_eq!(ssl_of(&client).await, (true, Some("TLSv1.3".into())));
    // Verifying it is impossible, and the message says what to do.
    let e = refused(&server.url(&format!("sslmode=verify-full&{}", root(&v1)))).await;
    assert!(e.contains("sslmode=verify-full"), "{e}");
    assert!(e.contains("version 1"), "{e}");
    assert!(e.contains("sslmode=require"), "{e}");
    let e = refused(&server.url("sslmode=verify-ca")).await;
    assert!(e.contains("sslmode=verify-ca"), "{e}");
    // With a root file, libpq's prefer and require check the chain: require refuses, prefer
    // falls back to plain text.
    refused(&server.url(&format!("sslmode=require&{}", root(&v3)))).await;
    assert!(!encrypted(&server.url(&format!("sslmode=prefer&{}", root(&v3)))).await);

    // The same certificate over TLS 1.2, whose signature check is a different path.
    server.serve("v1.crt", "TLSv1.2").await;
    let client = connect(&server.url("sslmode=require")).await.unwrap();
    assert_eq!(ssl_of(&client).await, (true, Some("TLSv1.2".into())));

    // A version-3 certificate naming 127.0.0.1.
    server.serve("v3.crt", "").await;
    assert!(encrypted(&server.url(&format!("sslmode=verify-full&{}", root(&v3)))).await);
    assert!(encrypted(&server.url(&format!("sslmode=verify-ca&{}", root(&v3)))).await);
    assert!(encrypted(&server.url(&format!("sslmode=require&{}", root(&v3)))).await);
    // Under another name: verify-full refuses, verify-ca does not look at names.
    let by_name = |query: String| {
        format!(
            "postgres://postgres@localhost:{}/postgres?hostaddr=127.0.0.1&{query}",
            server.port
        )
    };
    let e = refused(&by_name(format!("sslmode=verify-full&{}", root(&v3)))).await;
    assert!(e.contains("does not name the host"), "{e}");
    assert!(encrypted(&by_name(format!("sslmode=verify-ca&{}", root(&v3)))).await);
    // Not signed by the Mozilla roots, and no root file given.
    let e = refused(&server.url("sslmode=verify-full")).await;
    assert!(e.contains("sslrootcert"), "{e}");
    // A root file that is not the signer.
    refused(&server.url(&format!("sslmode=verify-full&{}", root(&v1)))).await;

    // The handler's pool takes the same path, with the root file from its own setting.
    server.serve("v1.crt", "").await;
    let pool = db::pool(&settings_for(&server.url("sslmode=require")));
    assert!(ssl_of(&pool.get().await.unwrap()).await.0);
    let pool = db::pool(&settings_for(&server.url("sslmode=verify-full")));
    let e = chain(&pool.get().await.unwrap_err());
    assert!(e.contains("DATABASE_URL: TLS handshake failed"), "{e}");
    let pool = db::pool(&remarketable_tests::settings_with(
        &server.url("sslmode=prefer"),
        &[("DATABASE_SSLROOTCERT", v3.to_str().unwrap())],
    ));
    assert!(!ssl_of(&pool.get().await.unwrap()).await.0);
    // db::connect, which tools call with a tokio-postgres Config, encrypts for require too.
    let config = tokio_postgres::Config::from_str(&server.url("sslmode=require")).unwrap();
    assert!(ssl_of(&db::connect(&config).await.unwrap()).await.0);
}

/// The project's test server has no TLS.
#[tokio::test]
async fn sslmodes_against_a_server_without_tls() {
    let admin = admin_url();
    let base = admin.split('?').next().unwrap();
    assert!(!encrypted(&format!("{base}?sslmode=prefer")).await);
    assert!(!encrypted(base).await);
    let e = refused(&format!("{base}?sslmode=require")).await;
    assert!(e.contains("does not accept TLS"), "{e}");
    assert!(e.contains("sslmode=require"), "{e}");
    refused(&format!("{base}?sslmode=verify-full")).await;
}
