//! The status a worker is shown with, and the one list of them that the
//! filters, summaries, metrics, the command line and the dashboard use.
//!
//! A worker reports `idle`, `working` or `error` ([`super::Reported`]);
//! the daemon adds what it judges: `created` (known, no heartbeat yet),
//! `inactive` (silent past the timeout) and `terminated` (said bye, or
//! stopped by the pool). Pure names; the rules that move a worker between
//! them live with its snapshot.

use super::frame::Reported;
use serde::{Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Created,
    Idle,
    Working,
    Error,
    Inactive,
    Terminated,
}

impl Status {
    /// Every status, in the order summaries list them.
    pub const ALL: [Status; 6] = [
        Status::Created,
        Status::Idle,
        Status::Working,
        Status::Error,
        Status::Inactive,
        Status::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Idle => "idle",
            Status::Working => "working",
            Status::Error => "error",
            Status::Inactive => "inactive",
            Status::Terminated => "terminated",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a worker in this status counts as active (`is_active`).
    pub fn is_active(self) -> bool {
        !matches!(self, Status::Inactive | Status::Terminated)
    }

    /// What a worker that last reported `r` (or nothing yet) is shown as
    /// while the daemon judges it alive.
    pub fn reported(r: Option<Reported>) -> Status {
        match r {
            None => Status::Created,
            Some(Reported::Idle) => Status::Idle,
            Some(Reported::Working) => Status::Working,
            Some(Reported::Error) => Status::Error,
        }
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `?status=` filter keeps: one status, or every active worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    Is(Status),
    Active,
}

impl StatusFilter {
    pub fn parse(s: &str) -> Option<StatusFilter> {
        if s == "active" {
            Some(StatusFilter::Active)
        } else {
            Status::parse(s).map(StatusFilter::Is)
        }
    }

    pub fn keeps(self, s: Status) -> bool {
        match self {
            StatusFilter::Is(want) => s == want,
            StatusFilter::Active => s.is_active(),
        }
    }

    /// The values a filter takes, for error messages and docs.
    pub fn choices() -> String {
        let mut v: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        v.push("active");
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts by status are arrays indexed by `status as usize`.
    #[test]
    fn a_status_is_its_place_in_the_list() {
        for (i, s) in Status::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i, "{s}");
        }
    }

    #[test]
    fn names_round_trip_and_filters_keep_what_they_name() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(StatusFilter::parse(s.as_str()), Some(StatusFilter::Is(s)));
        }
        assert_eq!(Status::parse("active"), None);
        assert_eq!(StatusFilter::parse("sleepy"), None);
        let active = StatusFilter::parse("active").unwrap();
        let kept: Vec<Status> = Status::ALL
            .into_iter()
            .filter(|s| active.keeps(*s))
            .collect();
        assert_eq!(
            kept,
            [
                Status::Created,
                Status::Idle,
                Status::Working,
                Status::Error
            ]
        );
        assert_eq!(
            StatusFilter::choices(),
            "created, idle, working, error, inactive, terminated, active"
        );
    }
}
