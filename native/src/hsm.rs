//! Tenant root keys (CRKs) in a PKCS#11 HSM, and sealing of tenant master keys under them.
//!
//! Theory of operation:
//! - One `Hsm` per process and token. It loads the PKCS#11 module, finds the token by label and
//!   keeps a bounded pool of logged-in read/write sessions. A caller borrows a session for one
//!   whole operation (find key, encrypt, ...) and gives it back; when all are busy it waits on a
//!   condition variable, up to `CHECKOUT_TIMEOUT`.
//! - A session that fails with a device or session error (token removed, session closed, login
//!   lost) is thrown away together with every idle session (they share its fate), and the
//!   operation is retried once on a fresh session, which re-logs in. So the HSM coming back is
//!   noticed without anyone restarting us; while it is gone callers get `HsmError::Unavailable`.
//! - Root keys are found by `CKA_LABEL` + `CKA_CLASS = CKO_SECRET_KEY`. Handles are cached per
//!   label, but a cached handle is checked (its label read back) before each use: the key may
//!   have been destroyed by another process, and some HSMs reuse handle numbers, in which case
//!   an unchecked handle could seal one tenant's master key under another tenant's root key.
//! - A sealed blob is `SEAL_VERSION || iv (12) || ciphertext || tag (16)`, AES-256-GCM inside
//!   the HSM; the GCM AAD is `SEAL_VERSION || caller's aad`, so the version byte is
//!   authenticated too.
//! - Plaintext master keys come back in `Zeroizing` buffers. The PIN is kept as a
//!   `secrecy::SecretString` (zeroized on drop, redacted in `Debug`) for re-logins and never
//!   enters an error message.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{AuthPin, Ulong};
use zeroize::Zeroizing;

/// First byte of every sealed blob; bump it when the format changes.
pub const SEAL_VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Shortest valid sealed blob: version, IV and tag around an empty ciphertext.
const SEALED_OVERHEAD: usize = 1 + IV_LEN + TAG_LEN;
/// How long a caller waits for a free session before the HSM counts as unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// `random()` serves keys and IVs, not bulk data; the cap keeps a bad argument from asking the
/// HSM for gigabytes.
pub const MAX_RANDOM: usize = 1 << 16;

/// How to reach the token. `Debug` hides the PIN.
pub struct HsmConfig {
    /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// `CKA_LABEL` of the token (the token label, not a slot number: slots get renumbered).
    pub token_label: String,
    /// User PIN.
    pub pin: Zeroizing<String>,
    /// Upper bound on open sessions; at least 1.
    pub max_sessions: usize,
}

impl fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

/// Errors of the HSM layer. No variant ever carries the PIN or key material.
#[derive(thiserror::Error, Debug)]
pub enum HsmError {
    #[error("cannot load PKCS#11 module: {0}")]
    ModuleLoad(String),
    #[error("no initialized token labelled {0:?}")]
    TokenNotFound(String),
    #[error("HSM login failed: {0}")]
    Login(String),
    #[error("root key {0:?} not found in the HSM")]
    KeyNotFound(String),
    #[error("root key {0:?} already exists in the HSM")]
    KeyExists(String),
    /// GCM tag mismatch or malformed blob: wrong root key, wrong AAD or tampered data.
    #[error("sealed key failed its integrity check")]
    Integrity,
    /// Token gone, session lost, pool exhausted: retrying later can succeed.
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("PKCS#11 error: {0}")]
    Pkcs11(String),
}

/// Return codes that mean "this session (or the whole token) is gone", not "this request is
/// wrong": the session is discarded and the operation may be retried.
fn is_session_loss(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
    )
}

fn is_login_failure(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::UserPinNotInitialized
    )
}

