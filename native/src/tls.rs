//! The TLS engine: rustls (aws-lc-rs provider) server sessions fed raw TCP bytes.
//!
//! Theory of operation: a [`TlsConfig`] holds the server certificate(s), the trust (CA roots
//! plus an allow-set of client certificate fingerprints) and the resumption state (session
//! cache and ticket keys).  Trust can be replaced at run time with [`TlsConfig::update`]: it
//! builds a new rustls `ServerConfig` sharing the same certificates, cache and ticketer and
//! swaps an `Arc`, so sessions that start afterwards see it and resumption keeps working.
//!
//! A [`ServerSession`] is sans-IO: [`ServerSession::receive`] takes whatever TCP delivered
//! and returns the bytes to write plus every complete KMIP message (TTLV framing: 8-byte
//! header, declared length checked against the cap before the body is buffered), in
//! zeroizing buffers; [`ServerSession::send`] encrypts a response.  Session secrets never
//! leave this module.
//!
//! Client trust ([`ClientVerifier`]): a certificate whose SHA-256 fingerprint is in the
//! allow-set is accepted if it is currently valid and usable for client authentication
//! (self-signed or of a foreign CA); any other must chain to the CA roots (webpki), which
//! include the CAs of CA + subject rules (the subject is judged by the caller, from
//! [`ServerSession::peer_certificate`]).  rustls checks the handshake signature with the
//! provider's algorithms in both cases.  A refusal keeps its reason, the certificate's
//! identity and its DER (to show and allow later): the verifier leaves its verdict in a
//! thread-local slot that the session reads right after `process_new_packets` on the same
//! thread, because rustls's error carries no certificate.  A resumed session skips
//! certificate verification in rustls, so the session re-checks the stored peer chain
//! against the *current* trust before any application data is read.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as RustlsError,
    HandshakeKind, PeerIncompatible, RootCertStore, ServerConfig, ServerConnection,
    SignatureScheme, SupportedProtocolVersion,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use zeroize::{Zeroize, Zeroizing};

use crate::ttlv;

pub use hello::{peek_client_hello, Engine};

/// A configuration that cannot be built: bad PEM, a key that does not match, bad roots.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no certificate in {0}")]
    NoCertificate(&'static str),
    #[error("bad PEM in {0}: {1}")]
    BadPem(&'static str, String),
    #[error("unusable server key or certificate: {0}")]
    BadKey(RustlsError),
    #[error("bad CA root: {0}")]
    BadRoot(String),
    #[error("bad fingerprint {0:?}: expected 64 hex digits (SHA-256 of the DER)")]
    BadFingerprint(String),
    #[error("bad minimum TLS version {0:?}: expected \"1.2\" or \"1.3\"")]
    BadVersion(String),
    #[error("TLS configuration: {0}")]
    Rustls(RustlsError),
}

/// Who the client is: its certificate's SHA-256 fingerprint (lowercase hex of the DER, as
/// `kmipfast.pki.fingerprint`), subject and issuer as RFC 4514 strings (the same text as
/// `cryptography`'s `Name.rfc4514_string()`), and the end of its validity (POSIX seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub fingerprint: String,
    pub subject: String,
    pub issuer: String,
    pub not_after: i64,
}

/// Why a session ended in failure.  `reason` is a stable code:
/// `unknown_ca`, `not_allowed`, `removed`, `expired`, `not_yet_valid`, `bad_usage`,
/// `bad_certificate`, `bad_signature`, `no_certificate`, `no_shared_cipher`, `version`,
/// `not_tls`, `peer_alert`, `protocol`, `message_too_large`, `bad_framing`, `closed`.
/// `to_write` holds what must still go to the peer (an alert or close_notify).
#[derive(Debug, Error)]
#[error("{reason}: {message}")]
pub struct TlsFailure {
    pub reason: &'static str,
    pub message: String,
    pub peer: Option<Box<PeerIdentity>>,
    pub to_write: Vec<u8>,
}

/// Everything the server needs to start: PEM inputs and limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Server certificate chain (leaf first) and its key, ECDSA P-256 by default.
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Zeroizing<Vec<u8>>,
    /// An optional second identity (typically RSA), chosen when the client cannot verify
    /// the first one's signatures.
    pub extra_cert_chain_pem: Option<Vec<u8>>,
    pub extra_key_pem: Option<Zeroizing<Vec<u8>>>,
    pub ca_roots_pem: Vec<u8>,
    pub allowed_fingerprints: Vec<String>,
    pub max_message_size: usize,
    /// Entries of the stateful session cache (TLS 1.2 session IDs, TLS 1.3 without tickets).
    pub session_cache_size: usize,
    /// Issue resumption tickets (TLS 1.3 and 1.2).
    pub tickets: bool,
    /// "1.2" or "1.3".
    pub min_version: String,
}

