//! Tokens at rest: AES-256-GCM with a random 96-bit nonce per write and the owning row's id as
//! associated data, so a ciphertext copied onto another row does not open. A short key id is
//! stored beside each ciphertext so a row sealed under an older key is recognised as such
//! (and a key can be rotated later) instead of failing as "tampered".

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore as _;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

/// A fresh unguessable value for a URL (256 random bits, base64url): OAuth states and the
/// secret in customer-link redirect URLs.
pub fn url_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored of a [`url_secret`]: its SHA-256, so reading the table is not enough to answer
/// a redirect.
pub fn url_secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Why a sealed token could not be opened. Never carries key or plaintext bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error(
        "the token was sealed with key {stored} but security.token_key is key {configured}; \
         configure the key it was sealed with"
    )]
    WrongKey { stored: String, configured: String },
    #[error(
        "the sealed token does not open with the configured key: it was altered or belongs to another row"
    )]
    Tampered,
    #[error("the sealed token is not valid UTF-8 after opening")]
    NotText,
}

/// The key that seals OAuth tokens. `Debug` shows only its id.
#[derive(Clone)]
pub struct TokenKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    pub fn new(key: &[u8; 32]) -> Self {
        // A fingerprint, not the key: 8 bytes of a domain-separated hash reveal nothing usable.
        let digest = Sha256::new()
            .chain_update(b"partner-sync token key id\0")
            .chain_update(key)
            .finalize();
        Self {
            cipher: Aes256Gcm::new(key.into()),
            id: hex::encode(&digest[..8]),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `nonce || ciphertext+tag`, bound to `associated_data`.
    pub fn seal(&self, plaintext: &str, associated_data: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: associated_data,
                },
            )
            // AES-GCM only fails for messages beyond 64 GiB.
            .expect("a token is far below AES-GCM's message limit");
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(
        &self,
        sealed: &[u8],
        key_id: &str,
        associated_data: &[u8],
    ) -> Result<SecretString, CryptoError> {
        if key_id != self.id {
            return Err(CryptoError::WrongKey {
                stored: key_id.to_owned(),
                configured: self.id.clone(),
            });
        }
        if sealed.len() <= NONCE_LEN {
            return Err(CryptoError::Tampered);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated_data,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| CryptoError::NotText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn key(byte: u8) -> TokenKey {
        TokenKey::new(&[byte; 32])
    }

    #[test]
    fn round_trip_with_a_fresh_nonce_each_time() {
        let key = key(7);
        let a = key.seal("refresh-token-value", b"grant-1");
        let b = key.seal("refresh-token-value", b"grant-1");
        assert_ne!(a, b, "a nonce is never reused");
        assert!(
            !a.windows(5).any(|w| w == b"token"),
            "no plaintext in the sealed bytes"
        );
        let opened = key.open(&a, key.id(), b"grant-1").expect("opens");
        assert_eq!(opened.expose_secret(), "refresh-token-value");
    }

    #[test]
    fn tampering_another_row_and_a_wrong_key_are_told_apart() {
        let key_a = key(1);
        let mut sealed = key_a.seal("secret", b"grant-1");
        assert_eq!(
            key_a.open(&sealed, key_a.id(), b"grant-2").unwrap_err(),
            CryptoError::Tampered
        );
        let key_b = key(2);
        assert!(matches!(
            key_b.open(&sealed, key_a.id(), b"grant-1").unwrap_err(),
            CryptoError::WrongKey { .. }
        ));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            key_a.open(&sealed, key_a.id(), b"grant-1").unwrap_err(),
            CryptoError::Tampered
        );
        assert_eq!(
            key_a.open(&[1, 2, 3], key_a.id(), b"grant-1").unwrap_err(),
            CryptoError::Tampered
        );
    }

    #[test]
    fn debug_shows_only_the_id() {
        let key = key(9);
        let debug = format!("{key:?}");
        assert!(debug.contains(key.id()) && !debug.contains("cipher"));
    }
}
