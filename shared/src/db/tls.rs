//! TLS of database connections, with the `sslmode` meanings libpq users expect.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` and leaves certificates to the
//! connector; tokio-postgres-rustls verifies every certificate against the Mozilla roots, so a
//! self-signed server (the usual self-hosted Citus cluster) could only be reached with
//! `sslmode=disable`. Here the modes do what libpq does:
//!
//! * `disable`: plain text.
//! * `prefer` (default; `allow` is read as `prefer`): TLS without verifying the certificate,
//!   plain text when the server refuses TLS or the handshake fails.
//! * `require`: TLS without verifying the certificate; never plain text.
//! * `verify-ca`: TLS with a certificate chain to a trusted root; any host name.
//! * `verify-full`: `verify-ca` plus the host name must match the certificate.
//!
//! Trusted roots are the Mozilla roots plus the certificates of `sslrootcert` (a PEM file). As
//! in libpq, giving `sslrootcert` makes `prefer` and `require` check the chain too. Unlike
//! libpq, `~/.postgresql/root.crt` is not looked at: a server process has no such home.

use crate::config::ConfigError;
use crate::url::percent_decode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The setting every message names: all hosts and tools read the connection string from it.
const SETTING: &str = "DATABASE_URL";
/// The setting that may give the root certificate file when the URL does not.
pub const ROOT_CERT_SETTING: &str = "DATABASE_SSLROOTCERT";

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            // libpq's allow tries plain text first; trying TLS first connects in the same
            // cases and encrypts more often.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres must do: it only decides whether to ask for TLS; the verifier
    /// decides how much of the certificate is checked.
    fn for_tokio_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The certificates of an `sslrootcert` file, read once when the settings are read so that a
/// missing file shows at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct RootCert {
    path: PathBuf,
    certs: Vec<CertificateDer<'static>>,
}

impl RootCert {
    /// Reads a PEM file of one or more CA certificates; the error says why, not what it holds.
    pub fn read(path: &Path) -> Result<RootCert, String> {
        let shown = path.display();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{shown} is not a PEM certificate file: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{shown} holds no PEM certificate"));
        }
        // Checked here rather than at the first connection.
        let mut store = RootCertStore::empty();
        for cert in &certs {
            store
                .add(cert.clone())
                .map_err(|e| format!("{shown} holds a certificate unusable as a root: {e}"))?;
        }
        Ok(RootCert {
            path: path.to_owned(),
            certs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCert")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

/// The TLS part of a connection string: what tokio-postgres's `Config` cannot hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
}

impl Default for DbTls {
    fn default() -> DbTls {
        DbTls {
            mode: SslMode::Prefer,
            root_cert: None,
        }
    }
}

impl DbTls {
    /// What a `Config` alone says: its `sslmode` (disable, prefer or require), no root file.
    pub fn of_config(config: &tokio_postgres::Config) -> DbTls {
        let mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
            // `Require` and any mode a later tokio-postgres adds: encrypt.
            _ => SslMode::Require,
        };
        DbTls {
            mode,
            root_cert: None,
        }
    }
}

/// Parses a connection string (URL or `key=value` form) as libpq would: `sslmode` may also be
/// `verify-ca` or `verify-full` and `sslrootcert` names a CA file, neither of which
/// tokio-postgres accepts, so both are taken out before it parses the rest. `root_cert_setting`
/// is the value of [`ROOT_CERT_SETTING`], used when the URL has no `sslrootcert`.
/// Errors never quote the string: it may hold a password.
pub fn parse_database_url(
    url: &str,
    root_cert_setting: Option<&str>,
) -> Result<(tokio_postgres::Config, DbTls), ConfigError> {
    let invalid = |why: String| ConfigError::Invalid { name: SETTING, why };
    let not_a_url = || {
        invalid(
            "not a PostgreSQL connection string (postgres://user:password@host:port/db?sslmode=require)"
                .into(),
        )
    };
    let (rest, params) = take_tls_params(url).ok_or_else(not_a_url)?;
    let mut mode = SslMode::Prefer;
    let mut root_path = None;
    for (key, value) in params {
        if key == "sslmode" {
            mode = SslMode::parse(&value).ok_or_else(|| {
                invalid(
                    "sslmode must be disable, allow, prefer, require, verify-ca or verify-full"
                        .into(),
                )
            })?;
        } else {
            root_path = Some(value);
        }
    }
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|_| not_a_url())?;
    config.ssl_mode(mode.for_tokio_postgres());
    let root_cert = match (root_path, root_cert_setting) {
        (Some(path), _) => Some(
            RootCert::read(Path::new(&path))
                .map_err(|why| invalid(format!("sslrootcert: {why}")))?,
        ),
        (None, Some(path)) if !path.trim().is_empty() => Some(
            RootCert::read(Path::new(path.trim())).map_err(|why| ConfigError::Invalid {
                name: ROOT_CERT_SETTING,
                why,
            })?,
        ),
        (None, _) => None,
    };
    Ok((config, DbTls { mode, root_cert }))
}

