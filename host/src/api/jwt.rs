//! Bearer JWTs from an identity provider (Keycloak, Dex, an OIDC issuer),
//! validated against its JSON Web Key Set: RS256 or ES256 only, signature,
//! issuer, audience, expiry and not-before checked (60 s of leeway), the
//! role taken from a configurable claim — a dotted path such as Keycloak's
//! `realm_access.roles` — holding `admin`, `data-scientist` (or ODAHU's
//! `data_scientist`) or `viewer`; the highest one counts.
//!
//! The key set is a file, or the provider's URL (Keycloak:
//! `…/realms/R/protocol/openid-connect/certs`): fetched at start, again
//! every `--jwks-refresh`, and at once when a token names a key it does
//! not hold (a rotation) — at most once per `--jwks-min-refresh`, so that
//! made-up key ids cannot turn the API against the provider. A failed
//! fetch keeps the keys it had.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::auth::{Caller, Role};
use crate::Error;

/// How JWTs are checked.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The issuer (`iss`) tokens must name.
    pub issuer: String,
    /// The audience (`aud`) tokens must include.
    pub audience: String,
    /// Where the roles are: a dotted path into the claims.
    pub roles_claim: String,
}

/// A key of the set: its id, algorithm and key.
type Key = (Option<String>, Algorithm, DecodingKey);

/// A verifier over a key set, fetched again from its URL when it has one.
pub struct Jwt {
    keys: RwLock<Arc<Vec<Key>>>,
    settings: JwtSettings,
    remote: Option<KeySource>,
}

/// A key set's URL, and when it was last asked.
struct KeySource {
    url: String,
    http: reqwest::Client,
    /// Fetches on an unknown key id wait for each other, and come no
    /// closer than `min_refresh` after the last one.
    last: tokio::sync::Mutex<Instant>,
    min_refresh: Duration,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("keys", &self.current().len())
            .field("settings", &self.settings)
            .field("url", &self.remote.as_ref().map(|r| &r.url))
            .finish()
    }
}

/// What the refusal says when no key matches: the one that may mean the
/// provider rotated its keys.
const NO_KEY: &str = "no key of the key set matches the token's kid and algorithm";

/// Why a token was refused (said in the 401, never with the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not valid: signature, issuer, audience, expiry, algorithm, shape.
    Invalid(String),
    /// Valid, but with no Legion role in the claim.
    NoRole(String),
}

