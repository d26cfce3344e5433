//! `musterd`'s command line, parsed with lexopt like `muster`'s: the four
//! fixed options and one `--KEY VALUE` (or `--KEY=VALUE`) per setting.

use super::ConfigError;
use super::{find, flag_name, settings};
use std::path::PathBuf;

/// What the command line asked for besides settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub check_config: bool,
    pub help: bool,
    pub version: bool,
    /// `(key, value)` pairs from `--some-key value`, in order.
    pub settings: Vec<(String, String)>,
}

/// Parse `musterd`'s arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, ConfigError> {
    use lexopt::prelude::*;
    let usage = |e: lexopt::Error| ConfigError::Usage(format!("{e} (see --help)"));
    let mut cli = Cli::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => cli.help = true,
            Short('V') | Long("version") => cli.version = true,
            Long("check-config") => cli.check_config = true,
            Long("config") => cli.config = Some(p.value().map_err(usage)?.into()),
            Long(name) => {
                let key = name.replace('-', "_");
                let Some(s) = find(&key) else {
                    return Err(ConfigError::Usage(format!(
                        "unknown argument \"--{name}\" (see --help)"
                    )));
                };
                let v = p.value().map_err(usage)?;
                let v = v.into_string().map_err(|_| {
                    ConfigError::Usage(format!("{} needs a UTF-8 value", flag_name(s.key)))
                })?;
                cli.settings.push((s.key.to_string(), v));
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    Ok(cli)
}

/// `musterd --help`, from the settings table.
pub fn usage() -> String {
    let mut s = String::from(
        "musterd: roll call for a fleet of worker processes\n\n\
         usage: musterd [--config FILE] [--check-config] [--SETTING VALUE]...\n\n\
         options:\n\
         \x20 --config FILE      read settings from FILE (default /etc/muster/musterd.conf if it exists)\n\
         \x20 --check-config     validate the configuration and exit 0 (valid) or 2 (invalid)\n\
         \x20 -h, --help         print this help\n\
         \x20 -V, --version      print the version\n\n\
         settings (flag, environment MUSTER_<KEY>, file key; default; SIGHUP):\n",
    );
    for st in settings() {
        s.push_str(&format!(
            "  {:<30} {:<9} {:<17} {:<8} {}\n",
            flag_name(st.key),
            st.unit.as_str(),
            st.default,
            if st.live { "live" } else { "restart" },
            st.help
        ));
    }
    s.push_str("\nHTTP_PORT=\":9090\" listens on every interface (as Go reads it), HTTP_PORT=\"\" turns HTTP off;\nMETRICS_INTERVAL=60000 (ms) sets metrics_report_interval; ./.env is read below the environment.\nSee musterd(8) and musterd.conf(5).\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Cli, ConfigError> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_settings_and_errors() {
        let c = args(&[
            "--config",
            "/x",
            "--check-config",
            "--max-workers=5",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(c.config, Some(PathBuf::from("/x")));
        assert!(c.check_config && !c.help && !c.version);
        assert_eq!(
            c.settings,
            [
                ("max_workers".to_string(), "5".to_string()),
                ("log_level".to_string(), "debug".to_string())
            ]
        );
        assert!(args(&["-h"]).unwrap().help);
        assert!(args(&["-V"]).unwrap().version);
        for bad in [
            &["--nope"][..],
            &["--max-workers"],
            &["stray"],
            &["--config"],
            &["--help=x"],
        ] {
            assert!(
                matches!(args(bad), Err(ConfigError::Usage(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn help_lists_every_setting() {
        let u = usage();
        for s in settings() {
            assert!(u.contains(&flag_name(s.key)), "{}", s.key);
        }
    }
}