/// Splits `sslmode` and `sslrootcert` off a connection string; answers the rest and those
/// parameters (decoded) in order, or `None` when the string is malformed.
fn take_tls_params(url: &str) -> Option<(String, Vec<(String, String)>)> {
    let is_tls_key = |key: &str| key == "sslmode" || key == "sslrootcert";
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Where tokio-postgres looks for the query: after the credentials (the first '@'),
        // because a password may hold a '?'.
        let from = url.find('@').map_or(0, |at| at + 1);
        let Some(q) = url[from..].find('?').map(|q| from + q) else {
            return Some((url.to_owned(), taken));
        };
        let mut kept = Vec::new();
        for part in url[q + 1..].split('&') {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(key, false)?;
            if is_tls_key(&key) {
                taken.push((key, percent_decode(value, false)?));
            } else {
                kept.push(part);
            }
        }
        let mut rest = url[..q].to_owned();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        Some((rest, taken))
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in key_values(url)? {
            if is_tls_key(&key) {
                taken.push((key, value));
            } else {
                kept.push(raw);
            }
        }
        Some((kept.join(" "), taken))
    }
}

/// The `key = value` pairs of a libpq keyword/value string, each with its original text.
/// Values may be single-quoted with backslash escapes.
fn key_values(text: &str) -> Option<Vec<(String, String, &str)>> {
    let bytes = text.as_bytes();
    let skip_spaces = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut pairs = Vec::new();
    let mut i = skip_spaces(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_owned();
        i = skip_spaces(i);
        if bytes.get(i) != Some(&b'=') || key.is_empty() {
            return None;
        }
        i = skip_spaces(i + 1);
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i)? {
                    b'\'' => break,
                    b'\\' => {
                        value.push(*bytes.get(i + 1)?);
                        i += 2;
                    }
                    b => {
                        value.push(*b);
                        i += 1;
                    }
                }
            }
            i += 1;
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                value.push(*bytes.get(i)?);
                i += 1;
            }
        }
        pairs.push((key, String::from_utf8(value).ok()?, &text[start..i]));
        i = skip_spaces(i);
    }
    Some(pairs)
}

/// The one TLS connector of every database connection (pool, CLI, tools, tests): rustls with
/// the verifier `sslmode` asks for, and handshake errors that say which setting to change.
#[derive(Clone)]
pub struct Connector {
    inner: MakeRustlsConnect,
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl Connector {
    pub fn new(tls: &DbTls) -> Connector {
        // Our own provider rather than the process default, so nothing has to be installed
        // first and every connection uses the same algorithms.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = || {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for cert in tls.root_cert.iter().flat_map(|r| &r.certs) {
                // RootCert::read has already checked that each one can be added.
                let _ = roots.add(cert.clone());
            }
            Arc::new(roots)
        };
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match (tls.mode, &tls.root_cert) {
            (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => {
                Arc::new(AnyCertificate { algorithms })
            }
            (SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, _) => {
                Arc::new(ChainOnly {
                    roots: roots(),
                    algorithms,
                })
            }
            (SslMode::VerifyFull, _) => {
                WebPkiServerVerifier::builder_with_provider(roots(), provider.clone())
                    .build()
                    .expect("the Mozilla roots are never empty")
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Connector {
            inner: MakeRustlsConnect::new(config),
            mode: tls.mode,
            root_cert: tls.root_cert.as_ref().map(|r| r.path.clone()),
        }
    }
}

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = Handshake<<MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect>;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<Self::TlsConnect, Self::Error> {
        let inner = MakeTlsConnect::<S>::make_tls_connect(&mut self.inner, host)?;
        Ok(Handshake {
            inner,
            mode: self.mode,
            root_cert: self.root_cert.clone(),
        })
    }
}

/// One handshake of [`Connector`]: rustls's, with its error explained.
pub struct Handshake<T> {
    inner: T,
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl<S, T> TlsConnect<S> for Handshake<T>
where
    T: TlsConnect<S, Error = io::Error>,
    T::Future: Send + 'static,
    T::Stream: 'static,
{
    type Stream = T::Stream;
    type Error = TlsHandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<T::Stream, TlsHandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let Handshake {
            inner,
            mode,
            root_cert,
        } = self;
        let handshake = inner.connect(stream);
        Box::pin(async move {
            handshake.await.map_err(|source| TlsHandshakeError {
                mode,
                root_cert,
                source,
            })
        })
    }
}

/// A failed TLS handshake, worded for whoever sets `DATABASE_URL`.
#[derive(Debug)]
pub struct TlsHandshakeError {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    source: io::Error,
}

impl TlsHandshakeError {
    fn rustls(&self) -> Option<&rustls::Error> {
        self.source.get_ref()?.downcast_ref()
    }

