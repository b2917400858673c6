//! `legion server --jwks`: bearer JWTs of an identity provider, as
//! Keycloak issues them (roles in `realm_access.roles`), with keys made by
//! `openssl` and tokens signed by `jsonwebtoken`: each role gets what it
//! may; expired, wrongly signed, wrong-audience, wrong-issuer, HS256 and
//! role-less tokens do not; the configured static tokens still work.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::api::{Server, Tokens};
use common::Legion;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://id.example/realms/ml";

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64url(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// An RSA key: its PKCS#8 PEM and its public JWK.
fn rsa_key(dir: &Path, name: &str) -> (Vec<u8>, Value) {
    let path = dir.join(format!("{name}.pem"));
    let p = path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        p,
    ]);
    let modulus = String::from_utf8(openssl(&["rsa", "-in", p, "-noout", "-modulus"])).unwrap();
    let n = hex(modulus.trim().trim_start_matches("Modulus="));
    (
        std::fs::read(&path).unwrap(),
        json!({"kty": "RSA", "kid": name, "use": "sig", "alg": "RS256", "n": b64url(&n), "e": "AQAB"}),
    )
}

/// An EC P-256 key: its PKCS#8 PEM and its public JWK.
fn ec_key(dir: &Path, name: &str) -> (Vec<u8>, Value) {
    let path = dir.join(format!("{name}.pem"));
    let p = path.to_str().unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        p,
    ]);
    let der = openssl(&["pkey", "-in", p, "-pubout", "-outform", "DER"]);
    // The uncompressed point ends the key: 04 || X (32) || Y (32).
    let point = &der[der.len() - 64..];
    (
        std::fs::read(&path).unwrap(),
        json!({"kty": "EC", "kid": name, "use": "sig", "alg": "ES256", "crv": "P-256",
               "x": b64url(&point[..32]), "y": b64url(&point[32..])}),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(user: &str, roles: &[&str]) -> Value {
    json!({
        "iss": ISSUER, "aud": ["legion", "account"], "sub": user, "preferred_username": user,
        "iat": now(), "exp": now() + 600, "realm_access": {"roles": roles},
    })
}

fn sign(alg: Algorithm, kid: &str, pem: &[u8], claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
        _ => unreachable!("the test signs RS256 and ES256 only"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &key).unwrap()
}

/// A server taking JWTs of the key set `jwks` (a file or a URL) as
/// Keycloak issues them (`ISSUER`, audience `legion`, roles in
/// `realm_access.roles`), and the static `tokens` too.
fn keycloak_like(l: &Legion, tokens: &Tokens, jwks: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--jwks",
        jwks,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        "legion",
        "--jwt-roles-claim",
        "realm_access.roles",
    ];
    args.extend_from_slice(extra);
    Server::start(l, Some(&tokens.file), &args)
}

#[test]
fn jwts_are_checked_for_signature_issuer_audience_expiry_and_role() {
    let keys = tempfile::tempdir().unwrap();
    let (rsa, rsa_jwk) = rsa_key(keys.path(), "rsa-1");
    let (ec, ec_jwk) = ec_key(keys.path(), "ec-1");
    let (rogue, _) = rsa_key(keys.path(), "rogue");
    let jwks = keys.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [rsa_jwk, ec_jwk]}).to_string()).unwrap();

    let l = Legion::new();
    let tokens = Tokens::new(&l);
    let srv = keycloak_like(&l, &tokens, jwks.to_str().unwrap(), &[]);
    let admin = sign(
        Algorithm::RS256,
        "rsa-1",
        &rsa,
        &claims("ops", &["offline_access", "admin"]),
    );
    let viewer = sign(Algorithm::ES256, "ec-1", &ec, &claims("dash", &["viewer"]));
    let scientist = sign(
        Algorithm::RS256,
        "rsa-1",
        &rsa,
        &claims("ann", &["data_scientist"]),
    );

    // Each role, as its token says.
    assert_eq!(srv.call("GET", "/api/v1/toolchains", Some(&admin)).0, 200);
    assert_eq!(
        srv.call("DELETE", "/api/v1/toolchains/none", Some(&admin))
            .0,
        404
    );
    assert_eq!(srv.call("GET", "/api/v1/trainings", Some(&viewer)).0, 200);
    let (st, body) = srv.send("POST", "/api/v1/trainings", Some(&viewer), Some(&json!({})));
    assert_eq!(st, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'dash' is a viewer"),
        "{body}"
    );
    let (st, body) = srv.send(
        "POST",
        "/api/v1/trainings",
        Some(&scientist),
        Some(&json!({})),
    );
    assert_eq!(st, 400, "past the role check to the body: {body}");
    assert_eq!(
        srv.call("DELETE", "/api/v1/toolchains/none", Some(&scientist))
            .0,
        403
    );

    // Refused, each saying why, none naming the token.
    let mut expired = claims("ops", &["admin"]);
    expired["exp"] = json!(now() - 3600);
    let mut other_aud = claims("ops", &["admin"]);
    other_aud["aud"] = json!("grafana");
    let mut other_iss = claims("ops", &["admin"]);
    other_iss["iss"] = json!("https://evil.example");
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims("ops", &["admin"]),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    for (token, why) in [
        (sign(Algorithm::RS256, "rsa-1", &rsa, &expired), "expired"),
        (
            sign(Algorithm::RS256, "rsa-1", &rsa, &other_aud),
            "audience",
        ),
        (sign(Algorithm::RS256, "rsa-1", &rsa, &other_iss), "issuer"),
        (
            sign(
                Algorithm::RS256,
                "rsa-1",
                &rogue,
                &claims("ops", &["admin"]),
            ),
            "signature",
        ),
        (
            sign(
                Algorithm::RS256,
                "rogue",
                &rogue,
                &claims("ops", &["admin"]),
            ),
            "no key",
        ),
        (hs, "RS256 and ES256"),
        ("a.b.c".to_string(), "not a JWT"),
    ] {
        let (st, body) = srv.call("GET", "/api/v1/trainings", Some(&token));
        assert_eq!(st, 401, "{why}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{why}: {message}");
        assert!(!message.contains(&token), "the token is never echoed");
    }
    // Valid, but no Legion role.
    let nobody = sign(
        Algorithm::ES256,
        "ec-1",
        &ec,
        &claims("guest", &["uma_authorization"]),
    );
    let (st, body) = srv.call("GET", "/api/v1/trainings", Some(&nobody));
    assert_eq!(st, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("realm_access.roles"));

    // The tokens file still counts; nothing at all does not.
    assert_eq!(
        srv.call("GET", "/api/v1/trainings", Some(&tokens.viewer)).0,
        200
    );
    assert_eq!(srv.call("GET", "/api/v1/trainings", None).0, 401);
}

