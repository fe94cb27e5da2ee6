//! The command line's own value parsers: the job names `sync`, `resync` and `status` share,
//! `--customer ID` and Rabobank consent labels. Each refuses bad input on one line (exit 2)
//! without repeating a value that may be long or hold terminal escapes.

use clap::builder::{PossibleValue, TypedValueParser};

use crate::jobs::JobName;
use crate::partners::rabot::customer_refresh_job;

/// The one parser of the jobs a command names (`sync`, `resync`, `status`): partner names and
/// job names, as [`JobName::from_cli_name`] reads them. `--help` lists every accepted name with
/// what it runs; an unknown one is refused (exit 2) on one line that lists them all.
#[derive(Debug, Clone, Copy)]
pub(super) struct JobNameParser;

impl TypedValueParser for JobNameParser {
    type Value = JobName;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<JobName, clap::Error> {
        let name = value.to_string_lossy();
        JobName::from_cli_name(&name).ok_or_else(|| {
            let names: Vec<&str> = JobName::cli_names().collect();
            // Debug formatting escapes control characters, so the line stays one line.
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "unknown job {name:?}; accepted names: {}\n",
                    names.join(", ")
                ),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let partners = JobName::aliases()
            .map(|(partner, job)| PossibleValue::new(partner).help(format!("stands for {job}")));
        let jobs = JobName::all().map(|job| PossibleValue::new(job.as_str()).help(job.spec().help));
        Some(Box::new(partners.chain(jobs)))
    }
}

/// `--customer ID`, checked as [`customer_refresh_job::customer_id`] does. The refusal
/// never repeats the value: it may be kilobytes long or hold terminal escapes.
#[derive(Debug, Clone, Copy)]
pub(super) struct CustomerIdParser;

impl TypedValueParser for CustomerIdParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let refused = |reason: String| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid --customer: {reason}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refused("it is not valid UTF-8".to_owned()))?;
        customer_refresh_job::customer_id(text).map_err(refused)
    }
}

pub(super) fn parse_label(text: &str) -> Result<String, String> {
    let label = text.trim();
    if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
        return Err("a label is 1 to 200 printable characters".to_owned());
    }
    Ok(label.to_owned())
}