    fn hint(&self) -> String {
        let roots = match &self.root_cert {
            Some(path) => format!("the Mozilla roots or {}", path.display()),
            None => "the Mozilla roots".to_owned(),
        };
        match self.rustls() {
            Some(e) if is_version_1(e) => "the server's certificate is X.509 version 1 (what \
                `openssl req -x509` or `openssl x509 -req` without extensions makes), which \
                cannot be verified: use sslmode=require to encrypt without verifying it, or give \
                the server a version-3 certificate and its CA as sslrootcert="
                .to_owned(),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => "the server's certificate does not name the host in DATABASE_URL: connect by a \
                   name or address its subjectAltName lists, or use sslmode=verify-ca to check \
                   only who signed it"
                .to_owned(),
            Some(rustls::Error::InvalidCertificate(_)) => format!(
                "the server's certificate is not signed by {roots}: give the CA that signed it \
                 as sslrootcert=/path/to/ca.pem (or {ROOT_CERT_SETTING}), or use sslmode=require \
                 to encrypt without verifying, or sslmode=prefer/disable"
            ),
            _ => "the server's TLS could not be used: use sslmode=prefer to fall back to plain \
                  text, or sslmode=disable"
                .to_owned(),
        }
    }
}

impl fmt::Display for TlsHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason: &dyn fmt::Display = match self.rustls() {
            Some(e) => e,
            None => &self.source,
        };
        write!(
            f,
            "{SETTING}: TLS handshake failed (sslmode={}): {reason}; {}",
            self.mode,
            self.hint()
        )
    }
}

// No `source()`: the reason is part of the message, and chains would print it twice.
impl std::error::Error for TlsHandshakeError {}

/// The handshake error inside a connection error, if the connection failed in the handshake.
pub fn handshake_error(error: &tokio_postgres::Error) -> Option<&TlsHandshakeError> {
    std::error::Error::source(error)?.downcast_ref()
}

fn is_version_1(error: &rustls::Error) -> bool {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::UnsupportedCertVersion)
        ),
        _ => false,
    }
}

/// A connection that failed, explained when TLS was the reason.
#[derive(Debug)]
pub struct ConnectError {
    mode: SslMode,
    error: tokio_postgres::Error,
}

impl ConnectError {
    pub fn into_postgres(self) -> tokio_postgres::Error {
        self.error
    }

    /// Whether TLS is why the connection failed (the handshake, or a server without TLS).
    pub fn is_tls(&self) -> bool {
        handshake_error(&self.error).is_some() || self.server_refused_tls()
    }

    /// Whether the server answered the request for TLS with "no". tokio-postgres has no error
    /// kind for it, only this message (pinned by the TLS integration test).
    fn server_refused_tls(&self) -> bool {
        std::error::Error::source(&self.error)
            .is_some_and(|cause| cause.to_string() == "server does not support TLS")
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(handshake) = handshake_error(&self.error) {
            write!(f, "{handshake}")
        } else if self.server_refused_tls() {
            write!(
                f,
                "{SETTING}: the server does not accept TLS connections (sslmode={}): turn on ssl \
                 on the server, or use sslmode=prefer/disable where plain text is acceptable",
                self.mode
            )
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl std::error::Error for ConnectError {}

/// Connects with `tls`, falling back to plain text for `prefer` when the handshake fails (as
/// libpq does), and spawns the connection task.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    tls: &DbTls,
    connector: &Connector,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), ConnectError> {
    let mut config = config.clone();
    config.ssl_mode(tls.mode.for_tokio_postgres());
    let fail = |error| ConnectError {
        mode: tls.mode,
        error,
    };
    let (client, connection) = match config.connect(connector.clone()).await {
        Ok(pair) => pair,
        Err(e) if tls.mode == SslMode::Prefer && handshake_error(&e).is_some() => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{}; sslmode=prefer falls back to an unencrypted connection (set sslmode=\
                     disable in {SETTING} to skip the attempt, or fix the certificate and use \
                     sslmode=require or verify-full to refuse plain text)",
                    handshake_error(&e).expect("matched above")
                );
            }
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            config.connect(connector.clone()).await.map_err(fail)?
        }
        Err(e) => return Err(fail(e)),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok((client, task))
}