impl Settings {
    pub fn new(cert_chain_pem: &[u8], key_pem: &[u8], ca_roots_pem: &[u8]) -> Settings {
        Settings {
            cert_chain_pem: cert_chain_pem.to_vec(),
            key_pem: Zeroizing::new(key_pem.to_vec()),
            extra_cert_chain_pem: None,
            extra_key_pem: None,
            ca_roots_pem: ca_roots_pem.to_vec(),
            allowed_fingerprints: Vec::new(),
            max_message_size: 16 * 1024 * 1024,
            session_cache_size: 8192,
            tickets: true,
            min_version: "1.2".into(),
        }
    }
}

// ---- trust ----------------------------------------------------------------------------

/// The verifier's verdict on the last certificate it saw on this thread (see module doc).
type Verdict = Result<PeerIdentity, (&'static str, String, Option<PeerIdentity>)>;

thread_local! {
    static VERDICT: RefCell<Option<Verdict>> = const { RefCell::new(None) };
    /// The DER of the last certificate the verifier refused on this thread, so that the
    /// operator can be shown (and allow) exactly that certificate.
    static REFUSED_DER: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

fn take_verdict() -> Option<Verdict> {
    VERDICT.with(|v| v.borrow_mut().take())
}

fn take_refused_der() -> Option<Vec<u8>> {
    REFUSED_DER.with(|v| v.borrow_mut().take())
}

/// Accepts allow-listed certificates by fingerprint, others by chain to the CA roots.
#[derive(Debug)]
pub struct ClientVerifier {
    allowed: HashSet<String>,
    roots: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

/// A refused certificate: the alert's error, the reason code, a message, its identity.
pub type Refusal = Box<(CertificateError, &'static str, String, Option<PeerIdentity>)>;

fn refuse(
    e: CertificateError,
    reason: &'static str,
    message: String,
    id: Option<PeerIdentity>,
) -> Refusal {
    Box::new((e, reason, message, id))
}

impl ClientVerifier {
    fn new(
        provider: &Arc<CryptoProvider>,
        roots_pem: &[u8],
        allowed: &[String],
    ) -> Result<ClientVerifier, ConfigError> {
        let allowed = allowed
            .iter()
            .map(|f| normalize_fingerprint(f))
            .collect::<Result<HashSet<_>, _>>()?;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(roots_pem) {
            let cert = cert.map_err(|e| ConfigError::BadPem("CA roots", e.to_string()))?;
            store
                .add(cert)
                .map_err(|e| ConfigError::BadRoot(e.to_string()))?;
        }
        let roots = if store.is_empty() {
            None
        } else {
            Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
                    .clear_root_hint_subjects()
                    .build()
                    .map_err(|e| ConfigError::BadRoot(e.to_string()))?,
            )
        };
        Ok(ClientVerifier {
            allowed,
            roots,
            provider: provider.clone(),
        })
    }

    /// Whether `fingerprint` (normalized) is in the allow-set.
    pub fn is_allowed(&self, fingerprint: &str) -> bool {
        self.allowed.contains(fingerprint)
    }

    /// The whole decision, signature excepted (rustls asks for that separately).
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<PeerIdentity, Refusal> {
        let (id, cert) = match parse(end_entity) {
            Ok(v) => v,
            Err(msg) => {
                return Err(refuse(
                    CertificateError::BadEncoding,
                    "bad_certificate",
                    msg,
                    None,
                ))
            }
        };
        let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
        if self.allowed.contains(&id.fingerprint) {
            let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            let v = cert.validity();
            if now < v.not_before.timestamp() {
                let msg = format!("certificate not valid before {}", v.not_before);
                return Err(refuse(
                    CertificateError::NotValidYet,
                    "not_yet_valid",
                    msg,
                    Some(id),
                ));
            }
            if now > v.not_after.timestamp() {
                let msg = format!("certificate expired at {}", v.not_after);
                return Err(refuse(CertificateError::Expired, "expired", msg, Some(id)));
            }
            if let Err(msg) = client_usage(&cert) {
                return Err(refuse(
                    CertificateError::InvalidPurpose,
                    "bad_usage",
                    msg,
                    Some(id),
                ));
            }
            return Ok(id);
        }
        if self_issued {
            let msg = "self-signed certificate not in the allow-list".to_string();
            return Err(refuse(
                CertificateError::UnknownIssuer,
                "not_allowed",
                msg,
                Some(id),
            ));
        }
        let Some(roots) = &self.roots else {
            let msg = format!("no CA root configured; issuer {}", id.issuer);
            return Err(refuse(
                CertificateError::UnknownIssuer,
                "unknown_ca",
                msg,
                Some(id),
            ));
        };
        match roots.verify_client_cert(end_entity, intermediates, now) {
            Ok(_) => Ok(id),
            Err(RustlsError::InvalidCertificate(e)) => {
                let (reason, msg) = certificate_reason(&e, &id);
                Err(refuse(e, reason, msg, Some(id)))
            }
            Err(other) => Err(refuse(
                CertificateError::BadEncoding,
                "bad_certificate",
                other.to_string(),
                Some(id),
            )),
        }
    }
}

fn certificate_reason(e: &CertificateError, id: &PeerIdentity) -> (&'static str, String) {
    use CertificateError as C;
    match e {
        C::UnknownIssuer => (
            "unknown_ca",
            format!("issuer {} is not a CA root", id.issuer),
        ),
        C::Expired | C::ExpiredContext { .. } => ("expired", e.to_string()),
        C::NotValidYet | C::NotValidYetContext { .. } => ("not_yet_valid", e.to_string()),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => ("bad_usage", e.to_string()),
        #[allow(deprecated)]
        C::BadSignature
        | C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. } => ("bad_signature", e.to_string()),
        _ => ("bad_certificate", e.to_string()),
    }
}

/// Key usage and extended key usage, when present, must allow TLS client authentication.
fn client_usage(cert: &X509Certificate<'_>) -> Result<(), String> {
    match cert.extended_key_usage() {
        Ok(Some(eku)) if !(eku.value.client_auth || eku.value.any) => {
            return Err("extended key usage does not include clientAuth".into())
        }
        Err(e) => return Err(format!("bad extended key usage: {e}")),
        _ => {}
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !(ku.value.digital_signature() || ku.value.key_agreement()) => {
            Err("key usage allows neither digitalSignature nor keyAgreement".into())
        }
        Err(e) => Err(format!("bad key usage: {e}")),
        _ => Ok(()),
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Empty: "any certificate you have" (RFC 8446 §4.2.4, RFC 5246 §7.4.4), so clients
        // with self-signed or foreign-CA certificates still send them.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        let verdict = self.check(end_entity, intermediates, now);
        let result = match &verdict {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(r) => Err(RustlsError::InvalidCertificate(r.0.clone())),
        };
        let verdict = verdict.map_err(|r| {
            REFUSED_DER.with(|v| *v.borrow_mut() = Some(end_entity.as_ref().to_vec()));
            let (_, reason, msg, id) = *r;
            (reason, msg, id)
        });
        VERDICT.with(|v| *v.borrow_mut() = Some(verdict));
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Lowercase hex without separators; accepts upper case and `:`-separated input.
pub fn normalize_fingerprint(f: &str) -> Result<String, ConfigError> {
    let s: String = f
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(ConfigError::BadFingerprint(f.to_string()))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of the DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<(PeerIdentity, X509Certificate<'a>), String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let id = PeerIdentity {
        fingerprint: fingerprint(der.as_ref()),
        subject: rfc4514(cert.subject()),
        issuer: rfc4514(cert.issuer()),
        not_after: cert.validity().not_after.timestamp(),
    };
    Ok((id, cert))
}

/// The identity of a DER certificate (fingerprint, RFC 4514 subject and issuer).
pub fn identity_of(der: &[u8]) -> Result<PeerIdentity, String> {
    parse(&CertificateDer::from(der)).map(|(id, _)| id)
}

/// RFC 4514 text of a name, byte for byte what pyca/cryptography's `rfc4514_string()`
/// gives: RDNs last to first, its short names (others as dotted OIDs), its escaping.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    const SHORT: &[(&str, &str)] = &[
        ("2.5.4.3", "CN"),
        ("2.5.4.7", "L"),
        ("2.5.4.8", "ST"),
        ("2.5.4.10", "O"),
        ("2.5.4.11", "OU"),
        ("2.5.4.6", "C"),
        ("2.5.4.9", "STREET"),
        ("0.9.2342.19200300.100.1.25", "DC"),
        ("0.9.2342.19200300.100.1.1", "UID"),
    ];
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    let key = SHORT
                        .iter()
                        .find(|(o, _)| *o == oid)
                        .map_or(oid.clone(), |(_, k)| (*k).to_string());
                    let value = match attr.as_str() {
                        Ok(s) => escape_dn_value(s),
                        Err(_) => format!("#{}", hex(attr.as_slice())),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' | '"' | '+' | ',' | ';' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    if out.starts_with('#') || out.starts_with(' ') {
        out.insert(0, '\\');
    }
    if out.ends_with(' ') && !out.ends_with("\\ ") {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

// ---- configuration ---------------------------------------------------------------------

/// Chooses the first certificate whose key can sign with a scheme the client offers.
#[derive(Debug)]
struct CertResolver {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        self.keys
            .iter()
            .find(|k| k.key.choose_scheme(offered).is_some())
            .or(self.keys.first())
            .cloned()
    }
}

/// What sessions started now use; replaced whole by [`TlsConfig::update`].
#[derive(Debug)]
struct Snapshot {
    server: Arc<ServerConfig>,
    verifier: Arc<ClientVerifier>,
}

/// What does not change when trust is updated.
#[derive(Debug)]
struct Shared {
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    cache: Arc<ServerSessionMemoryCache>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
    versions: &'static [&'static SupportedProtocolVersion],
}

impl Shared {
    fn snapshot(&self, verifier: Arc<ClientVerifier>) -> Result<Arc<Snapshot>, ConfigError> {
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.versions)
            .map_err(ConfigError::Rustls)?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(self.resolver.clone());
        // Shared across updates, so sessions resume across a trust change (and are then
        // re-checked, see ServerSession::on_handshake_done).
        server.session_storage = self.cache.clone();
        match &self.ticketer {
            Some(t) => server.ticketer = t.clone(),
            None => server.send_tls13_tickets = 0,
        }
        server.max_early_data_size = 0;
        Ok(Arc::new(Snapshot {
            server: Arc::new(server),
            verifier,
        }))
    }
}

/// Certificates, trust and resumption state shared by all sessions of a listener.
#[derive(Debug)]
pub struct TlsConfig {
    shared: Shared,
    max_message: usize,
    current: RwLock<Arc<Snapshot>>,
}

static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
static ONLY13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn certified_key(
    provider: &CryptoProvider,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, ConfigError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::BadPem("certificate chain", e.to_string()))?;
    if chain.is_empty() {
        return Err(ConfigError::NoCertificate("certificate chain"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| ConfigError::BadPem("private key", e.to_string()))?;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(ConfigError::BadKey)?;
    Ok(Arc::new(ck))
}

impl TlsConfig {
    pub fn new(s: &Settings) -> Result<Arc<TlsConfig>, ConfigError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut keys = vec![certified_key(&provider, &s.cert_chain_pem, &s.key_pem)?];
        if let (Some(c), Some(k)) = (&s.extra_cert_chain_pem, &s.extra_key_pem) {
            keys.push(certified_key(&provider, c, k)?);
        }
        let versions = match s.min_version.as_str() {
            "1.2" => BOTH,
            "1.3" => ONLY13,
            other => return Err(ConfigError::BadVersion(other.to_string())),
        };
        let ticketer = if s.tickets {
            Some(aws_lc_rs::Ticketer::new().map_err(ConfigError::Rustls)?)
        } else {
            None
        };
        let verifier = ClientVerifier::new(&provider, &s.ca_roots_pem, &s.allowed_fingerprints)?;
        let shared = Shared {
            provider,
            resolver: Arc::new(CertResolver { keys }),
            cache: ServerSessionMemoryCache::new(s.session_cache_size.max(1)),
            ticketer,
            versions,
        };
        let first = shared.snapshot(Arc::new(verifier))?;
        Ok(Arc::new(TlsConfig {
            shared,
            max_message: s.max_message_size,
            current: RwLock::new(first),
        }))
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces CA roots and allow-set for sessions that start (or resume) from now on.
    pub fn update(&self, ca_roots_pem: &[u8], allowed: &[String]) -> Result<(), ConfigError> {
        let verifier = ClientVerifier::new(&self.shared.provider, ca_roots_pem, allowed)?;
        let next = self.shared.snapshot(Arc::new(verifier))?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
        Ok(())
    }

    /// Whether a fingerprint is in the current allow-set.
    pub fn is_allowed(&self, fingerprint: &str) -> bool {
        normalize_fingerprint(fingerprint).is_ok_and(|f| self.snapshot().verifier.is_allowed(&f))
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Signature schemes the server's keys can sign with, for [`peek_client_hello`].
    pub fn server_schemes(&self) -> Vec<SignatureScheme> {
        hello::CANDIDATE_SCHEMES
            .iter()
            .copied()
            .filter(|s| {
                self.shared
                    .resolver
                    .keys
                    .iter()
                    .any(|k| k.key.choose_scheme(&[*s]).is_some())
            })
            .collect()
    }

    /// Which engine should serve a connection whose first bytes are `data`.
    pub fn choose_engine(&self, data: &[u8]) -> Option<Engine> {
        hello::choose_engine(
            data,
            &self.server_schemes(),
            self.shared.versions.len() == 1,
        )
    }
}

// ---- sessions ------------------------------------------------------------------------------

/// What one [`ServerSession::receive`] produced.
#[derive(Debug, Default)]
pub struct Received {
    /// Bytes to write to the peer now (handshake flights, tickets, alerts).
    pub to_write: Vec<u8>,
    /// Complete KMIP messages (header included), in order.
    pub frames: Vec<Zeroizing<Vec<u8>>>,
    /// The peer sent close_notify.
    pub closed: bool,
    pub handshake_done: bool,
}

/// One server-side TLS connection.
pub struct ServerSession {
    conn: ServerConnection,
    config: Arc<TlsConfig>,
    /// Decrypted bytes not yet framed; `start` is where the next message begins.
    plain: Zeroizing<Vec<u8>>,
    peer: Option<PeerIdentity>,
    /// The client certificate that was refused, when one was.
    refused_der: Option<Vec<u8>>,
    handshake_done: bool,
    failed: Option<(&'static str, String)>,
    closed: bool,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("peer", &self.peer)
            .field("handshake_done", &self.handshake_done)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Makes room for `n` more bytes without leaving plaintext in a freed allocation: grows by
/// moving into a new zeroizing buffer, so the old one is wiped when dropped.
fn reserve_wiped(buf: &mut Zeroizing<Vec<u8>>, n: usize) {
    if buf.capacity() - buf.len() < n {
        let mut bigger = Zeroizing::new(Vec::with_capacity(
            (buf.len() + n).max(2 * buf.capacity()).max(4096),
        ));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
}

fn failure_of(e: &RustlsError, handshake_done: bool) -> (&'static str, String) {
    use rustls::InvalidMessage as M;
    let reason = match e {
        RustlsError::NoCertificatesPresented => "no_certificate",
        RustlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "bad_usage"
            }
            _ => "bad_certificate",
        },
        RustlsError::PeerIncompatible(p) => match p {
            PeerIncompatible::NoCipherSuitesInCommon
            | PeerIncompatible::NoKxGroupsInCommon
            | PeerIncompatible::NoSignatureSchemesInCommon => "no_shared_cipher",
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic
            | PeerIncompatible::SupportedVersionsExtensionRequired => "version",
            _ => "protocol",
        },
        RustlsError::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion)
            if !handshake_done =>
        {
            "not_tls"
        }
        RustlsError::AlertReceived(_) => "peer_alert",
        _ => "protocol",
    };
    let message = match e {
        RustlsError::AlertReceived(a) => format!("the client sent alert {a:?}"),
        other => other.to_string(),
    };
    (reason, message)
}

impl ServerSession {
    pub fn new(config: &Arc<TlsConfig>) -> Result<ServerSession, TlsFailure> {
        let snap = config.snapshot();
        let mut conn = ServerConnection::new(snap.server.clone()).map_err(|e| TlsFailure {
            reason: "protocol",
            message: e.to_string(),
            peer: None,
            to_write: Vec::new(),
        })?;
        conn.set_buffer_limit(None);
        Ok(ServerSession {
            conn,
            config: config.clone(),
            plain: Zeroizing::new(Vec::new()),
            peer: None,
            refused_der: None,
            handshake_done: false,
            failed: None,
            closed: false,
        })
    }

    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// DER of the client's end-entity certificate: the verified one once the handshake is
    /// done, else the one that was refused (if any).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self.conn.peer_certificates().and_then(|c| c.first()) {
            Some(ee) => Some(ee.as_ref().to_vec()),
            None => self.refused_der.clone(),
        }
    }

    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    pub fn resumed(&self) -> bool {
        matches!(self.conn.handshake_kind(), Some(HandshakeKind::Resumed))
    }

    /// "TLSv1.2" / "TLSv1.3" once negotiated.
    pub fn protocol_version(&self) -> Option<&'static str> {
        match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            _ => None,
        }
    }

    /// The IANA name of the negotiated cipher suite.
    pub fn cipher_suite(&self) -> Option<&'static str> {
        self.conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
    }

    /// The failure that ended this session, if one did.
    pub fn error(&self) -> Option<(&'static str, &str)> {
        self.failed.as_ref().map(|(r, m)| (*r, m.as_str()))
    }

    /// Whether the peer has sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.closed
    }

    fn drain_tls(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn fail(
        &mut self,
        reason: &'static str,
        message: String,
        peer: Option<PeerIdentity>,
        mut to_write: Vec<u8>,
    ) -> TlsFailure {
        self.drain_tls(&mut to_write);
        self.failed = Some((reason, message.clone()));
        self.plain.zeroize();
        TlsFailure {
            reason,
            message,
            peer: peer.or_else(|| self.peer.clone()).map(Box::new),
            to_write,
        }
    }

    /// Feeds bytes from the network; returns what to write and every complete message.
    /// Any `Err` is final: write its `to_write` and close the connection.
    pub fn receive(&mut self, mut data: &[u8]) -> Result<Received, TlsFailure> {
        if let Some((reason, message)) = &self.failed {
            return Err(TlsFailure {
                reason,
                message: message.clone(),
                peer: self.peer.clone().map(Box::new),
                to_write: Vec::new(),
            });
        }
        let mut out = Received::default();
        while !data.is_empty() {
            if let Err(e) = self.conn.read_tls(&mut data) {
                return Err(self.fail("protocol", e.to_string(), None, out.to_write));
            }
            let _ = take_verdict();
            let _ = take_refused_der();
            let processed = self.conn.process_new_packets();
            let verdict = take_verdict();
            let refused_der = take_refused_der();
            let state = match processed {
                Ok(state) => state,
                Err(e) => {
                    self.refused_der = refused_der;
                    let (mut reason, mut message) = failure_of(&e, self.handshake_done);
                    let mut peer = None;
                    if let Some(Err((r, m, id))) = verdict {
                        (reason, message, peer) = (r, m, id);
                    }
                    return Err(self.fail(reason, message, peer, out.to_write));
                }
            };
            if let Some(Ok(id)) = verdict {
                self.peer = Some(id);
            }
            if !self.handshake_done && !self.conn.is_handshaking() {
                self.on_handshake_done(&mut out.to_write)?;
            }
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = self.plain.len();
                reserve_wiped(&mut self.plain, n);
                self.plain.resize(start + n, 0);
                match self.conn.reader().read(&mut self.plain[start..]) {
                    Ok(k) => self.plain.truncate(start + k),
                    Err(e) => return Err(self.fail("protocol", e.to_string(), None, out.to_write)),
                }
            }
            self.frame(&mut out.frames).map_err(|(reason, message)| {
                self.conn.send_close_notify();
                self.fail(reason, message, None, std::mem::take(&mut out.to_write))
            })?;
            if state.peer_has_closed() {
                self.closed = true;
            }
        }
        self.drain_tls(&mut out.to_write);
        out.closed = self.closed;
        out.handshake_done = self.handshake_done;
        Ok(out)
    }

    /// Identity of the peer and, for a resumed session, the re-check against current trust.
    fn on_handshake_done(&mut self, to_write: &mut Vec<u8>) -> Result<(), TlsFailure> {
        let resumed = self.resumed();
        if self.peer.is_none() || resumed {
            let chain = self.conn.peer_certificates().unwrap_or(&[]);
            let Some((ee, rest)) = chain.split_first() else {
                let msg = "no client certificate after handshake".to_string();
                self.conn.send_close_notify();
                return Err(self.fail("no_certificate", msg, None, std::mem::take(to_write)));
            };
            let verifier = self.config.snapshot().verifier.clone();
            match verifier.check(ee, rest, UnixTime::now()) {
                Ok(id) => self.peer = Some(id),
                Err(r) => {
                    self.refused_der = Some(ee.as_ref().to_vec());
                    let (_, reason, msg, id) = *r;
                    let reason = match reason {
                        "not_allowed" | "unknown_ca" if resumed => "removed",
                        r => r,
                    };
                    let msg = if resumed {
                        format!("resumed session refused: {msg}")
                    } else {
                        msg
                    };
                    self.conn.send_close_notify();
                    return Err(self.fail(reason, msg, id, std::mem::take(to_write)));
                }
            }
        }
        self.handshake_done = true;
        Ok(())
    }

    /// Moves every complete message out of `plain`.
    fn frame(
        &mut self,
        frames: &mut Vec<Zeroizing<Vec<u8>>>,
    ) -> Result<(), (&'static str, String)> {
        let mut start = 0;
        loop {
            let rest = &self.plain[start..];
            match ttlv::frame_length(rest, self.config.max_message) {
                Ok(Some(n)) if rest.len() >= n => {
                    frames.push(Zeroizing::new(rest[..n].to_vec()));
                    start += n;
                }
                Ok(_) => break,
                Err(e) => {
                    let reason = if e.kind == ttlv::ErrorKind::MessageTooLarge {
                        "message_too_large"
                    } else {
                        "bad_framing"
                    };
                    return Err((reason, e.to_string()));
                }
            }
        }
        if start > 0 {
            let len = self.plain.len();
            self.plain.copy_within(start.., 0);
            self.plain[len - start..].zeroize();
            self.plain.truncate(len - start);
        }
        Ok(())
    }

    /// Encrypts one response; the bytes go to the peer as they are.
    pub fn send(&mut self, plain: &[u8]) -> Result<Vec<u8>, TlsFailure> {
        if let Some((reason, message)) = &self.failed {
            return Err(TlsFailure {
                reason,
                message: message.clone(),
                peer: self.peer.clone().map(Box::new),
                to_write: Vec::new(),
            });
        }
        if let Err(e) = self.conn.writer().write_all(plain) {
            return Err(self.fail("protocol", e.to_string(), None, Vec::new()));
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        self.drain_tls(&mut out);
        Ok(out)
    }

    /// close_notify, to write before closing the connection.
    pub fn close(&mut self) -> Vec<u8> {
        self.conn.send_close_notify();
        let mut out = Vec::new();
        self.drain_tls(&mut out);
        self.plain.zeroize();
        out
    }
}

