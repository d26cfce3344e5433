//! The environment as musterd reads it: the process's variables over a
//! `.env` file in the working directory (as the systems it replaces read
//! one), and their names, `HTTP_PORT` and `METRICS_INTERVAL`, beside the
//! `MUSTER_<KEY>` ones.
//!
//! Order, strongest first: flags, the process environment, `./.env`, the
//! configuration file, the defaults. Of `.env`, only `HTTP_PORT`,
//! `METRICS_INTERVAL` and `MUSTER_*` are read; other keys belong to other
//! programs sharing the file and are left alone.

use super::{Cli, Config, ConfigError, find, load};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The `.env` musterd reads: in its working directory.
pub const DOTENV: &str = ".env";

/// Variables from the process, then from `.env`.
pub struct Environment {
    dotenv: HashMap<String, String>,
    /// The `.env` read, if there was one.
    pub dotenv_path: Option<PathBuf>,
}

impl Environment {
    /// The process's environment over `./.env` when that file exists.
    pub fn process() -> Result<Environment, ConfigError> {
        let path = Path::new(DOTENV);
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Environment {
                dotenv: parse_dotenv(path, &text)?,
                dotenv_path: Some(path.to_path_buf()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Environment {
                dotenv: HashMap::new(),
                dotenv_path: None,
            }),
            Err(e) => Err(ConfigError::Read(path.to_path_buf(), e)),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.dotenv.get(key).cloned())
    }
}

/// Load the configuration as `musterd` does at start and on SIGHUP.
pub fn load_process(cli: &Cli) -> Result<(Config, Environment), ConfigError> {
    let env = Environment::process()?;
    let cfg = load(cli, &|k| env.get(k))?;
    Ok((cfg, env))
}

/// Is this `.env` key musterd's to read?
fn ours(key: &str) -> bool {
    key == "HTTP_PORT" || key == "METRICS_INTERVAL" || key.starts_with("MUSTER_")
}

/// `KEY=VALUE` lines, `#` comments, an optional `export `, values in
/// single or double quotes or bare; no expansion. A malformed line, or a
/// `MUSTER_` key that names no setting, is an error naming the line.
pub fn parse_dotenv(path: &Path, text: &str) -> Result<HashMap<String, String>, ConfigError> {
    let mut out = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |m: String| ConfigError::Line(path.to_path_buf(), i + 1, m);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| err(format!("expected KEY=VALUE, got {line:?}")))?;
        let k = k.trim_end();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(format!("{k:?} is not a variable name")));
        }
        let v = dotenv_value(v.trim()).map_err(err)?;
        if !ours(k) {
            continue;
        }
        if let Some(key) = k.strip_prefix("MUSTER_") {
            let key = key.to_ascii_lowercase();
            if key != "config" && find(&key).is_none() {
                return Err(err(format!("{k} names no setting")));
            }
        }
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

/// A value: quoted whole (`"…"` or `'…'`), or bare up to a ` #` comment.
fn dotenv_value(v: &str) -> Result<String, String> {
    for q in ['"', '\''] {
        if let Some(rest) = v.strip_prefix(q) {
            let end = rest.find(q).ok_or_else(|| format!("unclosed {q} quote"))?;
            let after = rest[end + 1..].trim_start();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err(format!("text after the closing quote: {after:?}"));
            }
            return Ok(rest[..end].to_string());
        }
    }
    let bare = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    Ok(bare.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HashMap<String, String>, ConfigError> {
        parse_dotenv(Path::new(".env"), text)
    }

    #[test]
    fn dotenv_reads_our_keys_and_leaves_the_rest() {
        let env = parse(
            "# master/.env\nHTTP_PORT=:8080\nexport METRICS_INTERVAL='30000'\n\
             MUSTER_MAX_WORKERS = \"50\" # ours\nDATABASE_URL=postgres://x\n\n\
             MUSTER_LOG_LEVEL=debug # trailing\nMUSTER_CONFIG=/tmp/m.conf\n",
        )
        .unwrap();
        assert_eq!(env["HTTP_PORT"], ":8080");
        assert_eq!(env["METRICS_INTERVAL"], "30000");
        assert_eq!(env["MUSTER_MAX_WORKERS"], "50");
        assert_eq!(env["MUSTER_LOG_LEVEL"], "debug");
        assert_eq!(env["MUSTER_CONFIG"], "/tmp/m.conf");
        assert!(!env.contains_key("DATABASE_URL"));
    }

    #[test]
    fn dotenv_errors_name_the_line() {
        for (text, line) in [
            ("HTTP_PORT=:1\nnonsense\n", 2),
            ("\n\nMUSTER_MAX_WORKRES=3\n", 3),
            ("HTTP_PORT=\":80\n", 1),
            ("HTTP_PORT=\":80\" x\n", 1),
            ("BAD KEY=1\n", 1),
        ] {
            match parse(text) {
                Err(ConfigError::Line(_, n, m)) => assert_eq!(n, line, "{text:?}: {m}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