#[test]
fn a_bad_key_set_or_missing_issuer_stops_the_server_at_start() {
    let l = Legion::new();
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#,
    )
    .unwrap();
    let err = l.fails(&[
        "server",
        "--jwks",
        jwks.to_str().unwrap(),
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        "legion",
    ]);
    assert!(err.contains("jwks.json") && err.contains("key s"), "{err}");
    let err = l.fails(&["server", "--jwks", jwks.to_str().unwrap()]);
    assert!(err.contains("--jwt-issuer"), "{err}");
}

/// A folder served over HTTP on 127.0.0.1 (Python's `http.server`), as
/// an identity provider serves its key set; stopped on drop.
struct Provider {
    child: std::process::Child,
    url: String,
}

impl Provider {
    fn start(dir: &Path) -> Self {
        let port = common::free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/certs.json");
        // A hang guard, not a timing check.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while reqwest::blocking::get(&url).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the provider never answered"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Provider { child, url }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn keys_from_the_providers_url_follow_a_rotation_and_survive_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_jwk) = rsa_key(dir.path(), "old");
    let (new, new_jwk) = ec_key(dir.path(), "new");
    let certs = dir.path().join("certs.json");
    std::fs::write(&certs, json!({"keys": [old_jwk]}).to_string()).unwrap();
    let mut provider = Provider::start(dir.path());

    let l = Legion::new();
    let tokens = Tokens::new(&l);
    // No rate limit on fetches for an unknown key: the test rotates at once.
    let srv = keycloak_like(&l, &tokens, &provider.url, &["--jwks-min-refresh", "0s"]);
    let get = |token: &str| srv.call("GET", "/api/v1/trainings", Some(token));
    let by_old = sign(Algorithm::RS256, "old", &old, &claims("ann", &["viewer"]));
    let by_new = sign(Algorithm::ES256, "new", &new, &claims("ann", &["viewer"]));
    assert_eq!(get(&by_old).0, 200);

    // The provider rotates: the new key is fetched when a token names it,
    // and the old one is gone with the old set.
    std::fs::write(&certs, json!({"keys": [new_jwk]}).to_string()).unwrap();
    assert_eq!(get(&by_new).0, 200, "a token of the rotated-in key");
    let (st, body) = get(&by_old);
    assert_eq!(st, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no key of the key set"),
        "{body}"
    );

    // The provider down: the keys held still verify.
    let url = provider.url.clone();
    let _ = provider.child.kill();
    let _ = provider.child.wait();
    assert_eq!(get(&by_new).0, 200);
    assert_eq!(get(&by_old).0, 401);

    // A key set that cannot be fetched stops the server at start, naming it.
    let err = l.fails(&[
        "server",
        "--jwks",
        &url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        "legion",
    ]);
    assert!(err.contains(&format!("--jwks {url}")), "{err}");
}