/// The one conversion from cryptoki errors. `cryptoki::error::Error` displays only the function
/// name and return code, never call arguments, so the PIN cannot leak through it.
fn ck(err: CkError) -> HsmError {
    match err {
        CkError::Pkcs11(rv, func) if is_session_loss(rv) => {
            HsmError::Unavailable(format!("{func:?}: {rv}"))
        }
        CkError::Pkcs11(rv, func) if is_login_failure(rv) => {
            HsmError::Login(format!("{func:?}: {rv}"))
        }
        other => HsmError::Pkcs11(other.to_string()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Loads and initializes a PKCS#11 module once per process and keeps it loaded.
///
/// A module's state is process-wide: `C_Initialize` must not run concurrently with itself
/// (SoftHSM2 crashes if it does), and unloading the library when the last `Hsm` on it is
/// dropped would throw away that state under the feet of a concurrent `open`. So every `Hsm`
/// on the same path shares one context, and the library is never unloaded or finalized.
fn load_module(path: &Path) -> Result<Pkcs11, HsmError> {
    static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let mut modules = lock(&MODULES);
    if let Some((_, ctx)) = modules.iter().find(|(p, _)| p == path) {
        return Ok(ctx.clone());
    }
    let failed = |e: CkError| HsmError::ModuleLoad(format!("{}: {e}", path.display()));
    let ctx = Pkcs11::new(path).map_err(failed)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in the process (not through this function) initialized it.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(failed(e)),
    }
    modules.push((path.to_owned(), ctx.clone()));
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, token_label: &str) -> Result<Slot, HsmError> {
    for slot in ctx.get_slots_with_initialized_token().map_err(ck)? {
        if ctx.get_token_info(slot).map_err(ck)?.label() == token_label {
            return Ok(slot);
        }
    }
    Err(HsmError::TokenNotFound(token_label.to_owned()))
}

fn check_label(label: &str) -> Result<(), HsmError> {
    if label.is_empty() {
        return Err(HsmError::InvalidArgument("empty root key label".into()));
    }
    Ok(())
}

fn gcm_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(aad);
    out
}

struct Pool {
    idle: Vec<Session>,
    /// Sessions that exist: idle ones plus those lent out.
    open: usize,
}

/// A PKCS#11 token holding the tenant root keys. `Send + Sync`; share it behind an `Arc`.
pub struct Hsm {
    ctx: Pkcs11,
    token_label: String,
    slot: Mutex<Slot>,
    pin: AuthPin,
    max_sessions: usize,
    pool: Mutex<Pool>,
    session_freed: Condvar,
    handles: Mutex<HashMap<String, ObjectHandle>>,
}

/// Serializes token-object creation and destruction across every `Hsm` in the process: two
/// callers must not both create a label, and SoftHSM2 2.6 fails concurrent object creation
/// in one process with CKR_GENERAL_ERROR now and then (softhsm/SoftHSMv2#573).
static ADMIN: Mutex<()> = Mutex::new(());

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("token_label", &self.token_label)
            .field("max_sessions", &self.max_sessions)
            .finish_non_exhaustive()
    }
}

/// A session lent out of the pool; goes back (or is closed, if broken) on drop.
struct Lease<'a> {
    hsm: &'a Hsm,
    session: Option<Session>,
    broken: bool,
}

impl Lease<'_> {
    fn session(&self) -> &Session {
        // Always Some until drop.
        self.session.as_ref().expect("lease holds a session")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if self.broken {
            // Idle sessions opened before the failure are most likely dead too (token removed,
            // all sessions closed): drop them now rather than failing one caller on each.
            let stale = {
                let mut pool = lock(&self.hsm.pool);
                let stale = std::mem::take(&mut pool.idle);
                pool.open -= 1 + stale.len();
                stale
            };
            self.hsm.session_freed.notify_all();
            drop(stale);
            drop(session);
        } else {
            lock(&self.hsm.pool).idle.push(session);
            self.hsm.session_freed.notify_one();
        }
    }
}

impl Hsm {
    /// Loads the module, finds the token and logs in once, so a wrong PIN or label fails here.
    ///
    /// The module is loaded and `C_Initialize`d (with `CKF_OS_LOCKING_OK`) once per process and
    /// shared by every `Hsm` on it; see `load_module`. Login state is per process too: when
    /// this process is already logged in to the token, PKCS#11 answers
    /// `CKR_USER_ALREADY_LOGGED_IN` without checking the PIN, so a wrong PIN is only detected by
    /// the first login in the process.
    pub fn open(cfg: HsmConfig) -> Result<Hsm, HsmError> {
        if cfg.max_sessions == 0 {
            return Err(HsmError::InvalidArgument(
                "max_sessions must be at least 1".into(),
            ));
        }
        let ctx = load_module(&cfg.module)?;
        let slot = find_slot(&ctx, &cfg.token_label)?;
        let hsm = Hsm {
            ctx,
            slot: Mutex::new(slot),
            pin: AuthPin::from(cfg.pin.as_str()),
            token_label: cfg.token_label,
            max_sessions: cfg.max_sessions,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            session_freed: Condvar::new(),
            handles: Mutex::new(HashMap::new()),
        };
        drop(hsm.checkout()?);
        Ok(hsm)
    }

