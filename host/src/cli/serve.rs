//! `legion serve`: serve a stored model until Ctrl-C or SIGTERM.

use clap::Args;

use crate::home::Home;
use crate::Error;

/// `legion serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model: `name:version` or its digest (`legion models ls`), or a
    /// registry reference (`127.0.0.1:5000/models/wine:1`), pulled first.
    pub model: String,
    /// How to serve (feedback goes to <data>/serving/feedback.jsonl unless
    /// --feedback-log says otherwise).
    #[command(flatten)]
    pub options: legion_serve::ServeArgs,
}

/// Runs `legion serve`.
pub async fn run(args: ServeArgs, home: &Home) -> Result<(), Error> {
    crate::serve::serve(home, &args.model, &args.options).await
}
