//! Random bytes into a server TLS session, in random-sized pieces: whatever arrives, the
//! session returns a value (bytes to write, frames, or a failure with a reason) and never
//! panics; after a failure it keeps failing.
#![no_main]

use std::sync::{Arc, OnceLock};

use kmipfast_native::tls::{peek_client_hello, ServerSession, Settings, TlsConfig};
use libfuzzer_sys::fuzz_target;

fn config() -> &'static Arc<TlsConfig> {
    static CONFIG: OnceLock<Arc<TlsConfig>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("leaf");
        let mut s = Settings::new(
            leaf.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            ca.pem().as_bytes(),
        );
        s.max_message_size = 64 * 1024;
        TlsConfig::new(&s).expect("config")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = peek_client_hello(data);
    let _ = config().choose_engine(data);
    let Ok(mut session) = ServerSession::new(config()) else {
        return;
    };
    // The first byte chooses the piece size, so record boundaries fall anywhere.
    let (step, rest) = match data.split_first() {
        Some((b, rest)) => (usize::from(*b).max(1), rest),
        None => return,
    };
    let mut failed = false;
    for piece in rest.chunks(step) {
        match session.receive(piece) {
            Ok(got) => assert!(!failed, "a failed session accepted more bytes: {got:?}"),
            Err(_) => failed = true,
        }
    }
    let _ = session.close();
});
