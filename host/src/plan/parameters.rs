//! The values users give a toolchain (`-P`, `--arg`) held against the
//! parameters its `describe` declares (contract 0.2.0), before the plugin
//! is called: a plugin only ever sees values that parse as their type.

use super::{Pairs, ParameterInfo};
use crate::Error;

/// Checks `given` against `declared`. `flag` is how the user passes them
/// (`-P` for hyper-parameters, `--arg` for arguments), named in the
/// error. Names a plugin does not declare pass through (an MLproject's own
/// parameters, say); untyped declarations (contract 0.1.0) are not held.
pub fn check(
    toolchain: &str,
    declared: &[ParameterInfo],
    given: &Pairs,
    flag: &str,
) -> Result<(), Error> {
    for p in declared.iter().filter(|p| p.typed) {
        let refuse = |message: String| Error::InvalidArgument {
            field: format!("{flag} {}", p.name),
            message: format!("toolchain '{toolchain}': {message}"),
        };
        let Some(value) = given.get(&p.name) else {
            if p.required {
                return Err(refuse(format!(
                    "parameter '{}' is required ({}{})",
                    p.name,
                    p.kind,
                    describe(p)
                )));
            }
            continue;
        };
        if let Some(why) = problem(p, value) {
            return Err(refuse(format!("'{value}' is not {why}")));
        }
    }
    Ok(())
}

fn describe(p: &ParameterInfo) -> String {
    if p.description.is_empty() {
        String::new()
    } else {
        format!(": {}", p.description)
    }
}

/// Why `value` is not a value of `p`, if it is not.
fn problem(p: &ParameterInfo, value: &str) -> Option<String> {
    let bounds = || match (&p.minimum, &p.maximum) {
        (Some(lo), Some(hi)) => format!(" from {lo} to {hi}"),
        (Some(lo), None) => format!(" of at least {lo}"),
        (None, Some(hi)) => format!(" of at most {hi}"),
        (None, None) => String::new(),
    };
    let inside = |v: f64| {
        p.minimum
            .as_ref()
            .and_then(|n| n.as_f64())
            .is_none_or(|lo| v >= lo)
            && p.maximum
                .as_ref()
                .and_then(|n| n.as_f64())
                .is_none_or(|hi| v <= hi)
    };
    match p.kind.as_str() {
        "int" => match value.trim().parse::<i64>() {
            Ok(v) if inside(v as f64) => None,
            _ => Some(format!("a whole number{}", bounds())),
        },
        "float" => match value.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && inside(v) => None,
            _ => Some(format!("a number{}", bounds())),
        },
        "bool" => (!matches!(value, "true" | "false")).then(|| "true or false".to_string()),
        "choice" => (!p.choices.iter().any(|c| c == value))
            .then(|| format!("one of {}", p.choices.join(", "))),
        "path" => (value.starts_with('/') || value.split('/').any(|c| c == ".."))
            .then(|| "a path inside the source folder (relative, no '..')".to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(kind: &str) -> ParameterInfo {
        ParameterInfo {
            name: "p".into(),
            kind: kind.into(),
            typed: true,
            ..Default::default()
        }
    }

    fn given(v: &str) -> Pairs {
        [("p".to_string(), v.to_string())].into_iter().collect()
    }

    fn err(p: &ParameterInfo, v: &str) -> String {
        check("t", std::slice::from_ref(p), &given(v), "-P")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn values_are_held_to_their_type_and_bounds() {
        let mut int = param("int");
        int.minimum = Some(1.into());
        int.maximum = Some(64.into());
        assert!(check("t", &[int.clone()], &given("8"), "-P").is_ok());
        let e = err(&int, "65");
        assert!(
            e.contains("-P p")
                && e.contains("whole number from 1 to 64")
                && e.contains("toolchain 't'"),
            "{e}"
        );
        assert!(err(&int, "2.5").contains("whole number"));

        let mut float = param("float");
        float.minimum = serde_json::Number::from_f64(0.0);
        assert!(check("t", &[float.clone()], &given("0.5"), "-P").is_ok());
        assert!(err(&float, "-1").contains("at least 0"));
        assert!(err(&float, "NaN").contains("a number"));
        assert!(err(&float, "inf").contains("a number"));

        assert!(err(&param("bool"), "yes").contains("true or false"));
        let mut choice = param("choice");
        choice.choices = vec!["csv".into(), "json".into()];
        assert!(check("t", &[choice.clone()], &given("json"), "--arg").is_ok());
        assert!(err(&choice, "xml").contains("one of csv, json"));
        assert!(err(&param("path"), "../etc").contains("inside the source"));
        assert!(check("t", &[param("string")], &given("anything"), "-P").is_ok());
    }

    #[test]
    fn required_untyped_and_undeclared() {
        let mut req = param("int");
        req.required = true;
        req.description = "how many".into();
        let e = check("t", &[req], &Pairs::new(), "--arg")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--arg p") && e.contains("required") && e.contains("how many"),
            "{e}"
        );
        // 0.1.0: described, not checked.
        let mut old = param("int");
        old.typed = false;
        assert!(check("t", &[old], &given("many"), "-P").is_ok());
        // Not declared: passes through.
        let other: Pairs = [("q".to_string(), "x".to_string())].into_iter().collect();
        assert!(check("t", &[param("int")], &other, "-P").is_ok());
    }
}