impl Jwt {
    /// Reads a JWKS file (`{"keys": [...]}`); keys that are not RSA or
    /// EC P-256 signing keys are refused, naming the key.
    pub fn load(path: &Path, settings: JwtSettings) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        Self::from_set(&set, settings).map_err(|message| Error::InvalidArgument {
            field: format!("--jwks {}", path.display()),
            message,
        })
    }

    /// Fetches the key set at `url` (an `http://` or `https://` URL);
    /// refused at start if it cannot be read.
    pub async fn fetch(
        url: &str,
        settings: JwtSettings,
        min_refresh: Duration,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| Error::Unreachable {
                server: url.to_string(),
                source,
            })?;
        let keys = fetch_keys(&http, url)
            .await
            .map_err(|message| Error::InvalidArgument {
                field: format!("--jwks {url}"),
                message,
            })?;
        Ok(Jwt {
            keys: RwLock::new(Arc::new(keys)),
            settings,
            remote: Some(KeySource {
                url: url.to_string(),
                http,
                last: tokio::sync::Mutex::new(Instant::now()),
                min_refresh,
            }),
        })
    }

    fn current(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches the key set again (a URL's; a file's is read once). With
    /// `forced` false, not sooner than `--jwks-min-refresh` after the
    /// last fetch. Whether the keys were replaced.
    pub async fn refresh(&self, forced: bool) -> bool {
        let Some(source) = &self.remote else {
            return false;
        };
        let mut last = source.last.lock().await;
        if !forced && last.elapsed() < source.min_refresh {
            return false;
        }
        *last = Instant::now();
        match fetch_keys(&source.http, &source.url).await {
            Ok(keys) => {
                tracing::info!(url = %source.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                true
            }
            Err(message) => {
                tracing::warn!(url = %source.url, "JWKS fetch failed, keeping the keys held: {message}");
                false
            }
        }
    }

    /// Fetches the key set every `every` until `stop` (nothing for a file).
    pub async fn keep_fresh(&self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        if self.remote.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.refresh(true).await;
        }
    }

    /// The caller `token` names; a token whose key is not held makes the
    /// set be fetched again (see the module's notes), then is checked once
    /// more.
    pub async fn caller_fresh(&self, token: &str) -> Result<Caller, Refusal> {
        match self.caller(token) {
            Err(Refusal::Invalid(m)) if m == NO_KEY && self.refresh(false).await => {
                self.caller(token)
            }
            r => r,
        }
    }

    /// A verifier over `set`.
    pub fn from_set(set: &JwkSet, settings: JwtSettings) -> Result<Self, String> {
        Ok(Jwt {
            keys: RwLock::new(Arc::new(keys_of(set)?)),
            settings,
            remote: None,
        })
    }

    /// The caller `token` names.
    pub fn caller(&self, token: &str) -> Result<Caller, Refusal> {
        let bad = |m: &str| Refusal::Invalid(m.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("not a JWT"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(bad("only RS256 and ES256 tokens are accepted"));
        }
        let keys = self.current();
        let candidates = keys.iter().filter(|(kid, alg, _)| {
            *alg == header.alg && (header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
        });
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 60;
        let mut last = bad(NO_KEY);
        for (_, _, key) in candidates {
            match jsonwebtoken::decode::<Value>(token, key, &validation) {
                Ok(data) => return self.claims_caller(&data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = bad(match e.kind() {
                        K::ExpiredSignature => "the token has expired",
                        K::ImmatureSignature => "the token is not valid yet",
                        K::InvalidAudience => "the token is for another audience",
                        K::InvalidIssuer => "the token is from another issuer",
                        K::InvalidSignature => "the token's signature does not verify",
                        K::MissingRequiredClaim(_) => "the token lacks exp, iss or aud",
                        _ => "the token is invalid",
                    });
                }
            }
        }
        Err(last)
    }

    fn claims_caller(&self, claims: &Value) -> Result<Caller, Refusal> {
        let mut at = claims;
        for part in self.settings.roles_claim.split('.') {
            at = at.get(part).unwrap_or(&Value::Null);
        }
        let names: Vec<&str> = match at {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let role = names
            .iter()
            .filter_map(|n| match *n {
                "admin" => Some(Role::Admin),
                "data-scientist" | "data_scientist" => Some(Role::DataScientist),
                "viewer" => Some(Role::Viewer),
                _ => None,
            })
            .max();
        let name = ["preferred_username", "email", "sub"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .unwrap_or("(unnamed)")
            .to_string();
        match role {
            Some(role) => Ok(Caller { name, role }),
            None => Err(Refusal::NoRole(format!(
                "'{name}' has no Legion role (admin, data-scientist, viewer) in the claim {}",
                self.settings.roles_claim
            ))),
        }
    }
}

/// The signing keys of `set`; keys that are not RSA or EC P-256 are
/// refused, naming the key.
fn keys_of(set: &JwkSet) -> Result<Vec<Key>, String> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = jwk
            .common
            .key_id
            .clone()
            .unwrap_or_else(|| format!("keys[{i}]"));
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p)
                if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => {
                return Err(format!(
                    "key {name}: only RSA and EC P-256 keys are accepted"
                ))
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {name}: {e}"))?;
        keys.push((jwk.common.key_id.clone(), alg, key));
    }
    if keys.is_empty() {
        return Err("the key set has no keys".into());
    }
    Ok(keys)
}

/// GETs and reads a key set.
async fn fetch_keys(http: &reqwest::Client, url: &str) -> Result<Vec<Key>, String> {
    let r = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch it: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    let set: JwkSet = r
        .json()
        .await
        .map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    keys_of(&set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verifier(roles_claim: &str) -> Jwt {
        // Any RSA public key will do for the claim tests.
        let set: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
            "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
            "e": "AQAB"}]}))
        .unwrap();
        Jwt::from_set(
            &set,
            JwtSettings {
                issuer: "https://id.example".into(),
                audience: "legion".into(),
                roles_claim: roles_claim.into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn the_highest_known_role_in_the_claim_counts() {
        let v = verifier("realm_access.roles");
        let c = v
            .claims_caller(&json!({"preferred_username": "ann", "realm_access": {"roles": ["offline_access", "viewer", "data_scientist"]}}))
            .unwrap();
        assert_eq!((c.name.as_str(), c.role), ("ann", Role::DataScientist));
        let e = v
            .claims_caller(&json!({"sub": "x", "realm_access": {"roles": ["uma"]}}))
            .unwrap_err();
        assert!(matches!(e, Refusal::NoRole(m) if m.contains("realm_access.roles")));
        let flat = verifier("role");
        assert_eq!(
            flat.claims_caller(&json!({"sub": "s", "role": "admin"}))
                .unwrap()
                .role,
            Role::Admin
        );
    }

    #[test]
    fn tokens_that_are_not_rs256_or_es256_jwts_are_refused() {
        let v = verifier("roles");
        assert!(matches!(v.caller("lgn_abc"), Err(Refusal::Invalid(_))));
        // {"alg":"HS256","typ":"JWT"} . {} . sig
        let hs = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln";
        assert_eq!(
            v.caller(hs),
            Err(Refusal::Invalid(
                "only RS256 and ES256 tokens are accepted".into()
            ))
        );
    }
}