/// Accepts any certificate (`prefer` and `require` without a root file, as libpq), but still
/// checks that the server holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(false, message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(true, message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks the chain to a trusted root but not the host name (`verify-ca`).
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks a handshake signature with the certificate's key. webpki parses only version-3
/// certificates, so for a version-1 one (common on self-signed servers) the key is read from
/// the certificate here and checked as a raw public key: the same algorithms, the same check.
fn verify_signature(
    tls13: bool,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let checked = if tls13 {
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    } else {
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    };
    match checked {
        Err(e) if is_version_1(&e) => {}
        other => return other,
    }
    let spki = subject_public_key_info(cert).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))?;
    let spki = SubjectPublicKeyInfoDer::from(spki);
    if tls13 {
        return rustls::crypto::verify_tls13_signature_with_raw_key(
            message, &spki, dss, algorithms,
        );
    }
    // rustls has no raw-key check for TLS 1.2; as its certificate check does, try each
    // algorithm the scheme maps to until one fits the key's type.
    let key = webpki::RawPublicKeyEntity::try_from(&spki)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let candidates = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algs)| *algs)
        .ok_or(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ))?;
    for alg in candidates {
        match key.verify_signature(*alg, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => continue,
            Err(_) => break,
        }
    }
    Err(rustls::Error::InvalidCertificate(
        CertificateError::BadSignature,
    ))
}

/// The DER of a certificate's subjectPublicKeyInfo, of any X.509 version.
fn subject_public_key_info(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use x509_cert::der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    cert.tbs_certificate.subject_public_key_info.to_der().ok()
}

/// Makes rustls on ring the process's default crypto provider (idempotent), as the database
/// connections use. A reqwest client built with `rustls-no-provider` (the Lambda host's AWS
/// calls; in a workspace build every reqwest client gets that feature) needs one installed
/// before it is built: every program and test that builds an HTTP client calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> (tokio_postgres::Config, DbTls) {
        parse_database_url(url, None).unwrap()
    }

    #[test]
    fn libpq_modes_are_read_and_taken_out_of_the_url() {
        let (config, tls) =
            parsed("postgres://u:p@h:5433/db?sslmode=verify-full&application_name=x");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_application_name(), Some("x"));
        assert_eq!(config.get_ports(), &[5433]);
        let (config, tls) = parsed("postgresql://h/db?sslmode=disable");
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert_eq!(parsed("postgres://h/db").1, DbTls::default());
        assert_eq!(
            parsed("postgres://h/db?sslmode=allow").1.mode,
            SslMode::Prefer
        );
        assert_eq!(
            parsed("postgres://h/db?sslmode=verify-ca").1.mode,
            SslMode::VerifyCa
        );
        assert_eq!(
            parsed("postgres://h/db?sslmode=require").1.mode,
            SslMode::Require
        );
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let (config, tls) = parsed("postgres://u:a?b@h/db?sslmode=verify-ca");
        assert_eq!(config.get_password(), Some(&b"a?b"[..]));
        assert_eq!(tls.mode, SslMode::VerifyCa);
    }

    #[test]
    fn keyword_value_strings_work_too() {
        let (config, tls) =
            parsed("host=h dbname=db password='it\\'s' sslmode = verify-full user=u");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(config.get_user(), Some("u"));
        assert_eq!(config.get_dbname(), Some("db"));
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        let (config, tls) = parsed(r"host=h password='a \' b' sslmode=require");
        assert_eq!(config.get_password(), Some(&b"a ' b"[..]));
        assert_eq!(tls.mode, SslMode::Require);
    }

    #[test]
    fn errors_name_the_setting_and_never_the_password() {
        for url in [
            "postgres://u:hunter2@h/db?sslmode=verify-everything",
            "postgres://u:hunter2@h/db?sslrootcert=/nonexistent/ca.pem",
            "postgres://u:hunter2@h/db?nonsense=1",
            "host=h password=hunter2 sslmode",
        ] {
            let err = parse_database_url(url, None).unwrap_err().to_string();
            assert!(err.contains("DATABASE_URL"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let err = parse_database_url("postgres://h/db", Some("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(ROOT_CERT_SETTING), "{err}");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_config_alone_keeps_its_mode() {
        let config = tokio_postgres::Config::from_str("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(DbTls::of_config(&config).mode, SslMode::Require);
        let config = tokio_postgres::Config::from_str("postgres://h/db").unwrap();
        assert_eq!(DbTls::of_config(&config), DbTls::default());
    }
}