    /// Creates the tenant root key: AES-256, token object, private, sensitive, never
    /// extractable, usable for encrypt/decrypt/wrap/unwrap only.
    pub fn generate_root_key(&self, label: &str) -> Result<(), HsmError> {
        check_label(label)?;
        let _admin = lock(&ADMIN);
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(Ulong::new(32)),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ];
        self.with_session(|s| {
            if !self.find_keys(s, label)?.is_empty() {
                return Err(HsmError::KeyExists(label.to_owned()));
            }
            let handle = s
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(ck)?;
            lock(&self.handles).insert(label.to_owned(), handle);
            Ok(())
        })
    }

    /// Looks the label up in the token itself (not the handle cache).
    pub fn root_key_exists(&self, label: &str) -> Result<bool, HsmError> {
        check_label(label)?;
        self.with_session(|s| Ok(!self.find_keys(s, label)?.is_empty()))
    }

    /// Destroys the root key (every object with that label, should there be several):
    /// crypto-shredding of the tenant. `KeyNotFound` if there is none.
    pub fn destroy_root_key(&self, label: &str) -> Result<(), HsmError> {
        check_label(label)?;
        let _admin = lock(&ADMIN);
        lock(&self.handles).remove(label);
        self.with_session(|s| {
            let found = self.find_keys(s, label)?;
            if found.is_empty() {
                return Err(HsmError::KeyNotFound(label.to_owned()));
            }
            for handle in found {
                match s.destroy_object(handle) {
                    // Destroyed meanwhile by someone else: the goal is reached.
                    Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) | Ok(()) => {}
                    Err(e) => return Err(ck(e)),
                }
            }
            Ok(())
        })
    }

    /// Destroys the root key like `destroy_root_key`, then asks the token again, on the same
    /// session, for each destroyed handle and for the label: the HSM's own confirmation that
    /// the key is gone, for a shred certificate.
    pub fn shred_root_key(&self, label: &str) -> Result<DestroyProof, HsmError> {
        check_label(label)?;
        let _admin = lock(&ADMIN);
        lock(&self.handles).remove(label);
        self.with_session(|s| {
            let found = self.find_keys(s, label)?;
            if found.is_empty() {
                return Err(HsmError::KeyNotFound(label.to_owned()));
            }
            for handle in &found {
                match s.destroy_object(*handle) {
                    Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) | Ok(()) => {}
                    Err(e) => return Err(ck(e)),
                }
            }
            let mut handles_still_found = Vec::new();
            for handle in &found {
                match s.get_attributes(*handle, &[AttributeType::Class, AttributeType::Label]) {
                    // A reused handle number naming another object is not our key.
                    Ok(attrs) if names_key(&attrs, label) => {
                        handles_still_found.push(handle.handle())
                    }
                    Ok(_) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
                    Err(e) => return Err(ck(e)),
                }
            }
            let label_still_found = self.find_keys(s, label)?.len();
            Ok(DestroyProof {
                handles: found.iter().map(|h| h.handle()).collect(),
                handles_still_found,
                label_still_found,
            })
        })
    }

    /// The public half (uncompressed EC point, 65 bytes) of the EC P-256 signing key `label`,
    /// generated in the token on first use: private, sensitive, never extractable, sign only.
    pub fn signing_public_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        check_label(label)?;
        if let Some(point) = self.with_session(|s| self.find_public_point(s, label))? {
            return Ok(point);
        }
        let _admin = lock(&ADMIN);
        self.with_session(|s| {
            if let Some(point) = self.find_public_point(s, label)? {
                return Ok(point); // made meanwhile by another caller
            }
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_OID.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(ck)?;
            self.find_public_point(s, label)?.ok_or_else(|| {
                HsmError::Pkcs11(format!("signing key {label:?} not found after generation"))
            })
        })
    }

    /// ECDSA P-256 (`CKM_ECDSA`) over a 32-byte SHA-256 digest with the private signing key
    /// `label`; returns `r || s` (64 bytes). `KeyNotFound` if the key does not exist.
    pub fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        check_label(label)?;
        if digest.len() != 32 {
            return Err(HsmError::InvalidArgument(
                "the digest must be 32 bytes (SHA-256)".into(),
            ));
        }
        self.with_session(|s| {
            let template = [
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ];
            let key = match s.find_objects(&template).map_err(ck)?.as_slice() {
                [key] => *key,
                [] => return Err(HsmError::KeyNotFound(label.to_owned())),
                many => {
                    return Err(HsmError::Pkcs11(format!(
                        "{} private keys labelled {label:?}; expected one",
                        many.len()
                    )))
                }
            };
            s.sign(&Mechanism::Ecdsa, key, digest).map_err(ck)
        })
    }

    fn find_public_point(&self, s: &Session, label: &str) -> Result<Option<Vec<u8>>, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let handle = match s.find_objects(&template).map_err(ck)?.as_slice() {
            [] => return Ok(None),
            [handle] => *handle,
            many => {
                return Err(HsmError::Pkcs11(format!(
                    "{} public keys labelled {label:?}; expected one",
                    many.len()
                )))
            }
        };
        let attrs = s
            .get_attributes(handle, &[AttributeType::EcPoint])
            .map_err(ck)?;
        let point = attrs.iter().find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p.as_slice()),
            _ => None,
        });
        match point.and_then(ec_point) {
            Some(p) => Ok(Some(p.to_vec())),
            None => Err(HsmError::Pkcs11(format!(
                "public key {label:?} has no P-256 point"
            ))),
        }
    }

    /// AES-256-GCM under the root key `label`, with a fresh IV from the HSM's RNG.
    /// Output: `SEAL_VERSION || iv || ciphertext || tag`.
    pub fn seal(&self, label: &str, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, HsmError> {
        check_label(label)?;
        let aad = gcm_aad(aad);
        self.with_key(label, ck, |s, key| {
            let mut iv = [0u8; IV_LEN];
            s.generate_random_slice(&mut iv)?;
            let ciphertext = {
                let params = GcmParams::new(&mut iv, &aad, Ulong::new(TAG_LEN as u64 * 8))?;
                s.encrypt(&Mechanism::AesGcm(params), key, plaintext)?
            };
            let mut out = Vec::with_capacity(1 + IV_LEN + ciphertext.len());
            out.push(SEAL_VERSION);
            out.extend_from_slice(&iv);
            out.extend_from_slice(&ciphertext);
            Ok(out)
        })
    }

    /// Reverses `seal`. `Integrity` for a wrong key, wrong AAD, tampered or malformed blob.
    pub fn unseal(
        &self,
        label: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        check_label(label)?;
        if sealed.len() < SEALED_OVERHEAD || sealed[0] != SEAL_VERSION {
            return Err(HsmError::Integrity);
        }
        let (iv, ciphertext) = sealed[1..].split_at(IV_LEN);
        let aad = gcm_aad(aad);
        let map_err = |e: CkError| match e {
            // SoftHSM2 2.6 reports a GCM tag mismatch from C_Decrypt as CKR_GENERAL_ERROR
            // (its decryptFinal failing); the standard code is CKR_ENCRYPTED_DATA_INVALID.
            CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            ) => HsmError::Integrity,
            e => ck(e),
        };
        self.with_key(label, map_err, |s, key| {
            let mut iv: [u8; IV_LEN] = iv.try_into()?;
            let params = GcmParams::new(&mut iv, &aad, Ulong::new(TAG_LEN as u64 * 8))?;
            Ok(Zeroizing::new(s.decrypt(
                &Mechanism::AesGcm(params),
                key,
                ciphertext,
            )?))
        })
    }

    /// `n` bytes from the HSM's RNG (`C_GenerateRandom`), at most `MAX_RANDOM`.
    pub fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        if n > MAX_RANDOM {
            return Err(HsmError::InvalidArgument(format!(
                "at most {MAX_RANDOM} random bytes per call"
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; n]);
        self.with_session(|s| s.generate_random_slice(&mut out).map_err(ck))?;
        Ok(out)
    }

    /// Liveness: borrows a session (re-opening and re-logging in if needed) and checks that it
    /// is still a logged-in read/write session.
    pub fn ping(&self) -> Result<(), HsmError> {
        self.with_session(
            |s| match s.get_session_info().map_err(ck)?.session_state() {
                SessionState::RwUser => Ok(()),
                other => Err(HsmError::Unavailable(format!(
                    "session in state {other:?}, not logged in"
                ))),
            },
        )
    }

    /// Finalizes and re-initializes the PKCS#11 library once every session of this token
    /// is back in the pool, then finds the token again.  For a token whose backing store
    /// went away and came back: SoftHSM2 forgets such a token until the library is
    /// re-initialized.  While it runs no session can be checked out (the pool lock is
    /// held), so no call is in flight during `C_Finalize`.
    pub fn reinitialize(&self) -> Result<(), HsmError> {
        let _admin = lock(&ADMIN);
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut pool = lock(&self.pool);
        while pool.idle.len() < pool.open {
            let now = Instant::now();
            if now >= deadline {
                return Err(HsmError::Unavailable(
                    "HSM sessions stayed busy; library not re-initialized".into(),
                ));
            }
            pool = self
                .session_freed
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let stale = std::mem::take(&mut pool.idle);
        pool.open -= stale.len();
        drop(stale);
        lock(&self.handles).clear();
        // Not initialized (someone finalized already) is fine: we initialize next.
        let _ = self.ctx.clone().finalize();
        match self
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(HsmError::Unavailable(format!("re-initializing: {e}"))),
        }
        let slot = match find_slot(&self.ctx, &self.token_label) {
            Ok(slot) => slot,
            Err(HsmError::TokenNotFound(label)) => {
                return Err(HsmError::Unavailable(format!(
                    "token {label} is not present"
                )))
            }
            Err(e) => return Err(e),
        };
        *lock(&self.slot) = slot;
        drop(pool);
        self.session_freed.notify_all();
        Ok(())
    }

    fn checkout(&self) -> Result<Lease<'_>, HsmError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut pool = lock(&self.pool);
        loop {
            if let Some(session) = pool.idle.pop() {
                return Ok(self.lease(session));
            }
            if pool.open < self.max_sessions {
                pool.open += 1;
                drop(pool);
                return match self.new_session() {
                    Ok(session) => Ok(self.lease(session)),
                    Err(e) => {
                        lock(&self.pool).open -= 1;
                        self.session_freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HsmError::Unavailable(format!(
                    "all {} HSM sessions busy for {}s",
                    self.max_sessions,
                    CHECKOUT_TIMEOUT.as_secs()
                )));
            }
            pool = self
                .session_freed
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn lease(&self, session: Session) -> Lease<'_> {
        Lease {
            hsm: self,
            session: Some(session),
            broken: false,
        }
    }

    fn new_session(&self) -> Result<Session, HsmError> {
        let slot = *lock(&self.slot);
        let session = match self.ctx.open_rw_session(slot) {
            Ok(s) => s,
            Err(CkError::Pkcs11(
                rv @ (RvError::SlotIdInvalid
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::DeviceRemoved),
                _,
            )) => {
                // The token may be back in another slot (SoftHSM renumbers slots when tokens
                // come and go). Cached handles belong to the old token: forget them.
                let slot = find_slot(&self.ctx, &self.token_label).map_err(|_| {
                    HsmError::Unavailable(format!("token {:?}: {rv}", self.token_label))
                })?;
                *lock(&self.slot) = slot;
                lock(&self.handles).clear();
                self.ctx.open_rw_session(slot).map_err(ck)?
            }
            Err(e) => return Err(ck(e)),
        };
        match session.login(UserType::User, Some(&self.pin)) {
            // Login state is per application: another session of ours may have logged in.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(rv, _)) if !is_session_loss(rv) => Err(HsmError::Login(format!(
                "token {:?}: {rv}",
                self.token_label
            ))),
            Err(e) => Err(ck(e)),
        }
    }

    /// Runs `op` on a pooled session; on `Unavailable` (session/device loss) the session is
    /// discarded and `op` runs once more on a fresh one.
    fn with_session<T>(
        &self,
        mut op: impl FnMut(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let mut lease = self.checkout()?;
        match op(lease.session()) {
            Err(HsmError::Unavailable(_)) => {
                lease.broken = true;
                drop(lease);
                let mut lease = self.checkout()?;
                let result = op(lease.session());
                lease.broken = matches!(result, Err(HsmError::Unavailable(_)));
                result
            }
            result => result,
        }
    }

    fn find_keys(&self, s: &Session, label: &str) -> Result<Vec<ObjectHandle>, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let found = s.find_objects(&template).map_err(ck)?;
        if found.is_empty() {
            // A session that lost its login (someone called C_Logout in this process) sees no
            // private objects at all: that is an outage, not a missing or shredded key.
            let state = s.get_session_info().map_err(ck)?.session_state();
            if !matches!(state, SessionState::RwUser) {
                return Err(HsmError::Unavailable("HSM session lost its login".into()));
            }
        }
        Ok(found)
    }

    /// The handle of root key `label`: from the cache if it still names that key, else looked
    /// up afresh.
    fn key_handle(&self, s: &Session, label: &str) -> Result<ObjectHandle, HsmError> {
        let cached = lock(&self.handles).get(label).copied();
        if let Some(handle) = cached {
            match s.get_attributes(handle, &[AttributeType::Class, AttributeType::Label]) {
                Ok(attrs) if names_key(&attrs, label) => return Ok(handle),
                Ok(_) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {
                    lock(&self.handles).remove(label);
                }
                Err(e) => return Err(ck(e)),
            }
        }
        match self.find_keys(s, label)?.as_slice() {
            [] => Err(HsmError::KeyNotFound(label.to_owned())),
            [handle] => {
                lock(&self.handles).insert(label.to_owned(), *handle);
                Ok(*handle)
            }
            many => Err(HsmError::Pkcs11(format!(
                "{} secret keys labelled {label:?}; expected one",
                many.len()
            ))),
        }
    }

    /// Runs a key operation on a pooled session. A handle that went invalid between lookup and
    /// use means the key was just destroyed (`KeyNotFound`), or the login was lost
    /// (`Unavailable`, retried).
    fn with_key<T>(
        &self,
        label: &str,
        map_err: impl Fn(CkError) -> HsmError,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        self.with_session(|s| {
            let key = self.key_handle(s, label)?;
            op(s, key).map_err(|e| match e {
                CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _) => {
                    lock(&self.handles).remove(label);
                    match s.get_session_info().map(|i| i.session_state()) {
                        Ok(SessionState::RwUser) => HsmError::KeyNotFound(label.to_owned()),
                        // Logged out under us: private objects look invalid, but exist.
                        Ok(_) => HsmError::Unavailable("HSM session lost its login".into()),
                        Err(e) => ck(e),
                    }
                }
                e => map_err(e),
            })
        })
    }
}

