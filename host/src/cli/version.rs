//! `fledge version`: the binary's version, the CRD API versions it serves and
//! the policy contract it implements.
use fledge::build_info::BuildInfo;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// Lines for people.
    Text,
    /// One JSON object: version, revision (when known), crds, wit.
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    print!("{}", render(&BuildInfo::current(), args.output)?);
    Ok(ExitCode::SUCCESS)
}

fn render(info: &BuildInfo, output: Output) -> anyhow::Result<String> {
    Ok(match output {
        Output::Text => info.text(),
        Output::Json => serde_json::to_string(info)? + "\n",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn output(argv: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("version").chain(argv.iter().copied()))
            .expect("the arguments parse");
        render(&BuildInfo::current(), cli.args.output).expect("renders")
    }

    #[test]
    fn text_names_the_version_the_served_apis_and_the_contract() {
        let out = output(&[]);
        let mut lines = out.lines();
        let first = lines.next().unwrap();
        assert!(
            first == format!("fledge {}", env!("CARGO_PKG_VERSION"))
                || first.starts_with(&format!("fledge {} (git ", env!("CARGO_PKG_VERSION"))),
            "{out}"
        );
        assert_eq!(lines.next(), Some("CRDs served:"), "{out}");
        assert_eq!(
            lines.next(),
            Some("  flagger.app/v1beta1: Canary, MetricTemplate, AlertProvider"),
            "{out}"
        );
        assert_eq!(
            lines.next(),
            Some("  policies.fledge.dev/v1alpha1: RolloutPolicy, ClusterRolloutPolicy"),
            "{out}"
        );
        assert_eq!(
            lines.next(),
            Some(format!("policy contract (WIT): {}", fledge::build_info::WIT_PACKAGE).as_str()),
            "{out}"
        );
        assert_eq!(lines.next(), None, "{out}");
    }

    #[test]
    fn json_is_one_object_with_the_same_facts() {
        let out = output(&["--output", "json"]);
        assert!(out.ends_with('\n') && out.lines().count() == 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["wit"], fledge::build_info::WIT_PACKAGE);
        assert_eq!(v["crds"][0]["apiVersion"], "flagger.app/v1beta1");
        assert_eq!(v["crds"][1]["apiVersion"], "policies.fledge.dev/v1alpha1");
        assert_eq!(
            v["crds"][1]["kinds"],
            serde_json::json!(["RolloutPolicy", "ClusterRolloutPolicy"])
        );
    }

    #[test]
    fn an_unknown_output_is_refused_with_the_choices() {
        let err = Cli::try_parse_from(["version", "--output", "yaml"])
            .err()
            .expect("yaml is refused")
            .to_string();
        assert!(
            err.contains("--output") && err.contains("text") && err.contains("json"),
            "{err}"
        );
    }
}
