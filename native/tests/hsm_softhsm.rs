//! `hsm` against a real SoftHSM2 token.
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` once, when the module is first initialized in the process, so
//! this binary uses one token directory for all its tests: the fixture creates it (and every
//! token the tests need) before any test loads the module. Tests that disturb a token's state
//! (logout) get a token of their own; the others share one and use distinct key labels.
//! Skipped (with a message) when SoftHSM2 is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::thread;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use kmipfast_native::hsm::{Hsm, HsmConfig, HsmError, SEAL_VERSION};
use zeroize::Zeroizing;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const TOKEN: &str = "kmipfast-test";
const TOKEN_LOGOUT: &str = "kmipfast-logout";
/// Nobody logs in to this one: PKCS#11 login state is per process and token, and C_Login on a
/// token the process is already logged in to answers CKR_USER_ALREADY_LOGGED_IN, PIN unchecked.
const TOKEN_NO_LOGIN: &str = "kmipfast-no-login";
const PIN: &str = "test-user-pin-4711";
const SO_PIN: &str = "test-so-pin-4711";

struct Fixture;

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            if !Path::new(MODULE).exists() {
                eprintln!("SoftHSM2 not installed ({MODULE} missing): skipping");
                return None;
            }
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("hsm_softhsm-{}", std::process::id()));
            let tokens = dir.join("tokens");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&tokens).expect("create token dir");
            let conf = dir.join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                    tokens.display()
                ),
            )
            .expect("write softhsm2.conf");
            // Set before any test loads the module (all go through this fixture first).
            std::env::set_var("SOFTHSM2_CONF", &conf);
            for label in [TOKEN, TOKEN_LOGOUT, TOKEN_NO_LOGIN] {
                let status = Command::new("softhsm2-util")
                    .args(["--init-token", "--free", "--label", label])
                    .args(["--pin", PIN, "--so-pin", SO_PIN])
                    .env("SOFTHSM2_CONF", &conf)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("run softhsm2-util");
                assert!(status.success(), "softhsm2-util --init-token failed");
            }
            Some(Fixture)
        })
        .as_ref()
}

fn config(token: &str, pin: &str, max_sessions: usize) -> HsmConfig {
    HsmConfig {
        module: PathBuf::from(MODULE),
        token_label: token.to_owned(),
        pin: Zeroizing::new(pin.to_owned()),
        max_sessions,
    }
}

/// An `Hsm` on the shared token, or `None` (test skipped) without SoftHSM2.
fn open_hsm(max_sessions: usize) -> Option<Hsm> {
    fixture()?;
    Some(Hsm::open(config(TOKEN, PIN, max_sessions)).expect("open HSM"))
}

/// A raw logged-in session on `token`, for checks and disturbances behind the `Hsm`'s back.
fn raw_session(token: &str) -> Session {
    let ctx = Pkcs11::new(MODULE).expect("load module");
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => panic!("initialize: {e}"),
    }
    let slot = ctx
        .get_slots_with_initialized_token()
        .expect("slots")
        .into_iter()
        .find(|s| ctx.get_token_info(*s).expect("token info").label() == token)
        .expect("token present");
    let session = ctx.open_rw_session(slot).expect("open session");
    match session.login(UserType::User, Some(&AuthPin::from(PIN))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    session
}

#[test]
fn hsm_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Hsm>();
}

#[test]
fn generate_exists_destroy() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-generate-exists-destroy";
    assert!(!hsm.root_key_exists(label).unwrap());
    hsm.generate_root_key(label).unwrap();
    assert!(hsm.root_key_exists(label).unwrap());
    hsm.destroy_root_key(label).unwrap();
    assert!(!hsm.root_key_exists(label).unwrap());
    assert!(matches!(
        hsm.destroy_root_key(label),
        Err(HsmError::KeyNotFound(l)) if l == label
    ));
}

#[test]
fn root_key_is_sensitive_token_key_that_never_leaves_the_hsm() {
    let Some(hsm) = open_hsm(1) else { return };
    let label = "crk-attributes";
    hsm.generate_root_key(label).unwrap();
    let session = raw_session(TOKEN);
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::ValueLen,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Wrap,
                AttributeType::Unwrap,
            ],
        )
        .unwrap();
    for attr in &attrs {
        match attr {
            Attribute::Token(v)
            | Attribute::Private(v)
            | Attribute::Sensitive(v)
            | Attribute::NeverExtractable(v)
            | Attribute::Encrypt(v)
            | Attribute::Decrypt(v)
            | Attribute::Wrap(v)
            | Attribute::Unwrap(v) => assert!(*v, "{attr:?}"),
            Attribute::Extractable(v) => assert!(!*v),
            Attribute::ValueLen(n) => assert_eq!(u64::from(*n), 32),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(attrs.len(), 10);
    // CKA_VALUE of a sensitive key is not readable: cryptoki leaves it out of the result.
    let value = session.get_attributes(found[0], &[AttributeType::Value]);
    assert!(
        !matches!(value.as_deref(), Ok([Attribute::Value(_)])),
        "CKA_VALUE was readable"
    );
    hsm.destroy_root_key(label).unwrap();
}

#[test]
fn seal_unseal_round_trip() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-round-trip";
    hsm.generate_root_key(label).unwrap();
    let tmk = hsm.random(32).unwrap();
    let aad = b"tenant=acme;v=1";
    let sealed = hsm.seal(label, &tmk, aad).unwrap();
    assert_eq!(sealed.len(), 1 + 12 + 32 + 16);
    assert_eq!(sealed[0], SEAL_VERSION);
    assert!(!sealed.windows(32).any(|w| w == tmk.as_slice()));
    let again = hsm.seal(label, &tmk, aad).unwrap();
    assert_ne!(sealed[1..13], again[1..13], "IV reused");
    assert_eq!(*hsm.unseal(label, &sealed, aad).unwrap(), *tmk);
    assert_eq!(*hsm.unseal(label, &again, aad).unwrap(), *tmk);
    // Empty plaintext and empty AAD are legal.
    let empty = hsm.seal(label, b"", b"").unwrap();
    assert!(hsm.unseal(label, &empty, b"").unwrap().is_empty());
    hsm.destroy_root_key(label).unwrap();
}

#[test]
fn wrong_aad_is_integrity_error() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-wrong-aad";
    hsm.generate_root_key(label).unwrap();
    let sealed = hsm.seal(label, &[7u8; 32], b"tenant=acme").unwrap();
    for aad in [&b"tenant=evil"[..], b"", b"tenant=acme\0"] {
        assert!(matches!(
            hsm.unseal(label, &sealed, aad),
            Err(HsmError::Integrity)
        ));
    }
    // The session that saw the failure is still usable.
    assert_eq!(
        *hsm.unseal(label, &sealed, b"tenant=acme").unwrap(),
        [7u8; 32]
    );
    hsm.destroy_root_key(label).unwrap();
}

#[test]
fn tampered_or_malformed_blob_is_integrity_error() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-tampered";
    hsm.generate_root_key(label).unwrap();
    let sealed = hsm.seal(label, &[9u8; 32], b"aad").unwrap();
    // Every byte: version, IV, ciphertext, tag.
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(
            matches!(hsm.unseal(label, &bad, b"aad"), Err(HsmError::Integrity)),
            "flipped byte {i} accepted"
        );
    }
    for len in [0, 1, 13, 28, sealed.len() - 1] {
        assert!(
            matches!(
                hsm.unseal(label, &sealed[..len], b"aad"),
                Err(HsmError::Integrity)
            ),
            "truncated to {len} accepted"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert!(matches!(
        hsm.unseal(label, &longer, b"aad"),
        Err(HsmError::Integrity)
    ));
    // Sealed under another root key.
    let other = "crk-tampered-other";
    hsm.generate_root_key(other).unwrap();
    assert!(matches!(
        hsm.unseal(other, &sealed, b"aad"),
        Err(HsmError::Integrity)
    ));
    hsm.destroy_root_key(label).unwrap();
    hsm.destroy_root_key(other).unwrap();
}

#[test]
fn destroyed_key_is_key_not_found_even_with_cached_handle() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-destroyed";
    hsm.generate_root_key(label).unwrap();
    let sealed = hsm.seal(label, &[1u8; 32], b"").unwrap(); // handle now cached
                                                            // Destroyed behind this `Hsm`'s back (another instance, as another worker would).
    let other = Hsm::open(config(TOKEN, PIN, 1)).unwrap();
    other.destroy_root_key(label).unwrap();
    assert!(matches!(
        hsm.seal(label, &[1u8; 32], b""),
        Err(HsmError::KeyNotFound(l)) if l == label
    ));
    assert!(matches!(
        hsm.unseal(label, &sealed, b""),
        Err(HsmError::KeyNotFound(_))
    ));
    // A new key under the same label is found, and does not open the old blob.
    other.generate_root_key(label).unwrap();
    assert!(matches!(
        hsm.unseal(label, &sealed, b""),
        Err(HsmError::Integrity)
    ));
    hsm.destroy_root_key(label).unwrap();
    assert!(matches!(
        hsm.seal("crk-never-created", b"x", b""),
        Err(HsmError::KeyNotFound(_))
    ));
}

#[test]
fn duplicate_label_is_key_exists() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-duplicate";
    hsm.generate_root_key(label).unwrap();
    let sealed = hsm.seal(label, b"k", b"").unwrap();
    assert!(matches!(
        hsm.generate_root_key(label),
        Err(HsmError::KeyExists(l)) if l == label
    ));
    // The original key is untouched.
    assert_eq!(*hsm.unseal(label, &sealed, b"").unwrap(), *b"k");
    hsm.destroy_root_key(label).unwrap();
}

#[test]
fn concurrent_seal_unseal_8_threads_2_sessions() {
    let Some(hsm) = open_hsm(2) else { return };
    let hsm = Arc::new(hsm);
    let label = "crk-concurrent";
    hsm.generate_root_key(label).unwrap();
    let workers: Vec<_> = (0..8u8)
        .map(|t| {
            let hsm = Arc::clone(&hsm);
            thread::spawn(move || {
                for i in 0..25u8 {
                    let tmk = [t ^ i; 32];
                    let aad = [t, i];
                    let sealed = hsm.seal(label, &tmk, &aad).unwrap();
                    assert_eq!(*hsm.unseal(label, &sealed, &aad).unwrap(), tmk);
                    if i % 5 == 0 {
                        hsm.ping().unwrap();
                        assert_eq!(hsm.random(32).unwrap().len(), 32);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    hsm.destroy_root_key(label).unwrap();
}

#[test]
fn wrong_pin_is_login_error_without_the_pin() {
    if fixture().is_none() {
        return;
    }
    let wrong = "Wr0ng-P1n-Secret-8832";
    let cfg = config(TOKEN_NO_LOGIN, wrong, 1);
    assert!(!format!("{cfg:?}").contains(wrong));
    let err = Hsm::open(cfg).expect_err("wrong PIN accepted");
    assert!(matches!(err, HsmError::Login(_)), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(wrong), "PIN leaked: {text}");
        assert!(!text.contains(PIN), "PIN leaked: {text}");
    }
}

#[test]
fn unknown_token_and_bad_module() {
    if fixture().is_none() {
        return;
    }
    assert!(matches!(
        Hsm::open(config("no-such-token", PIN, 1)),
        Err(HsmError::TokenNotFound(l)) if l == "no-such-token"
    ));
    let mut cfg = config(TOKEN, PIN, 1);
    cfg.module = PathBuf::from("/nonexistent/libpkcs11.so");
    assert!(matches!(Hsm::open(cfg), Err(HsmError::ModuleLoad(_))));
    assert!(matches!(
        Hsm::open(config(TOKEN, PIN, 0)),
        Err(HsmError::InvalidArgument(_))
    ));
}

#[test]
fn random_and_invalid_arguments() {
    let Some(hsm) = open_hsm(1) else { return };
    let a = hsm.random(32).unwrap();
    let b = hsm.random(32).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(*a, *b);
    assert!(hsm.random(0).unwrap().is_empty());
    assert!(matches!(
        hsm.random(1 << 20),
        Err(HsmError::InvalidArgument(_))
    ));
    assert!(matches!(
        hsm.generate_root_key(""),
        Err(HsmError::InvalidArgument(_))
    ));
}

#[test]
fn lost_login_recovers_and_is_not_key_not_found() {
    if fixture().is_none() {
        return;
    }
    let hsm = Hsm::open(config(TOKEN_LOGOUT, PIN, 2)).unwrap();
    let label = "crk-logout";
    hsm.generate_root_key(label).unwrap();
    let sealed = hsm.seal(label, &[3u8; 32], b"").unwrap();
    for round in 0..3 {
        // C_Logout on any session logs the whole process out of the token: every pooled
        // session loses its login, and private objects become invisible to them.
        let raw = raw_session(TOKEN_LOGOUT);
        raw.logout().unwrap();
        let result = match round {
            0 => hsm.unseal(label, &sealed, b"").map(|_| ()),
            1 => hsm.root_key_exists(label).map(|found| assert!(found)),
            _ => hsm.ping(),
        };
        result.unwrap_or_else(|e| panic!("round {round}: {e}"));
    }
    assert_eq!(*hsm.unseal(label, &sealed, b"").unwrap(), [3u8; 32]);
    hsm.destroy_root_key(label).unwrap();
}

#[test]
fn shred_root_key_reports_the_token_no_longer_finds_it() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "crk-shred-proof";
    hsm.generate_root_key(label).unwrap();
    let proof = hsm.shred_root_key(label).unwrap();
    assert_eq!(proof.handles.len(), 1);
    assert!(proof.handles_still_found.is_empty());
    assert_eq!(proof.label_still_found, 0);
    assert!(!hsm.root_key_exists(label).unwrap());
    assert!(matches!(
        hsm.shred_root_key(label),
        Err(HsmError::KeyNotFound(_))
    ));
}

#[test]
fn signing_key_is_made_once_in_the_token_and_never_extractable() {
    let Some(hsm) = open_hsm(2) else { return };
    let label = "audit-signing-test";
    let point = hsm.signing_public_key(label).unwrap();
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04, "uncompressed point");
    assert_eq!(hsm.signing_public_key(label).unwrap(), point, "made once");
    let sig = hsm.sign_digest(label, &[7u8; 32]).unwrap();
    assert_eq!(sig.len(), 64);
    assert!(matches!(
        hsm.sign_digest(label, &[7u8; 20]),
        Err(HsmError::InvalidArgument(_))
    ));
    assert!(matches!(
        hsm.sign_digest("no-such-signing-key", &[7u8; 32]),
        Err(HsmError::KeyNotFound(_))
    ));
    // Behind the Hsm's back: one private key, sensitive, not extractable, its value unreadable.
    let session = raw_session(TOKEN);
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(found.len(), 1);
    let attrs = session
        .get_attributes(
            found[0],
            &[AttributeType::Sensitive, AttributeType::Extractable],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)));
    assert!(attrs.contains(&Attribute::Extractable(false)));
    let value = session.get_attributes(found[0], &[AttributeType::Value]);
    assert!(
        !matches!(value.as_deref(), Ok([Attribute::Value(_)])),
        "the private key's value must not be readable"
    );
}
