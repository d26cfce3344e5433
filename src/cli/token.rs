//! `muster token new NAME ROLE`: a fresh API token, printed once, and the
//! line `api_tokens_file` takes for it (its name, role and SHA-256; never
//! the token). Made here, on the operator's machine, from the kernel's
//! random numbers: the daemon never sees a token until a client sends it.

use super::{Fail, Out};
use crate::config::tokens::{Role, digest, hex, valid_name};

const HELP: &str = "usage: muster token new NAME ROLE

Print a new API token on the first line and, on the second, the line to
add to musterd's api_tokens_file (NAME ROLE SHA256). The token is shown
only this once; the file keeps only its hash. ROLE is read, submit,
operate or admin. Reload musterd (SIGHUP) once the line is added:

  muster token new ci submit | tail -n 1 >> /etc/muster/tokens
";

pub(crate) fn main(args: &[String]) -> Out {
    match args {
        [new, name, role] if new == "new" => {
            let (token, line) = make(name, role)?;
            println!("{token}");
            println!("{line}");
            Ok(())
        }
        [h] | [_, h] if h == "--help" || h == "-h" => {
            print!("{HELP}");
            Ok(())
        }
        _ => Err(Fail(2, format!("expected: token new NAME ROLE\n\n{HELP}"))),
    }
}

/// A token and its line.
fn make(name: &str, role: &str) -> Result<(String, String), Fail> {
    if !valid_name(name) {
        return Err(Fail(
            2,
            format!("{name:?} is not a token name (1-64 of A-Za-z0-9._:@-)"),
        ));
    }
    let role = Role::parse(role).ok_or_else(|| {
        Fail(
            2,
            format!("{role:?} is not a role (read, submit, operate, admin)"),
        )
    })?;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Fail(1, "the kernel gave no random bytes".into()))?;
    let token = format!("mst_{}", hex(&bytes));
    let line = format!("{name} {role} {}", hex(&digest(token.as_bytes())));
    Ok((token, line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tokens;

    #[test]
    fn the_line_finds_the_token() {
        let (token, line) = make("ci", "submit").unwrap();
        assert!(token.starts_with("mst_") && token.len() == 68);
        assert!(!line.contains(&token[4..]));
        let tokens = Tokens::parse(&line).unwrap();
        assert_eq!(tokens.find(token.as_bytes()), Some(("ci", Role::Submit)));
        assert_ne!(make("ci", "submit").unwrap().0, token, "each is new");
        assert!(make("c i", "read").is_err());
        assert!(make("ci", "root").is_err());
    }
}
