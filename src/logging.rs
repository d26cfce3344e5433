//! Logging set-up, once, on stderr. Under systemd (JOURNAL_STREAM set) lines
//! carry no timestamp, since journald adds its own. The level can change at
//! run time through `log::set_max_level` (SIGHUP does this).

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

pub fn init(level: LevelFilter) {
    let mut b = ConfigBuilder::new();
    b.set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.set_time_level(LevelFilter::Off);
    } else {
        b.set_time_format_rfc3339();
    }
    // The logger passes everything; the global max level filters.
    let _ = WriteLogger::init(LevelFilter::Trace, b.build(), std::io::stderr());
    log::set_max_level(level);
}
