//! AES Key Wrap (RFC 3394) and AES Key Wrap with Padding (RFC 5649).
//!
//! The AES rounds and the wrap loops come from RustCrypto's `aes` and `aes-kw`; this
//! module chooses the key size, keeps every plaintext in a zeroizing buffer and turns
//! failures into one error type.  A [`Kek`] holds the expanded key schedule, so a
//! master key that wraps thousands of object keys expands its schedule once (the
//! `aes` crate's `zeroize` feature wipes the schedule on drop).
//!
//! Object keys are bound to their object: [`Kek::seal_bound`] wraps
//! `len(binding) || binding || key` with KWP, so the RFC 5649 integrity check covers
//! the binding too, and [`Kek::open_bound`] refuses a blob whose binding differs (a
//! blob copied into another row or tenant).
#![forbid(unsafe_code)]

use aes_kw::{KekAes128, KekAes192, KekAes256};
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum WrapError {
    #[error("wrapping key must be 16, 24 or 32 bytes, got {0}")]
    InvalidKeyLength(usize),
    #[error("{0}")]
    InvalidInputLength(String),
    #[error("integrity check failed: wrong key, corrupted data, or data bound to another object")]
    IntegrityCheckFailed,
}

pub type Result<T> = std::result::Result<T, WrapError>;

enum Inner {
    A128(KekAes128),
    A192(KekAes192),
    A256(KekAes256),
}

/// A key-encryption key with its AES key schedule expanded.
pub struct Kek(Inner);

macro_rules! each {
    ($self:expr, $k:ident => $e:expr) => {
        match &$self.0 {
            Inner::A128($k) => $e,
            Inner::A192($k) => $e,
            Inner::A256($k) => $e,
        }
    };
}

fn kw_err(e: aes_kw::Error) -> WrapError {
    match e {
        aes_kw::Error::IntegrityCheckFailed => WrapError::IntegrityCheckFailed,
        other => WrapError::InvalidInputLength(other.to_string()),
    }
}

impl Kek {
    pub fn new(key: &[u8]) -> Result<Kek> {
        let inner = match key.len() {
            16 => Inner::A128(KekAes128::try_from(key).map_err(kw_err)?),
            24 => Inner::A192(KekAes192::try_from(key).map_err(kw_err)?),
            32 => Inner::A256(KekAes256::try_from(key).map_err(kw_err)?),
            n => return Err(WrapError::InvalidKeyLength(n)),
        };
        Ok(Kek(inner))
    }

    /// RFC 3394: the input is a multiple of 8 bytes, at least 16.
    pub fn wrap(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.len() < 16 || data.len() % 8 != 0 {
            return Err(WrapError::InvalidInputLength(format!(
                "RFC 3394 wraps a multiple of 8 bytes, at least 16; got {}",
                data.len()
            )));
        }
        let mut out = vec![0u8; data.len() + 8];
        each!(self, k => k.wrap(data, &mut out)).map_err(kw_err)?;
        Ok(out)
    }

