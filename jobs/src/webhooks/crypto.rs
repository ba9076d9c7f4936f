//! Secrets at rest: XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) keyed by
//! `WHARF_ENCRYPTION_KEY`. A random 24-byte nonce per encryption; the associated data binds a
//! ciphertext to its tenant and endpoint, so a row's secret cannot be moved to another row.
//! Stored form: `v1:` + base64(nonce ‖ ciphertext).

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::RngCore;

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 24;
pub const KEY_LEN: usize = 32;

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        SecretBox { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// A key given as standard base64 of exactly 32 bytes.
    pub fn from_base64(b64: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(b64.trim())
            .map_err(|_| "must be the standard base64 encoding of 32 random bytes (`openssl rand -base64 32`)")?;
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("must decode to exactly {KEY_LEN} bytes, not {}", bytes.len()))?;
        Ok(SecretBox::new(&key))
    }

    /// A fresh random key, base64.
    pub fn generate_key_base64() -> String {
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    pub fn seal(&self, plaintext: &str, aad: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: aad.as_bytes() })
            .expect("XChaCha20-Poly1305 encryption of a short secret cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) made with the same key and associated data.
    pub fn open(&self, sealed: &str, aad: &str) -> Result<String, String> {
        let raw = sealed
            .strip_prefix(VERSION)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|r| r.len() > NONCE_LEN)
            .ok_or("the stored secret is not in the expected format")?;
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let pt = self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: aad.as_bytes() }).map_err(
            |_| "the stored secret does not decrypt: WHARF_ENCRYPTION_KEY differs from the key it was stored with",
        )?;
        String::from_utf8(pt).map_err(|_| "the stored secret is not UTF-8".to_string())
    }
}

/// The associated data of an endpoint's secret.
pub fn endpoint_aad(tenant: &str, endpoint_id: &uuid::Uuid) -> String {
    format!("wharf:webhook-secret:{tenant}:{endpoint_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_secrets_round_trip_and_are_bound_to_their_row() {
        let key = SecretBox::generate_key_base64();
        let b = SecretBox::from_base64(&key).unwrap();
        let sealed = b.seal("whsec_abc", "t:1");
        assert!(sealed.starts_with("v1:") && !sealed.contains("whsec_abc"));
        assert_ne!(sealed, b.seal("whsec_abc", "t:1"), "fresh nonce each time");
        assert_eq!(b.open(&sealed, "t:1").unwrap(), "whsec_abc");
        assert!(b.open(&sealed, "t:2").is_err(), "another row's associated data");
        let other = SecretBox::from_base64(&SecretBox::generate_key_base64()).unwrap();
        assert!(other.open(&sealed, "t:1").unwrap_err().contains("WHARF_ENCRYPTION_KEY"));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(b.open(&tampered, "t:1").is_err());
    }

    #[test]
    fn webhooks_bad_keys_are_explained() {
        assert!(SecretBox::from_base64("not base64!").is_err());
        assert!(SecretBox::from_base64(&STANDARD.encode([0u8; 16])).unwrap_err().contains("32"));
    }
}
