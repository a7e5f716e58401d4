//! The TLS engine (`tls.rs`) against an in-process rustls client: trust decisions, identity,
//! TLS 1.2 and 1.3, resumption re-checked after `update`, and TTLV framing over TLS.

use std::io::Write;
use std::sync::Arc;

use kmipfast_native::tls::{
    self, peek_client_hello, Engine, ServerSession, Settings, TlsConfig, TlsFailure,
};
use kmipfast_native::ttlv::Writer;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::client::{ClientConfig, ClientConnection};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{RootCertStore, SupportedProtocolVersion};
use sha2::{Digest, Sha256};

struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.cert.der()))
    }
}

fn ca(name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    Issued {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

fn leaf(name: &str, usage: ExtendedKeyUsagePurpose, issuer: Option<&Issued>) -> Issued {
    leaf_with(name, usage, issuer, |_| {})
}

fn leaf_with(
    name: &str,
    usage: ExtendedKeyUsagePurpose,
    issuer: Option<&Issued>,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "Acme, Inc.");
    p.extended_key_usages = vec![usage];
    tweak(&mut p);
    let cert = match issuer {
        Some(i) => p.signed_by(&key, &i.cert, &i.key).unwrap(),
        None => p.self_signed(&key).unwrap(),
    };
    Issued { cert, key }
}

struct World {
    ca: Issued,
    server: Issued,
    client: Issued,
}

fn world() -> World {
    let ca = ca("kmipfast test CA");
    let server = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth, Some(&ca));
    let client = leaf("vcenter", ExtendedKeyUsagePurpose::ClientAuth, Some(&ca));
    World { ca, server, client }
}

fn config(w: &World, allowed: &[String], max: usize) -> Arc<TlsConfig> {
    let mut s = Settings::new(
        w.server.cert.pem().as_bytes(),
        w.server.key.serialize_pem().as_bytes(),
        w.ca.cert.pem().as_bytes(),
    );
    s.allowed_fingerprints = allowed.to_vec();
    s.max_message_size = max;
    TlsConfig::new(&s).unwrap()
}

fn client_config(
    w: &World,
    who: &Issued,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(w.ca.cert.der().clone()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(who.key.serialize_pem().as_bytes()).unwrap();
    let cfg = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![CertificateDer::from(who.cert.der().to_vec())], key)
    .unwrap();
    Arc::new(cfg)
}

