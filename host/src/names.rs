//! Names that must be valid, checked once where they enter (clap parses
//! them directly) and carried as their own types after that: model names
//! and versions (shared with the model server) and toolchain names.

pub use legion_serve::names::{check_label, InvalidName, ModelName, ModelVersion};

legion_serve::checked_name!(
    /// A registered toolchain's name: lowercase letters, digits, `.`, `_`,
    /// `-`, starting with a letter or digit; at most 63 (a Kubernetes label
    /// value).
    ToolchainName,
    |v| check_label("toolchain name", v, 63)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_names_are_checked() {
        assert_eq!(
            "mlflow".parse::<ToolchainName>().unwrap().as_str(),
            "mlflow"
        );
        let e = "Bad Name".parse::<ToolchainName>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "'Bad Name' is not a valid toolchain name: use 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
        );
        assert!(ToolchainName::new("a".repeat(64)).is_err());
    }
}
