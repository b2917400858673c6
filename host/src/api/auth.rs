//! Who may call the API: bearer tokens, each with a role, configured by the
//! admin in a tokens file that holds only their SHA-256 hashes.
//!
//! ```json
//! {"tokens": [{"name": "ci", "role": "data-scientist", "sha256": "<hex>"}]}
//! ```
//!
//! `legion server token NAME --role ROLE` makes a token and the entry to
//! add. Roles are ODAHU's: `admin` (everything, toolchains and policy),
//! `data-scientist` (runs, models, deployments), `viewer` (read only).
//! Tokens are never logged; a request without a valid one gets 401, one
//! whose role lacks the right gets 403.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// What a caller may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads, and runs trainings, packagings and deployments.
    DataScientist,
    /// Everything, toolchains and policy included.
    Admin,
}

impl Role {
    /// As written in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::DataScientist => "data-scientist",
            Role::Admin => "admin",
        }
    }
}

/// One configured token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (shown in logs instead of the token).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, hex.
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

/// A caller the API knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The configured tokens, by hash; `None` is no authentication (the server
/// then listens on loopback only).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Option<HashMap<[u8; 32], Caller>>,
}

impl Tokens {
    /// No authentication: every caller is an admin.
    pub fn none() -> Self {
        Tokens { by_hash: None }
    }

    /// Reads a tokens file; every entry is checked (a bad hash, a name used
    /// twice), naming the entry.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let file: TokensFile = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        let mut by_hash = HashMap::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let bad = |message: String| Error::InvalidArgument {
                field: format!("{} tokens[{i}] '{}'", path.display(), t.name),
                message,
            };
            let hash: [u8; 32] = hex::decode(&t.sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("sha256 is not 64 hex digits".into()))?;
            if !names.insert(t.name.clone()) {
                return Err(bad("the name is used twice".into()));
            }
            by_hash.insert(
                hash,
                Caller {
                    name: t.name,
                    role: t.role,
                },
            );
        }
        Ok(Tokens {
            by_hash: Some(by_hash),
        })
    }

    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        self.by_hash.is_some()
    }

    /// The caller an `Authorization` header value names, if any. Tokens
    /// are compared by hash, so the comparison takes no time that depends
    /// on how much of a guessed token is right.
    pub fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        let Some(map) = &self.by_hash else {
            return Some(Caller {
                name: "anonymous (no authentication)".into(),
                role: Role::Admin,
            });
        };
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        map.get(&hash).cloned()
    }
}

/// A new random token (256 bits, URL-safe) and its entry for the tokens file.
pub fn new_token(name: &str, role: Role) -> (String, TokenEntry) {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("lgn_{}", hex::encode(bytes));
    let entry = TokenEntry {
        name: name.to_string(),
        role,
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
    };
    (token, entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_known_by_its_hash_only_and_roles_order() {
        let (token, entry) = new_token("ci", Role::DataScientist);
        assert!(!entry.sha256.contains(&token));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, serde_json::json!({"tokens": [entry]}).to_string()).unwrap();
        let tokens = Tokens::load(&path).unwrap();
        let caller = tokens.caller(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role),
            ("ci", Role::DataScientist)
        );
        assert!(tokens.caller(Some("Bearer nope")).is_none());
        assert!(tokens.caller(Some(&token)).is_none(), "without Bearer");
        assert!(tokens.caller(None).is_none());
        assert!(Role::Viewer < Role::DataScientist && Role::DataScientist < Role::Admin);
        assert_eq!(Tokens::none().caller(None).unwrap().role, Role::Admin);
    }

    #[test]
    fn a_bad_tokens_file_is_refused_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(
            &path,
            r#"{"tokens": [{"name": "ci", "role": "viewer", "sha256": "abc"}]}"#,
        )
        .unwrap();
        let e = Tokens::load(&path).unwrap_err().to_string();
        assert!(e.contains("tokens[0] 'ci'") && e.contains("64 hex"), "{e}");
        std::fs::write(
            &path,
            r#"{"tokens": [{"name": "ci", "role": "root", "sha256": ""}]}"#,
        )
        .unwrap();
        assert!(Tokens::load(&path)
            .unwrap_err()
            .to_string()
            .contains("root"));
    }
}