fn connect(cfg: &Arc<ClientConfig>) -> ClientConnection {
    ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Moves bytes both ways until neither side has anything to say; returns the frames.
fn pump(c: &mut ClientConnection, s: &mut ServerSession) -> Result<Vec<Vec<u8>>, TlsFailure> {
    let mut frames = Vec::new();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if buf.is_empty() {
            break;
        }
        let got = s.receive(&buf)?;
        frames.extend(got.frames.iter().map(|f| f.to_vec()));
        if !got.to_write.is_empty() {
            c.read_tls(&mut &got.to_write[..]).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    Ok(frames)
}

fn handshake(
    cfg: &Arc<ClientConfig>,
    server: &Arc<TlsConfig>,
) -> Result<ServerSession, TlsFailure> {
    let mut c = connect(cfg);
    let mut s = ServerSession::new(server)?;
    pump(&mut c, &mut s)?;
    assert!(!c.is_handshaking());
    Ok(s)
}

fn message(n: i32) -> Vec<u8> {
    let mut w = Writer::new();
    w.begin_structure(0x42_0078).unwrap();
    w.integer(0x42_000D, n).unwrap();
    w.byte_string(0x42_00C2, &[0x5a; 100], 1 << 20).unwrap();
    w.end_structure().unwrap();
    w.finish().unwrap()
}

const VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS12, &rustls::version::TLS13];

#[test]
fn ca_signed_client_accepted_with_its_fingerprint_tls12_and_tls13() {
    let w = world();
    let server = config(&w, &[], 1 << 20);
    for v in VERSIONS {
        let s = handshake(&client_config(&w, &w.client, v), &server).unwrap();
        assert!(s.handshake_done());
        let peer = s.peer().unwrap();
        assert_eq!(peer.fingerprint, w.client.fingerprint());
        // RFC 4514 lists the RDNs last first; rcgen wrote CN before O.
        assert_eq!(peer.subject, "O=Acme\\, Inc.,CN=vcenter");
        assert_eq!(peer.issuer, "CN=kmipfast test CA");
        assert!(!s.resumed());
    }
}

#[test]
fn self_signed_client_allowed_by_fingerprint() {
    let w = world();
    let me = leaf("vc.example", ExtendedKeyUsagePurpose::ClientAuth, None);
    let server = config(&w, &[me.fingerprint().to_uppercase()], 1 << 20);
    for v in VERSIONS {
        let s = handshake(&client_config(&w, &me, v), &server).unwrap();
        assert_eq!(s.peer().unwrap().fingerprint, me.fingerprint());
    }
}

fn refused(w: &World, server: &Arc<TlsConfig>, who: &Issued) -> TlsFailure {
    let err = handshake(&client_config(w, who, &rustls::version::TLS13), server).unwrap_err();
    assert!(!err.to_write.is_empty(), "an alert goes to the client");
    assert_eq!(err.peer.as_ref().unwrap().fingerprint, who.fingerprint());
    err
}

#[test]
fn unknown_expired_and_not_allowed_clients_refused_with_reason() {
    let w = world();
    let foreign_ca = ca("someone else's CA");
    let foreign = leaf(
        "array",
        ExtendedKeyUsagePurpose::ClientAuth,
        Some(&foreign_ca),
    );
    let stranger = leaf("stranger", ExtendedKeyUsagePurpose::ClientAuth, None);
    let expired = leaf_with("old", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let early = leaf_with("new", ExtendedKeyUsagePurpose::ClientAuth, None, |p| {
        p.not_before = date_time_ymd(2999, 1, 1);
        p.not_after = date_time_ymd(3000, 1, 1);
    });
    let server_only = leaf("srv", ExtendedKeyUsagePurpose::ServerAuth, None);
    let expired_ca_signed = leaf_with(
        "old2",
        ExtendedKeyUsagePurpose::ClientAuth,
        Some(&w.ca),
        |p| {
            p.not_before = date_time_ymd(2020, 1, 1);
            p.not_after = date_time_ymd(2021, 1, 1);
        },
    );
    let allowed = [
        expired.fingerprint(),
        early.fingerprint(),
        server_only.fingerprint(),
    ];
    let server = config(&w, &allowed, 1 << 20);
    assert_eq!(refused(&w, &server, &foreign).reason, "unknown_ca");
    assert_eq!(refused(&w, &server, &stranger).reason, "not_allowed");
    assert_eq!(refused(&w, &server, &expired).reason, "expired");
    assert_eq!(refused(&w, &server, &early).reason, "not_yet_valid");
    assert_eq!(refused(&w, &server, &server_only).reason, "bad_usage");
    assert_eq!(refused(&w, &server, &expired_ca_signed).reason, "expired");
    let err = refused(&w, &server, &foreign);
    assert_eq!(err.peer.unwrap().issuer, "CN=someone else's CA");
}

#[test]
fn resumption_rechecks_the_allow_set_after_update() {
    let w = world();
    let me = leaf("vc.example", ExtendedKeyUsagePurpose::ClientAuth, None);
    let roots = w.ca.cert.pem();
    for v in VERSIONS {
        let server = config(&w, &[me.fingerprint()], 1 << 20);
        let client = client_config(&w, &me, v);
        let first = handshake(&client, &server).unwrap();
        assert!(!first.resumed());
        // A trust change that keeps the client: resumption still works, identity kept.
        let other = leaf("x", ExtendedKeyUsagePurpose::ClientAuth, None).fingerprint();
        server
            .update(roots.as_bytes(), &[me.fingerprint(), other])
            .unwrap();
        let again = handshake(&client, &server).unwrap();
        assert!(again.resumed(), "{v:?} did not resume");
        assert_eq!(again.peer().unwrap().fingerprint, me.fingerprint());
        // Removed: the resumed handshake is refused before any request is read.
        server.update(roots.as_bytes(), &[]).unwrap();
        let mut c = connect(&client);
        let mut s = ServerSession::new(&server).unwrap();
        let err = pump(&mut c, &mut s).unwrap_err();
        assert!(s.resumed());
        assert_eq!(err.reason, "removed", "{v:?}: {err}");
        assert_eq!(err.peer.unwrap().fingerprint, me.fingerprint());
        assert!(!server.is_allowed(&me.fingerprint()));
    }
}

fn established(w: &World, max: usize) -> (ClientConnection, ServerSession) {
    let server = config(w, &[], max);
    let mut c = connect(&client_config(w, &w.client, &rustls::version::TLS13));
    let mut s = ServerSession::new(&server).unwrap();
    pump(&mut c, &mut s).unwrap();
    (c, s)
}

fn tls_bytes(c: &mut ClientConnection, plain: &[u8]) -> Vec<u8> {
    c.writer().write_all(plain).unwrap();
    let mut buf = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut buf).unwrap();
    }
    buf
}

