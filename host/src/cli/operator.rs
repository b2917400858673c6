//! `legion operator`: the custom resources and the controllers.

use clap::Subcommand;

use crate::Error;

/// `legion operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Print the CustomResourceDefinitions as YAML (what the Helm chart's
    /// `crds/` holds).
    Crds,
}

/// Runs an operator command.
pub async fn run(cmd: OperatorCommand) -> Result<(), Error> {
    match cmd {
        OperatorCommand::Crds => {
            print!(
                "{}",
                crate::exec::kube::executor::yaml_documents(&crate::operator::crd::all())?
            );
            Ok(())
        }
    }
}
