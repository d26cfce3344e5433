//! What a setting is, and how an area of the configuration declares its
//! settings once each: [`area!`] takes, per setting, the field and its
//! type, the key (which also names the flag `--http-addr` and the variable
//! `MUSTER_HTTP_ADDR`), the default as text, its unit, whether SIGHUP can
//! change it, one line of help, how to read and show its value, and the
//! older environment names it also answers to; it makes the area's struct,
//! its defaults (read from those texts like any other value) and its rows.
//! Parsing, `musterd --help`, the reload notes and the docs tests walk the
//! rows.
//!
//! Also here: the readers of values that more than one area uses.

use super::Config;
use super::units::{Cidr, parse_list};
use std::path::PathBuf;

pub struct Setting {
    pub key: &'static str,
    /// The default, as text, parsed like any other value.
    pub default: &'static str,
    pub unit: Unit,
    /// Whether SIGHUP applies a change (otherwise it needs a restart).
    pub live: bool,
    pub help: &'static str,
    /// Read a value into the configuration; the error names no key.
    pub set: fn(&mut Config, &str) -> Result<(), String>,
    /// The value as text that `set` reads back.
    pub show: fn(&Config) -> String,
    /// Environment names from before muster, read below `MUSTER_<KEY>`.
    pub aliases: &'static [Alias],
}

/// An environment variable a setting also answers to, and how its value
/// reads as the setting's own syntax (given the configuration so far).
pub struct Alias {
    pub name: &'static str,
    pub read: fn(&str, &Config) -> Result<String, String>,
}

/// What kind of value a setting takes, as `--help` and the docs say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Address,
    Duration,
    Bytes,
    Count,
    Text,
    Level,
    List,
    Path,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Address => "address",
            Unit::Duration => "duration",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::Text => "text",
            Unit::Level => "level",
            Unit::List => "list",
            Unit::Path => "path",
        }
    }
}

/// Declare an area of the configuration: its struct, its defaults and
/// its rows, each setting written once.
///
/// ```text
/// area! {
///     /// What the area is.
///     pub struct Http in http {
///         /// The field's doc.
///         addr: Option<SocketAddr> = "http_addr", "127.0.0.1:8080", Address, restart,
///             "help", |v| off_or(v, parse_addr), |a| shown_off(*a, |a| a.to_string()),
///             aliases: [Alias { .. }];
///     }
///     derived {
///         /// Read from the files the settings name.
///         api_token: Option<Secret>,
///     }
/// }
/// ```
macro_rules! area {
    (
        $(#[$doc:meta])*
        pub struct $name:ident in $area:ident {
            $(
                $(#[$fdoc:meta])*
                $field:ident: $ty:ty = $key:literal, $default:literal, $unit:ident, $live:ident,
                    $help:literal, $parse:expr, $show:expr
                    $(, aliases: [$($alias:expr),* $(,)?])?
                ;
            )*
        }
        $(derived {
            $( $(#[$ddoc:meta])* $dfield:ident: $dty:ty ),* $(,)?
        })?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )*
            $($( $(#[$ddoc])* pub $dfield: $dty, )*)?
        }

        impl $name {
            /// Every setting at its default, read from its row's text.
            pub fn defaults() -> $name {
                $name {
                    $( $field: match ($parse)($default) {
                        Ok(v) => v,
                        Err(e) => unreachable!("the default of {} does not parse: {e}", $key),
                    }, )*
                    $($( $dfield: Default::default(), )*)?
                }
            }
        }

        /// The area's settings, in the order `--help` lists them.
        pub const ROWS: &[$crate::config::setting::Setting] = &[
            $( $crate::config::setting::Setting {
                key: $key,
                default: $default,
                unit: $crate::config::setting::Unit::$unit,
                live: area!(@live $live),
                help: $help,
                set: |c, v| {
                    c.$area.$field = ($parse)(v)?;
                    Ok(())
                },
                show: |c| ($show)(&c.$area.$field),
                aliases: &[$($($alias),*)?],
            }, )*
        ];
    };
    (@live live) => { true };
    (@live restart) => { false };
}

pub(crate) use area;

/// `off`, or a value.
pub fn off_or<T>(v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

/// A value, or `off` when there is none.
pub fn shown_off<T>(v: Option<T>, show: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "off".to_string(), show)
}

pub fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("give a path, or `off`".into());
    }
    Ok(PathBuf::from(v))
}

/// A path, or `off`.
pub fn optional_path(v: &str) -> Result<Option<PathBuf>, String> {
    off_or(v, path)
}

pub fn show_path(p: &Option<PathBuf>) -> String {
    shown_off(p.as_ref(), |p| p.display().to_string())
}

/// A list, or `none` for an empty one.
pub fn none_or_list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Address blocks, or `word` (`none`, `any`) for none at all.
pub fn cidrs(v: &str, word: &str) -> Result<Option<Vec<Cidr>>, String> {
    if v.eq_ignore_ascii_case(word) {
        return Ok(None);
    }
    let blocks = parse_list(v)
        .iter()
        .map(|b| Cidr::parse(b))
        .collect::<Result<Vec<_>, _>>()?;
    if blocks.is_empty() {
        return Err(format!("list at least one address block, or `{word}`"));
    }
    Ok(Some(blocks))
}

pub fn show_cidrs(v: Option<&[Cidr]>, word: &str) -> String {
    match v {
        None => word.into(),
        Some(b) => b.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// One of `names`, for a setting that is one word of a few.
pub fn one_of<T: Copy>(v: &str, names: &[(&str, T)]) -> Result<T, String> {
    names
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let words: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            format!("{v:?} is not {}", words.join(", "))
        })
}

/// The name `names` gives `t`.
pub fn name_of<T: PartialEq>(t: &T, names: &[(&'static str, T)]) -> String {
    names
        .iter()
        .find(|(_, x)| x == t)
        .map_or("?", |(n, _)| n)
        .to_string()
}