#[test]
fn message_split_over_many_receives() {
    let w = world();
    let (mut c, mut s) = established(&w, 1 << 20);
    let msg = message(7);
    let wire = tls_bytes(&mut c, &msg);
    let mut frames = Vec::new();
    for byte in wire.chunks(1) {
        frames.extend(s.receive(byte).unwrap().frames);
    }
    assert_eq!(frames.len(), 1);
    assert_eq!(&frames[0][..], &msg[..]);
    // The plaintext may also arrive in pieces: two TLS records, one message.
    let wire = [tls_bytes(&mut c, &msg[..5]), tls_bytes(&mut c, &msg[5..])].concat();
    let got = s.receive(&wire).unwrap();
    assert_eq!(got.frames.len(), 1);
    assert_eq!(&got.frames[0][..], &msg[..]);
}

#[test]
fn two_pipelined_messages_in_one_receive_and_a_response() {
    let w = world();
    let (mut c, mut s) = established(&w, 1 << 20);
    let (a, b) = (message(1), message(2));
    let wire = tls_bytes(&mut c, &[a.clone(), b.clone()].concat());
    let got = s.receive(&wire).unwrap();
    let frames: Vec<Vec<u8>> = got.frames.iter().map(|f| f.to_vec()).collect();
    assert_eq!(frames, vec![a.clone(), b]);
    // The response travels back encrypted.
    let out = s.send(&a).unwrap();
    c.read_tls(&mut &out[..]).unwrap();
    c.process_new_packets().unwrap();
    let mut back = vec![0; a.len()];
    std::io::Read::read_exact(&mut c.reader(), &mut back).unwrap();
    assert_eq!(back, a);
    // close_notify both ways.
    let bye = s.close();
    c.read_tls(&mut &bye[..]).unwrap();
    assert!(c.process_new_packets().unwrap().peer_has_closed());
    c.send_close_notify();
    assert!(s.receive(&tls_bytes(&mut c, &[])).unwrap().closed);
}

#[test]
fn oversized_frame_refused_before_its_body() {
    let w = world();
    let (mut c, mut s) = established(&w, 1024);
    // Only the header: a Structure declaring 4 KiB.
    let wire = tls_bytes(&mut c, &[0x42, 0x00, 0x78, 0x01, 0x00, 0x00, 0x10, 0x00]);
    let err = s.receive(&wire).unwrap_err();
    assert_eq!(err.reason, "message_too_large");
    assert!(!err.to_write.is_empty(), "close_notify");
    // The session stays failed.
    assert_eq!(s.receive(b"more").unwrap_err().reason, "message_too_large");
    assert_eq!(s.error().unwrap().0, "message_too_large");
}

#[test]
fn not_tls_is_a_clean_error() {
    let w = world();
    let server = config(&w, &[], 1024);
    let mut s = ServerSession::new(&server).unwrap();
    let err = s.receive(&message(1)).unwrap_err();
    assert_eq!(err.reason, "not_tls");
}

#[test]
fn peek_client_hello_needs_the_whole_hello_and_picks_rustls() {
    let w = world();
    let mut c = connect(&client_config(&w, &w.client, &rustls::version::TLS12));
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    for cut in [0, 3, 5, 40, hello.len() - 1] {
        assert_eq!(peek_client_hello(&hello[..cut]), None, "cut at {cut}");
    }
    assert_eq!(peek_client_hello(&hello), Some(Engine::Rustls));
    let server = config(&w, &[], 1024);
    assert_eq!(server.choose_engine(&hello), Some(Engine::Rustls));
    // An SSLv2-format hello is a legacy client.
    assert_eq!(
        peek_client_hello(&[0x80, 0x2e, 0x01, 0x00, 0x02]),
        Some(Engine::OpenSsl)
    );
}

#[test]
fn fingerprints_are_validated_and_normalized() {
    assert!(tls::normalize_fingerprint("zz").is_err());
    let fp = "AB:".repeat(31) + "AB";
    assert_eq!(tls::normalize_fingerprint(&fp).unwrap(), "ab".repeat(32));
}

#[test]
fn peer_certificate_is_the_verified_or_the_refused_one() {
    let w = world();
    let server = config(&w, &[], 1 << 20);
    let stranger = leaf("stranger", ExtendedKeyUsagePurpose::ClientAuth, None);
    for v in VERSIONS {
        let mut c = connect(&client_config(&w, &stranger, v));
        let mut s = ServerSession::new(&server).unwrap();
        assert!(s.peer_certificate().is_none());
        assert!(pump(&mut c, &mut s).is_err());
        // Kept so that the operator can be shown (and allow) exactly this certificate.
        assert_eq!(
            s.peer_certificate().as_deref(),
            Some(stranger.cert.der().as_ref())
        );
        let s = handshake(&client_config(&w, &w.client, v), &server).unwrap();
        assert_eq!(
            s.peer_certificate().as_deref(),
            Some(w.client.cert.der().as_ref())
        );
    }
}
