//! `legion batch`: score data with a stored model, as a job that ends.

use std::time::Duration;

use clap::Args;

use super::train::{cancel_on_ctrl_c, Progress};
use super::Format;
use crate::batch::{output_folder, BatchOptions};
use crate::exec::local::LocalExecutor;
use crate::home::Home;
use crate::names::ToolchainName;
use crate::plan::{parse_key_value, DataBinding, Resources};
use crate::plugin::Toolchains;
use crate::Error;

/// `legion batch` arguments.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The stored model: NAME:VERSION, a digest, or a registry reference.
    pub model: String,
    /// Data to score (repeatable): file://, http(s)://, s3://, gs:// or
    /// az://, a file or a prefix; `=LOCAL_PATH` names where it goes in the
    /// job's data folder (default: the URI's last segment).
    #[arg(long = "data", value_name = "URI[=LOCAL_PATH]", value_parser = parse_data, required = true)]
    pub data: Vec<DataBinding>,
    /// The folder the results are written to (made if missing).
    // Not `output`: that id is the global `-o` format.
    #[arg(long = "output", value_name = "DIR")]
    pub output_dir: String,
    /// Toolchain that plans the job; it must export `batch` (contract 0.2.0).
    #[arg(long, short = 't', default_value = "python")]
    pub toolchain: ToolchainName,
    /// Toolchain argument (repeatable), checked against its declared parameters.
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub arguments: Vec<(String, String)>,
    /// Image for the steps on a cluster (recorded locally).
    #[arg(long)]
    pub image: Option<String>,
    /// Time the job may run, e.g. 30m, 4h.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn parse_data(s: &str) -> Result<DataBinding, String> {
    // A URI holds ':' and maybe '='; a local path is after the last '=',
    // and has no '/' at its start nor a scheme.
    if let Some((uri, path)) = s.rsplit_once('=') {
        if !uri.is_empty() && !path.is_empty() && !path.contains("://") {
            return Ok(DataBinding {
                uri: uri.to_string(),
                local_path: path.to_string(),
            });
        }
    }
    let name = s
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.contains(':'))
        .ok_or_else(|| format!("'{s}' has no file name to place it under: give URI=LOCAL_PATH"))?;
    Ok(DataBinding {
        uri: if s.contains("://") {
            s.to_string()
        } else {
            // A plain path is a local file.
            let abs = std::path::absolute(s).map_err(|e| format!("'{s}': {e}"))?;
            format!("file://{}", abs.display())
        },
        local_path: name.to_string(),
    })
}

/// Runs `legion batch`; returns the process exit code.
pub async fn run(
    args: BatchArgs,
    home: &Home,
    toolchains: &Toolchains,
    format: Format,
) -> Result<i32, Error> {
    let opts = BatchOptions {
        model: args.model,
        toolchain: args.toolchain.to_string(),
        data: args.data,
        output: output_folder(&args.output_dir)?,
        arguments: args.arguments.into_iter().collect(),
        image: args.image,
        resources: Resources::default(),
        timeout: args.timeout,
    };
    let (cancel, watcher) = cancel_on_ctrl_c();
    let progress = Progress::new();
    let report = crate::batch::run(toolchains, home, &LocalExecutor, opts, &progress, cancel).await;
    progress.finish();
    watcher.abort();
    let report = report?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Format::Table => {
            println!(
                "batch job {} scored with {} ({}): {} files in {}",
                report.id,
                report.model,
                report.toolchain,
                report.files.len(),
                report.output.display()
            );
            for f in &report.files {
                println!("  {f}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_binding_defaults_to_the_last_segment() {
        let b = parse_data("s3://bucket/in/rows.csv").unwrap();
        assert_eq!(
            (b.uri.as_str(), b.local_path.as_str()),
            ("s3://bucket/in/rows.csv", "rows.csv")
        );
        let b = parse_data("https://h/x?a=b=c.csv").unwrap();
        assert_eq!(b.local_path, "c.csv");
        let b = parse_data("/tmp/data/rows.csv").unwrap();
        assert_eq!(
            (b.uri.as_str(), b.local_path.as_str()),
            ("file:///tmp/data/rows.csv", "rows.csv")
        );
        assert!(parse_data("s3://").is_err());
    }
}
