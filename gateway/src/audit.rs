//! Audit records: one JSON line per MCP request, to stdout and to a daily file.

use crate::config::{AuditLevel, AuditSettings};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the gateway decided.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Forwarded.
    Allow,
    /// Refused by the policy.
    Deny,
    /// Failed (upstream unreachable, server error).
    Error,
}

impl Decision {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
        }
    }
}

/// One audit record.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Record {
    /// RFC 3339, UTC.
    pub time: String,
    /// info, warn or error (see [`Record::level`]).
    pub level: &'static str,
    /// The gateway's --name.
    pub server: String,
    /// Who: token subject, API key name, certificate CN, or `anonymous`.
    pub identity: Option<String>,
    /// How the identity was established (jwt, oauth2, apikey, mtls, anonymous).
    pub auth: Option<&'static str>,
    /// Client address.
    pub client: String,
    /// HTTP method (POST, GET, DELETE) or `WS` for WebSocket messages.
    pub http_method: String,
    /// JSON-RPC method (`batch` for batches).
    pub method: Option<String>,
    /// Tool of a tools/call.
    pub tool: Option<String>,
    /// allow, deny, error.
    pub decision: Option<Decision>,
    /// Why it was denied or failed.
    pub reason: Option<String>,
    /// HTTP status returned (0 when none: TLS handshake failure).
    pub status: u16,
    /// Time to the response head.
    pub latency_ms: f64,
    /// Mcp-Session-Id.
    pub session: Option<String>,
}

impl Record {
    /// error: failures (5xx, upstream errors); warn: denials and other 4xx; info: the rest.
    pub fn audit_level(&self) -> AuditLevel {
        if self.decision == Some(Decision::Error) || self.status >= 500 {
            AuditLevel::Error
        } else if self.decision == Some(Decision::Deny) || self.status >= 400 || self.status == 0 {
            AuditLevel::Warn
        } else {
            AuditLevel::Info
        }
    }
}

/// Records waiting to be written: requests only append to a buffer (no system call, no thread
/// wake-up on the request path); the writer thread writes it out every [`FLUSH_INTERVAL`], sooner
/// when [`FLUSH_BYTES`] are waiting, and at shutdown.
struct Queue {
    pending: Mutex<Pending>,
    ready: Condvar,
    file: Mutex<Option<DailyFile>>,
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    dropped: u64,
}

/// Longest a record waits before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Waiting bytes that wake the writer at once.
const FLUSH_BYTES: usize = 256 * 1024;
/// Most bytes waiting; records beyond are dropped (and counted) rather than holding requests.
const MAX_PENDING: usize = 16 * 1024 * 1024;

impl Queue {
    fn push(&self, line: &[u8]) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.buf.len() + line.len() > MAX_PENDING {
            p.dropped += 1;
            return;
        }
        p.buf.extend_from_slice(line);
        if p.buf.len() >= FLUSH_BYTES {
            self.ready.notify_one();
        }
    }

    /// Write out what is waiting: stdout, then the day's file.
    fn flush(&self, spare: &mut Vec<u8>) {
        let dropped = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut p.buf, spare);
            std::mem::take(&mut p.dropped)
        };
        if dropped > 0 {
            tracing::warn!(dropped, "audit records dropped: the writer could not keep up");
        }
        if spare.is_empty() {
            return;
        }
        let _ = std::io::stdout().lock().write_all(spare);
        if let Some(f) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            if let Err(e) = f.write(&String::from_utf8_lossy(spare), today()) {
                tracing::warn!(error = %e, "writing the audit file");
            }
        }
        spare.clear();
    }
}

/// Where records go. Cheap to clone; writing never blocks a request (a full buffer drops).
#[derive(Clone)]
pub struct Auditor {
    min: Option<AuditLevel>,
    queue: Option<Arc<Queue>>,
    server: String,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("min", &self.min).field("server", &self.server).finish_non_exhaustive()
    }
}

impl Auditor {
    /// No records at all (no audit policy).
    pub fn disabled() -> Self {
        Self { min: None, queue: None, server: String::new() }
    }

    /// Start the writer thread: stdout, and `dir/audit-YYYY-MM-DD.jsonl` when a dir is given.
    pub fn start(policy: Option<&AuditSettings>, dir: Option<PathBuf>, server: &str) -> Self {
        let Some(policy) = policy else {
            return Self::disabled();
        };
        let queue = Arc::new(Queue {
            pending: Mutex::default(),
            ready: Condvar::new(),
            file: Mutex::new(dir.map(|d| DailyFile::new(d, policy.retention_days))),
        });
        let weak = Arc::downgrade(&queue);
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                let mut spare = Vec::new();
                while let Some(q) = weak.upgrade() {
                    {
                        let p = q.pending.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = q.ready.wait_timeout(p, FLUSH_INTERVAL);
                    }
                    q.flush(&mut spare);
                }
            })
            .expect("spawning the audit thread");
        Self { min: Some(policy.log_level), queue: Some(queue), server: server.to_string() }
    }

    /// The record passes the policy's logLevel.
    pub fn wants(&self, level: AuditLevel) -> bool {
        self.min.is_some_and(|min| level >= min)
    }

    /// Write out every record so far (at shutdown).
    pub fn flush(&self) {
        if let Some(q) = &self.queue {
            q.flush(&mut Vec::new());
        }
    }

    /// Write one record (stamped with time, level and server here).
    pub fn record(&self, mut rec: Record) {
        let level = rec.audit_level();
        if !self.wants(level) {
            return;
        }
        rec.level = match level {
            AuditLevel::Info => "info",
            AuditLevel::Warn => "warn",
            AuditLevel::Error => "error",
        };
        rec.time = Timestamp::now().round(jiff::Unit::Millisecond).unwrap_or_else(|_| Timestamp::now()).to_string();
        rec.server.clone_from(&self.server);
        let Some(q) = &self.queue else { return };
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        q.push(&line);
    }
}

