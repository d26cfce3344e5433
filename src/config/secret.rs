//! What the configuration reads from files rather than from its own text:
//! tokens (`api_token_file`, `heartbeat_token_file`) and, with the `tls`
//! feature, the certificate and key (`tls_cert_file`, `tls_key_file`).
//!
//! Files are read when the configuration is loaded, at start and on every
//! SIGHUP, so a rotated token or certificate takes effect on reload and a
//! broken one is refused like any bad value. A [`Secret`] never shows its
//! bytes: its `Debug` is a placeholder and nothing serialises it.

use std::fmt;
use std::path::Path;

/// The longest token file read; tokens are short lines.
const MAX_TOKEN: usize = 4096;

/// A token, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(token: &str) -> Secret {
        Secret(token.into())
    }

    /// The token itself, for a client that must send it; the daemon only
    /// ever compares.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token. The time taken depends on the lengths
    /// only, never on where the first differing byte is.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = (mine.len() ^ given.len()) as u64;
        for (i, &b) in given.iter().enumerate() {
            let m = mine.get(i % mine.len().max(1)).copied().unwrap_or(0);
            diff |= u64::from(m ^ b);
        }
        diff == 0
    }
}

/// Read a token file: its first line, trimmed; an empty file is an error
/// (a daemon locked with an empty token would be open).
pub fn read_token(path: &Path) -> Result<Secret, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() > MAX_TOKEN {
        return Err(format!("{} is over {MAX_TOKEN} bytes", path.display()));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    if token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "{}: a token is one word of printable characters",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_same_bytes() {
        let s = Secret::new("s3cret");
        assert!(s.matches(b"s3cret"));
        assert!(!s.matches(b"s3cres"));
        assert!(!s.matches(b"s3cre"));
        assert!(!s.matches(b"s3crett"));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn token_files() {
        let dir = std::env::temp_dir().join(format!("muster-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "abc123\n").unwrap();
        assert!(read_token(&f).unwrap().matches(b"abc123"));
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token(&f).unwrap_err().contains("no token"));
        std::fs::write(&f, "a b\n").unwrap();
        assert!(read_token(&f).is_err());
        assert!(
            read_token(&dir.join("missing"))
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
