//! API tokens with roles (`api_tokens_file`): one line per token,
//! `NAME ROLE SHA256`, where the last word is the SHA-256 of the token in
//! hex. The file never holds a token itself, so reading it (or a backup of
//! it) gives nobody access; `muster token new NAME ROLE` prints a fresh
//! token once, with the line to add.
//!
//! A request's bearer token is hashed once and compared with every line's
//! hash in constant time, all lines walked whatever matches, so neither
//! the time taken nor which line matched tells a guesser anything. The
//! single `api_token_file` of earlier releases stays: its token is an
//! `admin` named `api_token`.

use super::Secret;
use std::fmt;
use std::path::Path;

/// The longest tokens file read.
const MAX_FILE: usize = 1 << 20;

/// What a token may do; each role may do everything the ones below it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads, when `api_read_requires_token` is set.
    Read,
    /// Submit tasks and cancel the tasks it submitted.
    Submit,
    /// Cancel any task, retry, bulk actions, pause, limits, schedules,
    /// forget workers, scale the pool.
    Operate,
    /// Everything.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Read, Role::Submit, Role::Operate, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Eq)]
struct Entry {
    name: Box<str>,
    role: Role,
    hash: [u8; 32],
}

/// Every token the daemon takes, by hash.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} tokens)", self.entries.len())
    }
}

/// The SHA-256 of a token.
pub fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether a name can name a token: what a worker id may be, so that the
/// audit log and the task's `submitted_by` show it as it is.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Parse a tokens file's text; errors name the line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| format!("line {}: {m}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, role, hash] = words[..] else {
                return Err(at("expected NAME ROLE SHA256 (three words)".into()));
            };
            if !valid_name(name) {
                return Err(at(format!(
                    "{name:?} is not a token name (1-64 of A-Za-z0-9._:@-)"
                )));
            }
            let role = Role::parse(role).ok_or_else(|| {
                at(format!(
                    "{role:?} is not a role (read, submit, operate, admin)"
                ))
            })?;
            let hash = unhex(&hash.to_ascii_lowercase()).ok_or_else(|| {
                at("the last word is the token's SHA-256 as 64 hex digits (muster token new prints it)".into())
            })?;
            if entries.iter().any(|e| *e.name == *name) {
                return Err(at(format!("token name {name:?} is used twice")));
            }
            if entries.iter().any(|e| e.hash == hash) {
                return Err(at("the same token is listed twice".into()));
            }
            entries.push(Entry {
                name: name.into(),
                role,
                hash,
            });
        }
        Ok(Tokens { entries })
    }

    /// Read `api_tokens_file`. An empty file is an error: a daemon told
    /// to take tokens from a file that lists none would refuse everything
    /// by mistake.
    pub fn read(path: &Path) -> Result<Tokens, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if bytes.len() > MAX_FILE {
            return Err(format!("{} is over {MAX_FILE} bytes", path.display()));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let tokens = Tokens::parse(text).map_err(|m| format!("{}: {m}", path.display()))?;
        if tokens.is_empty() {
            return Err(format!("{} lists no token", path.display()));
        }
        Ok(tokens)
    }

    /// Add the single token of `api_token_file`, as an `admin`.
    pub fn with_admin(mut self, token: &Secret) -> Result<Tokens, String> {
        let hash = digest(token.reveal().as_bytes());
        if self.entries.iter().any(|e| e.hash == hash) {
            return Err("api_token_file's token is also in api_tokens_file".into());
        }
        if self.entries.iter().any(|e| &*e.name == "api_token") {
            return Err(
                "api_tokens_file names a token api_token, the name api_token_file's token takes"
                    .into(),
            );
        }
        self.entries.push(Entry {
            name: "api_token".into(),
            role: Role::Admin,
            hash,
        });
        Ok(self)
    }

    /// The name and role of the token `given`, if it is one. Every entry
    /// is compared, in constant time, whichever matches.
    pub fn find(&self, given: &[u8]) -> Option<(&str, Role)> {
        let hash = digest(given);
        let mut found = None;
        for e in &self.entries {
            let mut diff = 0u8;
            for (a, b) in e.hash.iter().zip(hash.iter()) {
                diff |= a ^ b;
            }
            // Branch-free on the hash bytes; the one branch is on the
            // result, taken at most once per file (hashes are unique).
            if std::hint::black_box(diff) == 0 {
                found = Some((&*e.name, e.role));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, role: &str, token: &str) -> String {
        format!("{name} {role} {}\n", hex(&digest(token.as_bytes())))
    }

    #[test]
    fn finds_each_token_with_its_role() {
        let text = format!(
            "# who may do what\n\n{}{}{}",
            line("dash", "read", "r-token"),
            line("ci", "submit", "s-token"),
            line("oncall", "operate", "o-token"),
        );
        let t = Tokens::parse(&text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.find(b"r-token"), Some(("dash", Role::Read)));
        assert_eq!(t.find(b"s-token"), Some(("ci", Role::Submit)));
        assert_eq!(t.find(b"o-token"), Some(("oncall", Role::Operate)));
        assert_eq!(t.find(b"o-token "), None);
        assert_eq!(t.find(b""), None);
        let t = t.with_admin(&Secret::new("old")).unwrap();
        assert_eq!(t.find(b"old"), Some(("api_token", Role::Admin)));
        assert!(Role::Read < Role::Submit && Role::Operate < Role::Admin);
    }

    #[test]
    fn refuses_bad_lines_by_number() {
        let good = line("a", "read", "x");
        for (text, says) in [
            ("a read\n".to_string(), "line 1: expected NAME ROLE SHA256"),
            (
                format!("{good}b boss {}\n", "0".repeat(64)),
                "line 2: \"boss\" is not a role",
            ),
            (
                format!("a read {}\n", "0".repeat(63)),
                "line 1: the last word",
            ),
            (
                format!("a read {}\n", "g".repeat(64)),
                "line 1: the last word",
            ),
            (
                format!("{good}{}", line("a", "admin", "y")),
                "line 2: token name \"a\" is used twice",
            ),
            (
                format!("{good}{}", line("b", "admin", "x")),
                "line 2: the same token",
            ),
            (line("a b", "read", "x"), "line 1: expected"),
            (line("bad/name", "read", "x"), "not a token name"),
        ] {
            let e = Tokens::parse(&text).unwrap_err();
            assert!(e.starts_with(says) || e.contains(says), "{text:?}: {e}");
        }
        let upper = format!("a read {}\n", hex(&digest(b"x")).to_uppercase());
        assert_eq!(
            Tokens::parse(&upper).unwrap().find(b"x"),
            Some(("a", Role::Read))
        );
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            hex(&digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