// ---- engine choice ---------------------------------------------------------------------

/// Reads the ClientHello, before any engine sees it, to pick rustls or OpenSSL.
pub mod hello {
    use rustls::{SignatureAlgorithm, SignatureScheme};

    /// Which TLS engine serves a connection.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Engine {
        Rustls,
        OpenSsl,
    }

    impl Engine {
        pub fn name(self) -> &'static str {
            match self {
                Engine::Rustls => "rustls",
                Engine::OpenSsl => "openssl",
            }
        }
    }

    /// Schemes a server key might sign with, in the order tried.
    pub const CANDIDATE_SCHEMES: &[SignatureScheme] = &[
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::ECDSA_NISTP521_SHA512,
        SignatureScheme::ED25519,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA512,
    ];

    /// ECDSA P-256 and RSA keys: what [`peek_client_hello`] assumes without a config.
    const DEFAULT_SCHEMES: &[SignatureScheme] = &[
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PSS_SHA512,
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA512,
    ];

    /// The aws-lc-rs provider's suites and groups (all ECDHE + AEAD).
    const TLS13_SUITES: &[u16] = &[0x1301, 0x1302, 0x1303];
    const TLS12_ECDSA_SUITES: &[u16] = &[0xc02b, 0xc02c, 0xcca9];
    const TLS12_RSA_SUITES: &[u16] = &[0xc02f, 0xc030, 0xcca8];
    const GROUPS: &[u16] = &[0x001d, 0x0017, 0x0018, 0x11ec];

    /// A ClientHello bigger than this is not worth peeking at: rustls will judge it.
    const MAX_HELLO: usize = 64 * 1024;

    enum Collected {
        NeedMore,
        Decided(Engine),
        Hello(Vec<u8>),
    }

    /// Reassembles the ClientHello handshake message from the records at the start of `data`.
    fn collect(data: &[u8]) -> Collected {
        let Some(&first) = data.first() else {
            return Collected::NeedMore;
        };
        if first != 0x16 {
            // An SSLv2-format ClientHello (high bit set) is a legacy client; anything else
            // is not TLS, and rustls gives the clean error for it.
            return Collected::Decided(if first & 0x80 != 0 {
                Engine::OpenSsl
            } else {
                Engine::Rustls
            });
        }
        let mut hs = Vec::new();
        let mut at = 0;
        loop {
            if hs.len() >= 4 {
                if hs[0] != 0x01 {
                    return Collected::Decided(Engine::Rustls);
                }
                let len =
                    (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
                if len > MAX_HELLO {
                    return Collected::Decided(Engine::Rustls);
                }
                if hs.len() >= 4 + len {
                    hs.truncate(4 + len);
                    hs.drain(..4);
                    return Collected::Hello(hs);
                }
            }
            let Some(header) = data.get(at..at + 5) else {
                return Collected::NeedMore;
            };
            if header[0] != 0x16 || header[1] != 0x03 {
                return Collected::Decided(Engine::Rustls);
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            let Some(fragment) = data.get(at + 5..at + 5 + len) else {
                return Collected::NeedMore;
            };
            hs.extend_from_slice(fragment);
            at += 5 + len;
        }
    }

    struct Cursor<'a>(&'a [u8]);

    impl<'a> Cursor<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Some(head)
        }
        fn u8(&mut self) -> Option<u8> {
            self.take(1).map(|b| b[0])
        }
        fn u16(&mut self) -> Option<u16> {
            self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
        }
        fn vec8(&mut self) -> Option<&'a [u8]> {
            let n = self.u8()?;
            self.take(usize::from(n))
        }
        fn vec16(&mut self) -> Option<&'a [u8]> {
            let n = self.u16()?;
            self.take(usize::from(n))
        }
    }

    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[derive(Default)]
    struct Hello {
        legacy_version: u16,
        suites: Vec<u16>,
        versions: Vec<u16>,
        groups: Vec<u16>,
        schemes: Vec<u16>,
    }

    fn parse(body: &[u8]) -> Option<Hello> {
        let mut c = Cursor(body);
        let mut h = Hello {
            legacy_version: c.u16()?,
            ..Hello::default()
        };
        c.take(32)?;
        c.vec8()?;
        h.suites = u16s(c.vec16()?);
        c.vec8()?;
        if c.0.is_empty() {
            return Some(h);
        }
        let mut ext = Cursor(c.vec16()?);
        while !ext.0.is_empty() {
            let kind = ext.u16()?;
            let mut data = Cursor(ext.vec16()?);
            match kind {
                0x002b => h.versions = u16s(data.vec8()?),
                0x000a => h.groups = u16s(data.vec16()?),
                0x000d => h.schemes = u16s(data.vec16()?),
                _ => {}
            }
        }
        Some(h)
    }

    fn algorithm(s: SignatureScheme) -> Option<SignatureAlgorithm> {
        use SignatureScheme as S;
        match s {
            S::ECDSA_NISTP256_SHA256 | S::ECDSA_NISTP384_SHA384 | S::ECDSA_NISTP521_SHA512 => {
                Some(SignatureAlgorithm::ECDSA)
            }
            S::RSA_PSS_SHA256
            | S::RSA_PSS_SHA384
            | S::RSA_PSS_SHA512
            | S::RSA_PKCS1_SHA256
            | S::RSA_PKCS1_SHA384
            | S::RSA_PKCS1_SHA512 => Some(SignatureAlgorithm::RSA),
            _ => None,
        }
    }

    fn any_in(offered: &[u16], known: &[u16]) -> bool {
        offered.iter().any(|x| known.contains(x))
    }

    /// `None` while the ClientHello is incomplete; otherwise the engine for it, given the
    /// schemes the server's keys can sign with.  OpenSSL when the client offers only
    /// TLS < 1.2, or no ECDHE + AEAD suite (with a group and signature scheme in common)
    /// that rustls serves.
    pub fn choose_engine(
        data: &[u8],
        server_schemes: &[SignatureScheme],
        tls13_only: bool,
    ) -> Option<Engine> {
        let body = match collect(data) {
            Collected::NeedMore => return None,
            Collected::Decided(e) => return Some(e),
            Collected::Hello(body) => body,
        };
        let Some(h) = parse(&body) else {
            return Some(Engine::Rustls);
        };
        let (offers13, offers12) = if h.versions.is_empty() {
            (false, h.legacy_version >= 0x0303)
        } else {
            (h.versions.contains(&0x0304), h.versions.contains(&0x0303))
        };
        let groups = any_in(&h.groups, GROUPS);
        let common = |alg: Option<SignatureAlgorithm>| {
            server_schemes.iter().any(|s| {
                h.schemes.contains(&u16::from(*s)) && alg.is_none_or(|a| algorithm(*s) == Some(a))
            })
        };
        let tls13 = offers13 && any_in(&h.suites, TLS13_SUITES) && groups && common(None);
        let tls12 = !tls13_only
            && offers12
            && groups
            && ((any_in(&h.suites, TLS12_ECDSA_SUITES) && common(Some(SignatureAlgorithm::ECDSA)))
                || (any_in(&h.suites, TLS12_RSA_SUITES) && common(Some(SignatureAlgorithm::RSA))));
        Some(if tls13 || tls12 {
            Engine::Rustls
        } else {
            Engine::OpenSsl
        })
    }

    /// [`choose_engine`] for a server with an ECDSA P-256 and an RSA certificate.
    pub fn peek_client_hello(data: &[u8]) -> Option<Engine> {
        choose_engine(data, DEFAULT_SCHEMES, false)
    }
}