/// What the token said after a root key was destroyed (see `Hsm::shred_root_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyProof {
    /// The handles the key had, as found by its label before the destroy.
    pub handles: Vec<u64>,
    /// Those of them that still name the key afterwards (empty when it is gone).
    pub handles_still_found: Vec<u64>,
    /// How many secret keys the label still finds afterwards (0 when it is gone).
    pub label_still_found: usize,
}

/// DER of the named curve prime256v1 (OID 1.2.840.10045.3.1.7), for `CKA_EC_PARAMS`.
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P256_POINT_LEN: usize = 65;

/// The uncompressed P-256 point in a `CKA_EC_POINT` value: PKCS#11 says a DER OCTET STRING
/// around it, some modules give the bare point.
fn ec_point(value: &[u8]) -> Option<&[u8]> {
    let point = match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest,
        bare => bare,
    };
    (point.len() == P256_POINT_LEN && point[0] == 0x04).then_some(point)
}

fn names_key(attrs: &[Attribute], label: &str) -> bool {
    let class_ok = attrs
        .iter()
        .any(|a| matches!(a, Attribute::Class(c) if *c == ObjectClass::SECRET_KEY));
    let label_ok = attrs
        .iter()
        .any(|a| matches!(a, Attribute::Label(l) if l.as_slice() == label.as_bytes()));
    class_ok && label_ok
}
