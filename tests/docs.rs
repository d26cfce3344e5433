//! Docs move with the code: every setting, flag and endpoint the code has
//! must appear in the README and its man page, and every page must be
//! well-formed. These tests read the files; they start no daemon.

use muster::config::{env_name, flag_name, settings};
use muster::serve::routes::ENDPOINTS;

fn read(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A flag is written `.Fl -http-addr` in mdoc (`Fl` adds the first dash),
/// also inside a list: `.Fl -url , -workers`.
fn page_has_flag(page: &str, flag: &str) -> bool {
    let bare = &flag[1..];
    page.lines()
        .filter(|l| l.contains("Fl "))
        .any(|l| l.split([' ', ',']).any(|w| w == bare))
}

#[test]
fn every_setting_is_documented() {
    let readme = read("README.md");
    let musterd8 = read("man/musterd.8");
    let conf5 = read("man/musterd.conf.5");
    for s in settings() {
        assert!(
            readme.contains(&format!("| `{}` | `{}` |", s.key, s.default)),
            "README settings table lacks {} with default {}",
            s.key,
            s.default
        );
        assert!(
            page_has_flag(&musterd8, &flag_name(s.key)),
            "musterd.8 lacks {}",
            flag_name(s.key)
        );
        let entry = format!(
            ".It Cm {} No (default Li {} ; {})",
            s.key,
            s.default,
            if s.live { "live" } else { "restart" }
        );
        assert!(conf5.contains(&entry), "musterd.conf.5 lacks `{entry}`");
    }
    assert!(conf5.contains("MUSTER_") && env_name("x") == "MUSTER_X");
}

#[test]
fn every_musterd_flag_is_documented() {
    let page = read("man/musterd.8");
    for flag in ["--config", "--check-config", "--help", "--version"] {
        assert!(page_has_flag(&page, flag), "musterd.8 lacks {flag}");
    }
}

#[test]
fn every_endpoint_is_documented() {
    let readme = read("README.md");
    let page = read("man/musterd.8");
    for (method, path) in ENDPOINTS {
        let readme_form = format!("`{method} {path}`");
        assert!(readme.contains(&readme_form), "README lacks {readme_form}");
        // `{name}` in a path is `Ns Ar name` on the page.
        let man_form = match path.split_once('{').zip(path.split_once('}')) {
            Some(((prefix, _), (named, ""))) => {
                format!("Li {method} {prefix} Ns Ar {}", &named[prefix.len() + 1..])
            }
            Some(((prefix, _), (named, rest))) => format!(
                "Li {method} {prefix} Ns Ar {} Ns Li {rest}",
                &named[prefix.len() + 1..]
            ),
            None => format!("Li {method} {path}"),
        };
        assert!(page.contains(&man_form), "musterd.8 lacks `{man_form}`");
    }
}

#[test]
fn every_stream_is_documented() {
    let readme = read("README.md");
    let page = read("man/musterd.8");
    for path in muster::serve::ws::ENDPOINTS {
        assert!(
            readme.contains(&format!("`WS {path}`")),
            "README lacks WS {path}"
        );
        let man_form = match path.strip_suffix("{id}") {
            Some(prefix) => format!("Li WS {prefix} Ns Ar id"),
            None => format!("Li WS {path}"),
        };
        assert!(page.contains(&man_form), "musterd.8 lacks `{man_form}`");
    }
}

#[test]
fn the_example_config_lists_every_setting_with_its_default() {
    let conf = read("systemd/musterd.conf");
    for s in settings() {
        let line = format!("#{} = {}", s.key, s.default);
        assert!(
            conf.lines().any(|l| l == line),
            "systemd/musterd.conf lacks `{line}`"
        );
    }
}

#[test]
fn every_error_code_is_documented() {
    let readme = read("README.md");
    let page = read("man/muster-protocol.7");
    let codes = muster::proto::RejectReason::ALL
        .map(muster::proto::ErrorCode::from)
        .into_iter()
        .chain(muster::proto::ErrorCode::OTHERS);
    for code in codes {
        let name = code.as_str();
        assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
        assert!(
            page.contains(&format!("Cm {name}")),
            "muster-protocol.7 lacks {name}"
        );
    }
}

#[test]
fn man_pages_lint_clean() {
    if std::process::Command::new("mandoc")
        .arg("-V")
        .output()
        .is_err()
    {
        // test.sh installs mandoc where it can; CI must have it.
        assert!(std::env::var_os("CI").is_none(), "mandoc is required in CI");
        eprintln!("mandoc not installed: skipping lint");
        return;
    }
    for page in [
        "man/musterd.8",
        "man/muster.1",
        "man/musterd.conf.5",
        "man/muster-protocol.7",
    ] {
        let out = std::process::Command::new("mandoc")
            .args(["-Tlint", "-Wwarning"])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + page)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.trim().is_empty(),
            "{page}: {text}"
        );
    }
}

#[test]
fn every_muster_command_is_documented() {
    let page = read("man/muster.1");
    let readme = read("README.md");
    for cmd in [
        "workers", "status", "health", "watch", "beat", "agent", "nodes",
    ] {
        assert!(
            page.contains(&format!(".It Cm {cmd}")),
            "muster.1 lacks {cmd}"
        );
        assert!(
            readme.contains(&format!("muster {cmd}")),
            "README lacks muster {cmd}"
        );
    }
    for flag in [
        "--url",
        "--json",
        "--status",
        "--tcp",
        "--bye",
        "--cpu",
        "--mem",
        "--queue",
        "--heartbeat-addr",
        "--every",
        "--pid",
        "--label",
        "--interval",
        "--id",
    ] {
        assert!(page_has_flag(&page, flag), "muster.1 lacks {flag}");
    }
}
