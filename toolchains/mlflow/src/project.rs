//! The `MLproject` file: entry points, typed parameters, environment.

use std::collections::BTreeMap;
use std::path::Path;

use legion_sdk::{KeyValue, ToolchainError};
use serde::Deserialize;

/// What of `MLproject` matters here.
#[derive(Debug, Deserialize)]
pub struct Project {
    #[serde(default)]
    pub python_env: Option<String>,
    #[serde(default)]
    pub conda_env: Option<String>,
    #[serde(default)]
    pub docker_env: Option<serde_norway::Value>,
    #[serde(default)]
    pub entry_points: BTreeMap<String, EntryPoint>,
}

#[derive(Debug, Deserialize)]
pub struct EntryPoint {
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    #[serde(default)]
    pub command: Option<String>,
}

/// `alpha: float` or `alpha: {type: float, default: 0.5}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Parameter {
    Short(String),
    Full {
        #[serde(rename = "type", default = "string_type")]
        kind: String,
        #[serde(default)]
        default: Option<serde_norway::Value>,
    },
}

fn string_type() -> String {
    "string".into()
}

impl Parameter {
    fn kind(&self) -> &str {
        match self {
            Parameter::Short(k) => k,
            Parameter::Full { kind, .. } => kind,
        }
    }
    fn default(&self) -> Option<String> {
        match self {
            Parameter::Full {
                default: Some(v), ..
            } => Some(match v {
                serde_norway::Value::String(s) => s.clone(),
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                other => serde_norway::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PythonEnv {
    #[serde(default)]
    python: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CondaEnv {
    #[serde(default)]
    dependencies: Vec<serde_norway::Value>,
}

fn find_mlproject(root: &Path) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.eq_ignore_ascii_case("mlproject"))
    })
}

impl Project {
    pub fn read(root: &Path) -> Result<Self, ToolchainError> {
        let path = find_mlproject(root).ok_or_else(|| {
            ToolchainError::invalid("source: no MLproject file at the project root")
        })?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ToolchainError::invalid(format!("MLproject: {e}")))?;
        let project: Project = serde_norway::from_str(&text)
            .map_err(|e| ToolchainError::invalid(format!("MLproject: {e}")))?;
        if project.docker_env.is_some() {
            return Err(ToolchainError::Unsupported(
                "MLproject: docker_env projects are not supported; use python_env or conda_env"
                    .into(),
            ));
        }
        Ok(project)
    }

    /// Checks the `-P` parameters against entry point `entry`; returns every
    /// parameter to pass (given ones, then declared defaults).
    pub fn check_parameters(
        &self,
        entry: &str,
        given: &[KeyValue],
        root: &Path,
    ) -> Result<BTreeMap<String, String>, ToolchainError> {
        let Some(ep) = self.entry_points.get(entry) else {
            // MLflow also runs a .py or .sh file of the project directly, with untyped parameters.
            let is_script =
                (entry.ends_with(".py") || entry.ends_with(".sh")) && root.join(entry).is_file();
            if is_script {
                return Ok(given
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.clone()))
                    .collect());
            }
            let known: Vec<&str> = self.entry_points.keys().map(String::as_str).collect();
            return Err(ToolchainError::invalid(format!(
                "entrypoint: '{entry}' is not an entry point of MLproject (it has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        if ep.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
            return Err(ToolchainError::invalid(format!(
                "MLproject: entry point '{entry}' has no command"
            )));
        }
        let mut out = BTreeMap::new();
        let mut problems = Vec::new();
        for kv in given {
            match ep.parameters.get(&kv.key) {
                None => {
                    let declared: Vec<&str> = ep.parameters.keys().map(String::as_str).collect();
                    problems.push(format!(
                        "parameter '{}' is not declared by entry point '{entry}' (declared: {})",
                        kv.key,
                        if declared.is_empty() {
                            "none".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ));
                }
                Some(p) => match check_type(p.kind(), &kv.value) {
                    Ok(()) => {
                        out.insert(kv.key.clone(), kv.value.clone());
                    }
                    Err(why) => problems.push(format!("parameter '{}': {why}", kv.key)),
                },
            }
        }
        for (name, p) in &ep.parameters {
            if out.contains_key(name) || given.iter().any(|kv| &kv.key == name) {
                continue;
            }
            match p.default() {
                Some(d) => {
                    out.insert(name.clone(), d);
                }
                None => problems.push(format!(
                    "parameter '{name}' ({}) is required by entry point '{entry}'",
                    p.kind()
                )),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ToolchainError::invalid(problems.join("; ")))
        }
    }

    /// pip requirements for the run: the project's, plus mlflow-skinny when
    /// the project does not list MLflow itself.
    pub fn requirements(&self, root: &Path) -> Result<Vec<String>, ToolchainError> {
        let mut reqs = if let Some(file) = &self.python_env {
            let env: PythonEnv = read_yaml(root, file)?;
            env.dependencies
        } else if let Some(file) = &self.conda_env {
            let env: CondaEnv = read_yaml(root, file)?;
            let mut pip = Vec::new();
            for d in env.dependencies {
                if let serde_norway::Value::Mapping(m) = d {
                    if let Some(serde_norway::Value::Sequence(list)) = m.get("pip") {
                        pip.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
                    }
                }
            }
            pip
        } else {
            std::fs::read_to_string(root.join("requirements.txt"))
                .map(|t| {
                    t.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let has_mlflow = reqs.iter().any(|r| {
            let name: String = r
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            name.eq_ignore_ascii_case("mlflow") || name.eq_ignore_ascii_case("mlflow-skinny")
        });
        if !has_mlflow {
            reqs.insert(0, "mlflow-skinny".to_string());
        }
        Ok(reqs)
    }

    /// `major.minor` from `python_env.yaml`'s `python:`, if any.
    pub fn python_version(&self, root: &Path) -> Option<String> {
        let env: PythonEnv = read_yaml(root, self.python_env.as_ref()?).ok()?;
        let v = env.python?;
        let parts: Vec<&str> = v.split('.').collect();
        Some(parts.iter().take(2).copied().collect::<Vec<_>>().join("."))
    }
}

fn read_yaml<T: serde::de::DeserializeOwned>(root: &Path, file: &str) -> Result<T, ToolchainError> {
    let path = root.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ToolchainError::invalid(format!("MLproject names {file}: {e}")))?;
    serde_norway::from_str(&text).map_err(|e| ToolchainError::invalid(format!("{file}: {e}")))
}

fn check_type(kind: &str, value: &str) -> Result<(), String> {
    match kind {
        "float" => value
            .parse::<f64>()
            .map(|_| ())
            .map_err(|_| format!("'{value}' is not a float")),
        "int" => value
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| format!("'{value}' is not an int")),
        "string" | "str" => Ok(()),
        "path" | "uri" => {
            if value.is_empty() {
                Err(format!("an empty {kind}"))
            } else {
                Ok(())
            }
        }
        other => Err(format!("unknown parameter type '{other}' in MLproject")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        serde_norway::from_str(yaml).unwrap()
    }

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue::new(k, v)
    }

    const YAML: &str = "
name: wine
entry_points:
  main:
    parameters:
      alpha: {type: float, default: 0.5}
      n: int
      label: {type: string, default: x}
    command: python train.py
";

    #[test]
    fn typed_parameters() {
        let p = project(YAML);
        let root = Path::new("/nonexistent");
        let ok = p.check_parameters("main", &[kv("n", "3")], root).unwrap();
        assert_eq!(ok.get("alpha").map(String::as_str), Some("0.5"));
        assert_eq!(ok.get("n").map(String::as_str), Some("3"));
        let err = p
            .check_parameters("main", &[kv("n", "three"), kv("beta", "1")], root)
            .unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains("'three' is not an int"), "{text}");
        assert!(text.contains("parameter 'beta' is not declared"), "{text}");
        let err = p.check_parameters("main", &[], root).unwrap_err();
        assert!(format!("{err:?}").contains("parameter 'n' (int) is required"));
        let err = p.check_parameters("evaluate", &[], root).unwrap_err();
        assert!(format!("{err:?}")
            .contains("'evaluate' is not an entry point of MLproject (it has: main)"));
    }
}
