//! Access tokens (EdDSA JWTs) and refresh tokens (opaque, stored hashed).
//!
//! The signing key is an Ed25519 key in PKCS#8 PEM, loaded from
//! configuration. The development stack has none at first: it generates one
//! and keeps it in a file, so tokens survive restarts. The key id (`kid`) is
//! derived from the public key, so the same key always has the same id and a
//! new key gets a new one; the gateway refreshes its JWKS on an unknown `kid`.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use emporium_schemas::commands::identity::AccessClaims;
use emporium_schemas::values::{Role, UserId};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write the signing key {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("the signing key is not an Ed25519 PKCS#8 PEM key: {0}")]
    Invalid(String),
    #[error("no signing key is configured (IDENTITY_SIGNING_KEY or IDENTITY_SIGNING_KEY_FILE)")]
    Missing,
    #[error("random source failed")]
    Random,
    #[error("cannot sign: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// The DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The key access tokens are signed with, and its public half as a JWK.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    kid: String,
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let encoding = EncodingKey::from_ed_pem(pem).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let mut public =
            Jwk::from_encoding_key(&encoding, Algorithm::EdDSA).map_err(|e| KeyError::Invalid(e.to_string()))?;
        let jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(pair) = &public.algorithm else {
            return Err(KeyError::Invalid("not an octet key pair".to_owned()));
        };
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(pair.x.as_bytes())[..12]);
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        public.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        Ok(Self { encoding, kid, public })
    }

    /// A fresh key, as PEM.
    pub fn generate_pem() -> Result<String, KeyError> {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        let mut seed = [0_u8; 32];
        SystemRandom::new().fill(&mut seed).map_err(|_| KeyError::Random)?;
        der.extend_from_slice(&seed);
        let body = base64::engine::general_purpose::STANDARD.encode(&der);
        Ok(format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n"))
    }

    /// Reads the key at `path`; when it does not exist and `generate` is set
    /// (development), writes a new one there first, readable by its owner only.
    pub fn load_or_generate(path: &Path, generate: bool) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(pem) => Self::from_pem(&pem),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && generate => {
                let pem = Self::generate_pem()?;
                write_private(path, pem.as_bytes())
                    .map_err(|source| KeyError::Write { path: shown.clone(), source })?;
                tracing::info!(path = %shown, "generated a signing key for development");
                Self::from_pem(pem.as_bytes())
            }
            Err(source) => Err(KeyError::Read { path: shown, source }),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.public.clone()] }
    }

    /// A signed access token for `user`, valid until `expires_at`.
    pub fn issue(
        &self,
        user: UserId,
        role: Role,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = AccessClaims {
            sub: user,
            role,
            jti: Uuid::now_v7(),
            iss: AccessClaims::ISSUER.to_owned(),
            aud: AccessClaims::AUDIENCE.to_owned(),
            iat: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        Ok(jsonwebtoken::encode(&header, &claims, &self.encoding)?)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // create_new: two instances starting at once must not overwrite each other's key.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)
}

/// A refresh token as the client holds it: 32 random bytes, base64url.
pub fn new_refresh_token() -> Result<String, KeyError> {
    let mut bytes = [0_u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| KeyError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps of a refresh token. A fast hash is enough: the token
/// has 256 random bits, so there is nothing to guess.
pub fn refresh_token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    #[test]
    fn an_issued_token_verifies_with_the_published_key_and_carries_the_claims() {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let user = UserId::from(Uuid::now_v7());
        let now = Utc::now();
        let token = key.issue(user, Role::Seller, now, now + chrono::TimeDelta::minutes(15)).unwrap();

        let jwks = key.jwks();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        let jwk = jwks.find(key.kid()).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AccessClaims::AUDIENCE]);
        validation.set_issuer(&[AccessClaims::ISSUER]);
        let claims = jsonwebtoken::decode::<AccessClaims>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;
        assert_eq!((claims.sub, claims.role), (user, Role::Seller));
    }

    #[test]
    fn a_key_keeps_its_id_and_another_key_gets_another() {
        let pem = SigningKey::generate_pem().unwrap();
        let once = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let again = SigningKey::from_pem(pem.as_bytes()).unwrap();
        let other = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        assert_eq!(once.kid(), again.kid());
        assert_ne!(once.kid(), other.kid());
    }

    #[test]
    fn a_missing_key_is_generated_once_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/identity.pem");
        assert!(matches!(SigningKey::load_or_generate(&path, false), Err(KeyError::Read { .. })));
        let first = SigningKey::load_or_generate(&path, true).unwrap();
        let second = SigningKey::load_or_generate(&path, true).unwrap();
        assert_eq!(first.kid(), second.kid());
    }

    #[test]
    fn refresh_tokens_are_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_refresh_token().unwrap(), new_refresh_token().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(refresh_token_hash(&a), refresh_token_hash(&a));
        assert_ne!(refresh_token_hash(&a), refresh_token_hash(&b));
    }
}
