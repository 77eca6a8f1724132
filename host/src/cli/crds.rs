//! `fledge crds`: prints the CRDs Fledge serves, or writes one file per CRD.
use anyhow::Context;
use fledge::operator::crd;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write `<name>.yaml` per CRD into this directory instead of printing them.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.dir {
        None => print!("{}", crd::all_yaml()),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for c in crd::all() {
                let path = dir.join(crd::file_name(&c));
                std::fs::write(&path, crd::to_yaml(&c))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
