//! A rustls-based KMIP client for interoperability tests (not part of the product):
//! connects with mutual TLS, sends one request, prints the response as hex.
//!
//!     rustls_client HOST:PORT CERT KEY CA REQUEST_HEX [1.2|1.3]
//!
//! The server name checked is `localhost`.  Exits 0 with the response on stdout, or
//! non-zero with one line on stderr.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn run(args: &[String]) -> Result<String, String> {
    let [addr, cert, key, ca, request, rest @ ..] = args else {
        return Err("usage: rustls_client HOST:PORT CERT KEY CA REQUEST_HEX [1.2|1.3]".into());
    };
    let version = match rest.first().map(String::as_str) {
        None | Some("1.3") => &rustls::version::TLS13,
        Some("1.2") => &rustls::version::TLS12,
        Some(v) => return Err(format!("unknown TLS version {v}")),
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{ca}: {e}"))? {
        roots
            .add(c.map_err(|e| format!("{ca}: {e}"))?)
            .map_err(|e| format!("{ca}: {e}"))?;
    }
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| e.to_string())?;
    let request = hex::decode(request).map_err(|e| format!("request: {e}"))?;
    let conn = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("localhost").map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    tls.write_all(&request).map_err(|e| format!("send: {e}"))?;
    let mut header = [0u8; 8];
    tls.read_exact(&mut header)
        .map_err(|e| format!("receive: {e}"))?;
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body)
        .map_err(|e| format!("receive: {e}"))?;
    let negotiated = format!("{:?}", tls.conn.protocol_version());
    tls.conn.send_close_notify();
    let _ = tls.flush();
    Ok(format!(
        "{negotiated} {}{}",
        hex::encode(header),
        hex::encode(body)
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("rustls_client: {e}");
            std::process::exit(1);
        }
    }
}