    pub fn unwrap(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if data.len() < 24 || data.len() % 8 != 0 {
            return Err(WrapError::InvalidInputLength(format!(
                "RFC 3394 wrapped data is a multiple of 8 bytes, at least 24; got {}",
                data.len()
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; data.len() - 8]);
        each!(self, k => k.unwrap(data, &mut out)).map_err(kw_err)?;
        Ok(out)
    }

    /// RFC 5649: any non-empty input.
    pub fn wrap_with_padding(&self, data: &[u8]) -> Result<Vec<u8>> {
        if data.is_empty() || u32::try_from(data.len()).is_err() {
            return Err(WrapError::InvalidInputLength(format!(
                "RFC 5649 wraps 1 byte to 4 GiB; got {}",
                data.len()
            )));
        }
        let mut out = vec![0u8; data.len().div_ceil(8) * 8 + 8];
        each!(self, k => k.wrap_with_padding(data, &mut out)).map_err(kw_err)?;
        Ok(out)
    }

    pub fn unwrap_with_padding(&self, data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.unwrap_with_padding_into(data, |plain| Ok(Zeroizing::new(plain.to_vec())))
    }

    /// Unwraps into a zeroized scratch buffer and lets `use_plain` copy out what it
    /// needs (e.g. straight into an outgoing message), so no other copy is left.
    pub fn unwrap_with_padding_into<T>(
        &self,
        data: &[u8],
        use_plain: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        if data.len() < 16 || data.len() % 8 != 0 {
            return Err(WrapError::InvalidInputLength(format!(
                "RFC 5649 wrapped data is a multiple of 8 bytes, at least 16; got {}",
                data.len()
            )));
        }
        let mut out = Zeroizing::new(vec![0u8; data.len() - 8]);
        let plain = each!(self, k => k.unwrap_with_padding(data, &mut out)).map_err(kw_err)?;
        use_plain(plain)
    }

    /// Wraps `key` bound to `binding` (e.g. tenant and object identifier).
    pub fn seal_bound(&self, key: &[u8], binding: &[u8]) -> Result<Vec<u8>> {
        let blen = u16::try_from(binding.len())
            .map_err(|_| WrapError::InvalidInputLength("binding over 65535 bytes".into()))?;
        if key.is_empty() {
            return Err(WrapError::InvalidInputLength("empty key".into()));
        }
        let mut plain = Zeroizing::new(Vec::with_capacity(2 + binding.len() + key.len()));
        plain.extend_from_slice(&blen.to_be_bytes());
        plain.extend_from_slice(binding);
        plain.extend_from_slice(key);
        self.wrap_with_padding(&plain)
    }

    /// Opens a blob made by [`Kek::seal_bound`] and hands the key to `use_key` while it
    /// sits in the zeroized scratch buffer.
    pub fn open_bound_into<T>(
        &self,
        blob: &[u8],
        binding: &[u8],
        use_key: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        self.unwrap_with_padding_into(blob, |plain| {
            let key = split_binding(plain, binding)?;
            use_key(key)
        })
    }

    pub fn open_bound(&self, blob: &[u8], binding: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.open_bound_into(blob, binding, |k| Ok(Zeroizing::new(k.to_vec())))
    }

    /// Length of the key inside a bound blob, without unwrapping it.
    pub fn bound_key_len(blob: &[u8], binding: &[u8]) -> Option<usize> {
        // KWP pads to 8, so the exact length needs the unwrap; callers use this only
        // as an upper bound for buffer sizing.
        blob.len().checked_sub(8 + 2 + binding.len())
    }
}

fn split_binding<'a>(plain: &'a [u8], binding: &[u8]) -> Result<&'a [u8]> {
    if plain.len() < 2 {
        return Err(WrapError::IntegrityCheckFailed);
    }
    let blen = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    let Some(stored) = plain.get(2..2 + blen) else {
        return Err(WrapError::IntegrityCheckFailed);
    };
    // Both sides are public identifiers, but compare without an early exit anyway.
    let same = stored.len() == binding.len()
        && stored
            .iter()
            .zip(binding)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same || plain.len() == 2 + blen {
        return Err(WrapError::IntegrityCheckFailed);
    }
    Ok(&plain[2 + blen..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_blob_refuses_other_binding() {
        let kek = Kek::new(&[7u8; 32]).unwrap();
        let blob = kek.seal_bound(&[1u8; 32], b"t1/uid-1").unwrap();
        assert_eq!(&kek.open_bound(&blob, b"t1/uid-1").unwrap()[..], &[1u8; 32]);
        assert_eq!(
            kek.open_bound(&blob, b"t1/uid-2").unwrap_err(),
            WrapError::IntegrityCheckFailed
        );
        assert_eq!(
            kek.open_bound(&blob, b"t2/uid-1").unwrap_err(),
            WrapError::IntegrityCheckFailed
        );
    }

    #[test]
    fn bad_key_length() {
        assert_eq!(
            Kek::new(&[0u8; 20]).err(),
            Some(WrapError::InvalidKeyLength(20))
        );
    }
}