fn today() -> Date {
    Timestamp::now().to_zoned(TimeZone::UTC).date()
}

/// `audit-YYYY-MM-DD.jsonl` in a directory, a new file each UTC day, old ones pruned.
pub struct DailyFile {
    dir: PathBuf,
    retention_days: u32,
    current: Option<(Date, File)>,
}

impl DailyFile {
    /// A writer into `dir`.
    pub fn new(dir: PathBuf, retention_days: u32) -> Self {
        Self { dir, retention_days, current: None }
    }

    /// The file of a day.
    pub fn path_for(dir: &Path, day: Date) -> PathBuf {
        dir.join(format!("audit-{day}.jsonl"))
    }

    /// Append a line to the file of `day`, rotating (and pruning) when the day changed.
    pub fn write(&mut self, line: &str, day: Date) -> std::io::Result<()> {
        if self.current.as_ref().is_none_or(|(d, _)| *d != day) {
            std::fs::create_dir_all(&self.dir)?;
            let f = OpenOptions::new().create(true).append(true).open(Self::path_for(&self.dir, day))?;
            self.current = Some((day, f));
            prune(&self.dir, day, self.retention_days);
        }
        let (_, f) = self.current.as_mut().expect("opened above");
        f.write_all(line.as_bytes())
    }
}

/// Delete audit files older than `retention_days` before `today`.
pub fn prune(dir: &Path, today: Date, retention_days: u32) -> Vec<PathBuf> {
    let Ok(oldest) = today.checked_sub(i64::from(retention_days).days()) else {
        return vec![];
    };
    let mut removed = vec![];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(day) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|d| d.parse::<Date>().ok())
        else {
            continue;
        };
        if day < oldest && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn rec(decision: Decision, status: u16) -> Record {
        Record { decision: Some(decision), status, ..Default::default() }
    }

    #[test]
    fn levels() {
        assert_eq!(rec(Decision::Allow, 200).audit_level(), AuditLevel::Info);
        assert_eq!(rec(Decision::Deny, 401).audit_level(), AuditLevel::Warn);
        assert_eq!(rec(Decision::Deny, 200).audit_level(), AuditLevel::Warn, "tool refused in a JSON-RPC error");
        assert_eq!(rec(Decision::Allow, 404).audit_level(), AuditLevel::Warn);
        assert_eq!(rec(Decision::Error, 502).audit_level(), AuditLevel::Error);
        assert_eq!(rec(Decision::Allow, 500).audit_level(), AuditLevel::Error);
    }

    #[test]
    fn log_level_filters() {
        let at = |l| Auditor { min: Some(l), queue: None, server: String::new() };
        assert!(at(AuditLevel::Info).wants(AuditLevel::Info));
        assert!(!at(AuditLevel::Warn).wants(AuditLevel::Info));
        assert!(at(AuditLevel::Warn).wants(AuditLevel::Warn));
        assert!(at(AuditLevel::Warn).wants(AuditLevel::Error));
        assert!(!at(AuditLevel::Error).wants(AuditLevel::Warn));
        assert!(!Auditor::disabled().wants(AuditLevel::Error));
    }

    #[test]
    fn records_are_written_in_batches_and_at_flush() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-audit-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let policy = AuditSettings { log_level: AuditLevel::Info, retention_days: 1 };
        let a = Auditor::start(Some(&policy), Some(dir.clone()), "srv");
        for status in [200, 401, 502] {
            a.record(Record { status, method: Some("tools/call".into()), ..Default::default() });
        }
        a.flush();
        let text = std::fs::read_to_string(DailyFile::path_for(&dir, today())).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[1]["status"], 401);
        assert_eq!(lines[2]["level"], "error");
        assert_eq!(lines[0]["server"], "srv");
        // Without an explicit flush the writer thread writes within its interval.
        a.record(Record { status: 200, ..Default::default() });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(DailyFile::path_for(&dir, today())).unwrap().lines().count() < 4 {
            assert!(std::time::Instant::now() < deadline, "not written by the writer thread");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn daily_files_rotate_and_prune() {
        let dir = std::env::temp_dir().join(format!("mcp-gw-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("audit-2024-01-01.jsonl"), "old\n").unwrap();
        std::fs::write(dir.join("unrelated.txt"), "keep\n").unwrap();
        let mut f = DailyFile::new(dir.clone(), 30);
        f.write("a\n", date(2024, 1, 31)).unwrap();
        assert!(dir.join("audit-2024-01-01.jsonl").exists(), "30 days old: kept");
        f.write("b\n", date(2024, 1, 31)).unwrap();
        f.write("c\n", date(2024, 2, 1)).unwrap();
        assert!(!dir.join("audit-2024-01-01.jsonl").exists(), "31 days old: pruned on rotation");
        assert!(dir.join("unrelated.txt").exists());
        assert_eq!(std::fs::read_to_string(dir.join("audit-2024-01-31.jsonl")).unwrap(), "a\nb\n");
        assert_eq!(std::fs::read_to_string(dir.join("audit-2024-02-01.jsonl")).unwrap(), "c\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
