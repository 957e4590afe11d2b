//! `healthsync report`: reads the request log (`LOG_FILE` and its rotated
//! files, or the binary's lines in an Apache error log) and prints what an
//! operator wants at a glance, or, with `--alert`, only what passed a
//! threshold. `args` parses the command line, `entry` reads a line,
//! `summary` makes the figures and the text, `alert` judges them; this
//! file reads the files. No request handling, no SQL (the command's
//! database probes are `cli.rs`'s, through `store/`).

pub mod alert;
pub mod args;
pub mod entry;
pub mod summary;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::config::LogFile;
use crate::log::rotated_files;
use entry::{parse_line, Entry, Parsed};

/// What was read from the files.
#[derive(Debug, Default)]
pub struct Read {
    /// The requests at or after the window's start, in file order.
    pub entries: Vec<Entry>,
    pub unreadable: u64,
    /// The newest request line of all, in the window or not.
    pub last_line_at: Option<i64>,
}

/// The files of a log, oldest first: the rotated ones, then `path`.
pub fn log_files(log_file: &LogFile) -> Vec<PathBuf> {
    let mut files = rotated_files(&log_file.path);
    files.push(log_file.path.clone());
    files
}

/// Reads `files` in order, keeping the requests at or after `since_ms`. A
/// rotated file last written before `since_ms` is skipped unread; the
/// last file must be readable, the others may vanish meanwhile (a
/// rotation).
pub fn read(files: &[PathBuf], since_ms: i64) -> Result<Read, String> {
    let mut read = Read::default();
    let last = files.len().saturating_sub(1);
    for (index, path) in files.iter().enumerate() {
        if index < last && modified_before(path, since_ms) {
            continue;
        }
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(_) if index < last => continue,
            Err(error) => return Err(format!("{} cannot be read: {error}", path.display())),
        };
        for line in std::io::BufReader::new(file).split(b'\n') {
            let line = line.map_err(|error| format!("{}: {error}", path.display()))?;
            match parse_line(&String::from_utf8_lossy(&line)) {
                Parsed::Request(entry) => {
                    read.last_line_at =
                        Some(read.last_line_at.map_or(entry.at, |at| at.max(entry.at)));
                    if entry.at >= since_ms {
                        read.entries.push(*entry);
                    }
                }
                Parsed::Unreadable => read.unreadable += 1,
                Parsed::Other => {}
            }
        }
    }
    Ok(read)
}

fn modified_before(path: &Path, since_ms: i64) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let modified_ms = modified
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX));
    modified_ms.is_some_and(|at| at < since_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_are_read_oldest_first_and_the_window_applies() {
        let dir = std::env::temp_dir().join(format!(
            "hs-report-read-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let log_file = LogFile {
            path: dir.join("requests.log"),
            max_bytes: 1000,
            keep: 3,
        };
        let line = |minute: u32, id: &str| {
            format!(
                "{{\"ts\":\"2026-11-30T18:{minute:02}:00Z\",\"request_id\":\"{id}\",\"route\":\"GET /health\",\"status\":200,\"ms\":1}}\n"
            )
        };
        let write = |path: PathBuf, text: String| assert!(std::fs::write(path, text).is_ok());
        let rotated = |stamp: &str| dir.join(format!("requests.log.{stamp}-42"));
        write(
            rotated("20261130T180230.000000000Z"),
            line(1, "a") + &line(2, "b"),
        );
        write(
            rotated("20261130T180430.000000000Z"),
            line(3, "c") + "{\"ts\": cut short\n" + &line(4, "d"),
        );
        write(log_file.path.clone(), line(5, "e") + "\n");
        let files = log_files(&log_file);
        assert_eq!(files.len(), 3);
        let since = crate::store::clock::parse_rfc3339("2026-11-30T18:02:00Z").unwrap_or_default();
        let read = read(&files, since);
        assert!(read.is_ok(), "{read:?}");
        let read = read.unwrap_or_default();
        let ids: Vec<&str> = read.entries.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(ids, vec!["b", "c", "d", "e"]);
        assert_eq!(read.unreadable, 1);
        assert_eq!(
            read.last_line_at,
            crate::store::clock::parse_rfc3339("2026-11-30T18:05:00Z")
        );

        let missing = LogFile {
            path: dir.join("none.log"),
            ..log_file
        };
        assert!(super::read(&log_files(&missing), 0).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
