//! Names that must be valid, checked once where they enter and carried as
//! their own types after that: a model's name and version here, and the
//! host's toolchain names on the same rule ([`check_label`]).
//!
//! Each type parses with [`std::str::FromStr`], so clap takes it directly,
//! and deserialises through the same check, so a stored or sent name is
//! never trusted unchecked.

/// A name that breaks its rule: says which kind of name, the value, and
/// the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid {kind}: {rule}")]
pub struct InvalidName {
    /// Which kind of name (`model name`, `toolchain name`, …).
    pub kind: &'static str,
    /// The value given.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

/// Checks a DNS-label-like name: 1 to `max` characters of lowercase
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit.
/// Model names and toolchain names follow it (they become image
/// repositories, Kubernetes label values and file names).
pub fn check_label(kind: &'static str, value: &str, max: usize) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            kind,
            value: value.to_string(),
            rule: format!("use 1-{max} characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"),
        })
    }
}

/// Checks a version: 1 to 128 characters of letters, digits, `.`, `_`
/// and `-`, starting with a letter, digit or `_` (a valid OCI tag).
fn check_version(value: &str) -> Result<(), InvalidName> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            kind: "model version",
            value: value.to_string(),
            rule: "use 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter, digit or '_'".into(),
        })
    }
}

/// Defines a checked string newtype: `FromStr` (so clap parses it),
/// `Display`, `AsRef<str>`, and serde through the check. Exported so the
/// host defines its toolchain names the same way.
#[macro_export]
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, $crate::names::InvalidName> {
                let value = value.into();
                let check: fn(&str) -> Result<(), $crate::names::InvalidName> = $check;
                check(&value)?;
                Ok($name(value))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::names::InvalidName;
            fn from_str(s: &str) -> Result<Self, $crate::names::InvalidName> {
                $name::new(s)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                $name::new(s).map_err(::serde::de::Error::custom)
            }
        }
    };
}

checked_name!(
    /// A model's name: lowercase letters, digits, `.`, `_`, `-`; at most 128.
    ModelName,
    |v| check_label("model name", v, 128)
);

checked_name!(
    /// A model's version: letters, digits, `.`, `_`, `-`; at most 128.
    ModelVersion,
    check_version
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_rules() {
        assert_eq!(ModelName::new("wine-2.a_b").unwrap().as_str(), "wine-2.a_b");
        for bad in ["", "Wine", "-wine", "wi ne", "wine/1", &"a".repeat(129)] {
            let e = ModelName::new(bad).unwrap_err();
            assert_eq!(e.kind, "model name");
            assert!(e.to_string().contains("not a valid model name"), "{e}");
        }
        assert!(ModelVersion::new("V1.0_rc-2").is_ok());
        assert!(ModelVersion::new("_1").is_ok());
        for bad in ["", "-1", "1/2", "1:2", &"1".repeat(129)] {
            assert!(ModelVersion::new(bad).is_err(), "{bad:?}");
        }
        assert!(check_label("toolchain name", "py", 63).is_ok());
        assert!(check_label("toolchain name", &"p".repeat(64), 63).is_err());
    }

    #[test]
    fn deserialising_checks_too() {
        let ok: ModelName = serde_json::from_str("\"iris\"").unwrap();
        assert_eq!(ok, *"iris");
        let bad = serde_json::from_str::<ModelName>("\"Iris\"").unwrap_err();
        assert!(bad.to_string().contains("not a valid model name"), "{bad}");
    }
}
