//! Who a toolchain must be signed by: ed25519 keys, signatures kept in the
//! registry as OCI referrers ([`crate::oci::signature`]), and the admin's
//! trust policy — the public keys in the data directory's `trusted-keys/`.
//! With at least one trusted key, a toolchain is registered only with a
//! signature by one of them: from a registry, its referrer; from a file, a
//! detached signature beside it (`FILE.sig`, the same record over the
//! file's sha256) — which is how the build signs the built-ins; uploads,
//! which carry no signature, are refused.
//!
//! ed25519 with `ed25519-dalek` rather than cosign's format through the
//! `sigstore` crate: sigstore brings its own OCI client and TLS stack, and
//! cosign's keyed signatures are ECDSA P-256 in a `.sig` tag layout that
//! predates OCI referrers. Keys are standard PEM files (PKCS#8 private,
//! SPKI public), which `openssl pkey` reads.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};

use super::registry::ToolchainImage;
use crate::home::Home;
use crate::oci::registry::Registry;
use crate::oci::signature::{self, Found, SignatureBlob};
use crate::oci::MANIFEST_MEDIA_TYPE;
use crate::Error;

/// A key's id: the first 16 hex digits of SHA-256 of its 32 raw bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_string()
}

fn key_error(path: &Path, message: String) -> Error {
    Error::Untrusted {
        subject: path.display().to_string(),
        message,
    }
}

/// Writes a new key pair, `PREFIX.key` (PKCS#8 PEM, readable by its owner
/// only) and `PREFIX.pub` (SPKI PEM); returns the key id. Never overwrites.
pub fn keygen(prefix: &Path) -> Result<(String, PathBuf, PathBuf), Error> {
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    for p in [&private, &public] {
        if p.exists() {
            return Err(key_error(p, "exists; choose another name".into()));
        }
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| key_error(&private, e.to_string()))?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| key_error(&public, e.to_string()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private)
            .map_err(|e| Error::io(&private, e))?;
        f.write_all(pem.as_bytes())
            .map_err(|e| Error::io(&private, e))?;
    }
    std::fs::write(&public, pub_pem).map_err(|e| Error::io(&public, e))?;
    Ok((key_id(&key.verifying_key()), private, public))
}

/// Reads a private key file.
pub fn signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| {
        key_error(
            path,
            format!("not an ed25519 private key in PKCS#8 PEM ({e}); make one with `legion toolchain keygen`"),
        )
    })
}

/// Reads a public key file.
pub fn public_key(path: &Path) -> Result<VerifyingKey, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    VerifyingKey::from_public_key_pem(&text)
        .map_err(|e| key_error(path, format!("not an ed25519 public key in SPKI PEM ({e})")))
}

/// The trusted keys.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<(String, VerifyingKey)>,
}

impl Trust {
    /// The keys in `home`'s `trusted-keys/` (`*.pub`); a file there that is
    /// not a key is an error naming it, not a key silently dropped.
    pub fn load(home: &Home) -> Result<Self, Error> {
        let dir = home.trusted_keys();
        let mut keys = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trust::default()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.extension().is_some_and(|x| x == "pub") {
                let key = public_key(&path)?;
                keys.push((key_id(&key), key));
            }
        }
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Trust { keys })
    }

    /// Keys given on the command line instead of the policy's.
    pub fn of(paths: &[PathBuf]) -> Result<Self, Error> {
        let mut keys = Vec::new();
        for p in paths {
            let key = public_key(p)?;
            keys.push((key_id(&key), key));
        }
        Ok(Trust { keys })
    }

    /// Whether a policy is set (any key trusted).
    pub fn is_set(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The trusted key ids.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Trusts the public key in `path`: copied in as `ID.pub`. Returns its id.
    pub fn add(home: &Home, path: &Path) -> Result<String, Error> {
        let key = public_key(path)?;
        let id = key_id(&key);
        let dir = home.trusted_keys();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let pem = key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| key_error(path, e.to_string()))?;
        crate::fsutil::write_atomic(&dir.join(format!("{id}.pub")), pem.as_bytes())?;
        Ok(id)
    }

    /// Stops trusting key `id`.
    pub fn remove(home: &Home, id: &str) -> Result<(), Error> {
        let trust = Trust::load(home)?;
        if !trust.keys.iter().any(|(k, _)| k == id) {
            return Err(Error::InvalidArgument {
                field: "KEY_ID".into(),
                message: format!("'{id}' is not trusted; trusted: {}", list(&trust.ids())),
            });
        }
        let dir = home.trusted_keys();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.extension().is_some_and(|x| x == "pub")
                && public_key(&path).map(|k| key_id(&k)).ok().as_deref() == Some(id)
            {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// The id of a trusted key whose signature of `subject` verifies among
    /// `found`; else why not, naming every key id.
    pub fn check(&self, reference: &str, subject: &str, found: &[Found]) -> Result<String, Error> {
        let mut seen = Vec::new();
        for f in found {
            let blob = match &f.blob {
                Ok(b) => b,
                Err(why) => {
                    seen.push(format!("{} (unreadable: {why})", f.digest));
                    continue;
                }
            };
            let Some((_, key)) = self.keys.iter().find(|(id, _)| id == &blob.key_id) else {
                seen.push(format!("{} (not trusted)", blob.key_id));
                continue;
            };
            if verifies(key, subject, blob) {
                return Ok(blob.key_id.clone());
            }
            seen.push(format!(
                "{} (does not verify: not this toolchain's signature)",
                blob.key_id
            ));
        }
        Err(Error::Untrusted {
            subject: format!("toolchain {reference} ({subject})"),
            message: format!(
                "no signature by a trusted key; trusted keys: {}; signatures found: {}",
                list(&self.ids()),
                if seen.is_empty() {
                    "none (sign it: legion toolchain sign REFERENCE|FILE --key KEY)".to_string()
                } else {
                    seen.join(", ")
                }
            ),
        })
    }
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

fn verifies(key: &VerifyingKey, subject: &str, blob: &SignatureBlob) -> bool {
    if blob.algorithm != "ed25519" || blob.subject != subject {
        return false;
    }
    let Ok(bytes) = hex::decode(&blob.signature) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(&bytes) else {
        return false;
    };
    key.verify_strict(&signature::message(subject), &sig)
        .is_ok()
}

/// Where a file's detached signature is: `FILE.sig`, beside it.
pub fn signature_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

fn file_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Signs the toolchain file `file` with the key in `key_file`: writes
/// `FILE.sig`, the signature record over the file's sha256.
pub fn sign_file(file: &Path, key_file: &Path) -> Result<Signed, Error> {
    let key = signing_key(key_file)?;
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let subject = file_digest(&bytes);
    let key_id = key_id(&key.verifying_key());
    let blob = SignatureBlob {
        algorithm: "ed25519".into(),
        key_id: key_id.clone(),
        subject: subject.clone(),
        signature: hex::encode(key.sign(&signature::message(&subject)).to_bytes()),
    };
    let sig = signature_file(file);
    let text = serde_json::to_vec_pretty(&blob).map_err(|e| Error::json(&sig, e))?;
    crate::fsutil::write_atomic(&sig, &text)?;
    // Public, like the file it signs (a temp file is made 0600).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sig, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io(&sig, e))?;
    Ok(Signed {
        subject,
        signature: sig.display().to_string(),
        key_id,
    })
}

/// Checks `bytes`, read from `file`, against `trust` through the detached
/// signature beside the file. Returns the trusted key's id.
pub fn verify_file(trust: &Trust, file: &Path, bytes: &[u8]) -> Result<String, Error> {
    let sig = signature_file(file);
    let found = match std::fs::read(&sig) {
        Ok(text) => vec![Found {
            digest: sig.display().to_string(),
            blob: serde_json::from_slice(&text).map_err(|e| e.to_string()),
        }],
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => vec![Found {
            digest: sig.display().to_string(),
            blob: Err(e.to_string()),
        }],
    };
    trust.check(&file.display().to_string(), &file_digest(bytes), &found)
}

/// The toolchain manifest `image` names: its digest and size, checked to
/// be a wasm component artifact.
async fn toolchain_manifest(
    registry: &Registry,
    image: &ToolchainImage,
) -> Result<OciDescriptor, Error> {
    let (bytes, digest) = registry
        .pull_manifest_pinned(&image.0, &[MANIFEST_MEDIA_TYPE])
        .await?;
    crate::oci::wasm::read_manifest(&image.0, &bytes)?;
    Ok(OciDescriptor {
        media_type: MANIFEST_MEDIA_TYPE.into(),
        digest,
        size: bytes.len() as i64,
        ..Default::default()
    })
}

/// What a signing did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signed {
    /// The signed manifest's digest.
    pub subject: String,
    /// The signature manifest's digest.
    pub signature: String,
    /// The key's id.
    pub key_id: String,
}

/// Signs the toolchain `image` names with the key in `key_file`, and
/// pushes the signature beside it.
pub async fn sign(image: &ToolchainImage, key_file: &Path) -> Result<Signed, Error> {
    let key = signing_key(key_file)?;
    let registry = Registry::for_reference(&image.0);
    let subject = toolchain_manifest(&registry, image).await?;
    let key_id = key_id(&key.verifying_key());
    let blob = SignatureBlob {
        algorithm: "ed25519".into(),
        key_id: key_id.clone(),
        subject: subject.digest.clone(),
        signature: hex::encode(key.sign(&signature::message(&subject.digest)).to_bytes()),
    };
    let digest = signature::push(&registry, &image.0, &subject, &blob).await?;
    Ok(Signed {
        subject: subject.digest,
        signature: digest,
        key_id,
    })
}

/// Checks the toolchain `image` names against `trust`: the manifest
/// digest and the trusted key that signed it.
pub async fn verify(image: &ToolchainImage, trust: &Trust) -> Result<(String, String), Error> {
    let registry = Registry::for_reference(&image.0);
    let subject = toolchain_manifest(&registry, image).await?;
    verify_digest(&registry, image, &subject.digest, trust)
        .await
        .map(|id| (subject.digest, id))
}

/// Checks manifest `digest` of `image`'s repository against `trust`.
pub async fn verify_digest(
    registry: &Registry,
    image: &ToolchainImage,
    digest: &str,
    trust: &Trust,
) -> Result<String, Error> {
    let found = signature::find(registry, &image.0, digest).await?;
    trust.check(&image.0.whole(), digest, &found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(key: &SigningKey, subject: &str) -> SignatureBlob {
        SignatureBlob {
            algorithm: "ed25519".into(),
            key_id: key_id(&key.verifying_key()),
            subject: subject.into(),
            signature: hex::encode(key.sign(&signature::message(subject)).to_bytes()),
        }
    }

    #[test]
    fn only_a_trusted_key_signing_this_subject_passes() {
        let good = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let trust = Trust {
            keys: vec![(key_id(&good.verifying_key()), good.verifying_key())],
        };
        let subject = format!("sha256:{}", "a".repeat(64));
        let found = |b: SignatureBlob| Found {
            digest: "sha256:sig".into(),
            blob: Ok(b),
        };
        assert_eq!(
            trust
                .check("r", &subject, &[found(blob(&good, &subject))])
                .unwrap(),
            key_id(&good.verifying_key())
        );
        // Untrusted key, another subject, a forged id, a flipped bit, none.
        let untrusted = trust
            .check("r", &subject, &[found(blob(&other, &subject))])
            .unwrap_err()
            .to_string();
        assert!(untrusted.contains("(not trusted)"), "{untrusted}");
        assert!(
            untrusted.contains(&key_id(&good.verifying_key())),
            "{untrusted}"
        );
        let mut elsewhere = blob(&good, &format!("sha256:{}", "b".repeat(64)));
        assert!(trust
            .check("r", &subject, &[found(elsewhere.clone())])
            .is_err());
        elsewhere.subject = subject.clone();
        assert!(trust.check("r", &subject, &[found(elsewhere)]).is_err());
        let mut forged = blob(&other, &subject);
        forged.key_id = key_id(&good.verifying_key());
        assert!(trust.check("r", &subject, &[found(forged)]).is_err());
        let mut flipped = blob(&good, &subject);
        flipped.signature.replace_range(0..2, "00");
        assert!(trust.check("r", &subject, &[found(flipped)]).is_err());
        let none = trust.check("r", &subject, &[]).unwrap_err().to_string();
        assert!(none.contains("signatures found: none"), "{none}");
    }

    #[test]
    fn keys_round_trip_through_pem_files_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (id, private, public) = keygen(&dir.path().join("ci")).unwrap();
        let key = signing_key(&private).unwrap();
        assert_eq!(key_id(&public_key(&public).unwrap()), id);
        assert_eq!(key_id(&key.verifying_key()), id);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private key readable by others");
        assert!(keygen(&dir.path().join("ci")).is_err());
        let err = signing_key(&public).unwrap_err().to_string();
        assert!(err.contains("ci.pub"), "{err}");
        let home = Home::new(dir.path().join("home"));
        assert!(!Trust::load(&home).unwrap().is_set());
        assert_eq!(Trust::add(&home, &public).unwrap(), id);
        assert_eq!(Trust::load(&home).unwrap().ids(), std::slice::from_ref(&id));
        Trust::remove(&home, &id).unwrap();
        assert!(!Trust::load(&home).unwrap().is_set());
        std::fs::write(home.trusted_keys().join("junk.pub"), "nope").unwrap();
        let err = Trust::load(&home).unwrap_err().to_string();
        assert!(err.contains("junk.pub"), "{err}");
    }
}
