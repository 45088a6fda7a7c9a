//! The files a running cluster leaves in its data directory: `cluster.json` (addresses,
//! secrets and instances, for scripts and the control commands) and `up.lock` (the pid of
//! the `hotel up` that owns the directory).
//!
//! `cluster.json` holds every token of the cluster, so the data directory is created
//! `0700` and every file in it `0600`, at creation (never widened and narrowed later).

use nix::{sys::signal::kill, unistd::Pid};
use serde::{Deserialize, Serialize};
use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// File name of the cluster description inside the data directory.
pub const CLUSTER_FILE: &str = "cluster.json";
/// File name of the lock inside the data directory.
pub const LOCK_FILE: &str = "up.lock";

/// One live instance as scripts see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// Instance name such as `room-2`.
    pub name: String,
    /// Role: registry, gateway, customer, room or booking.
    pub service: String,
    /// OS process id.
    pub pid: u32,
    /// `127.0.0.1:PORT` once known.
    pub address: Option<String>,
    /// starting, running, paused or stopping.
    pub state: String,
}

/// `<data-dir>/cluster.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The public gateway URL (`http://127.0.0.1:8080`).
    pub gateway_url: Option<String>,
    /// The gateway admin URL.
    pub admin_url: Option<String>,
    /// The registry URL.
    pub registry_url: Option<String>,
    /// Development API key (send as `Authorization: Bearer KEY`).
    pub api_key: String,
    /// Bearer token of the gateway admin API.
    pub admin_token: String,
    /// Bearer token for registry writes.
    pub registry_token: String,
    /// The supervisor's control URL (what `hotel kill|stop|start|...` call).
    pub control_url: String,
    /// Bearer token of the control API.
    pub control_token: String,
    /// Pid of the `hotel up` process.
    pub supervisor_pid: u32,
    /// Whether every instance of the initial topology answered `/readyz`.
    pub ready: bool,
    /// The live dashboard with this run's login token
    /// (`http://127.0.0.1:PORT/dashboard/login?token=dsh_...`): open it in a browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard_url: Option<String>,
    /// Jaeger UI address when traces are exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jaeger_url: Option<String>,
    /// With `hotel up --tls`: the local CA certificate that verifies the gateway
    /// (`curl --cacert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// With `hotel up --internal-tls`: the operators' (`control`) certificate, which
    /// `hotel status` and `hotel events` present to the services and the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_tls: Option<IdentityFiles>,
    /// Every live instance (exited ones are removed).
    pub instances: Vec<InstanceEntry>,
}

/// The files of one identity for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFiles {
    /// The CA every component trusts.
    pub ca: PathBuf,
    /// The certificate (naming the `control` role).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl From<&hotel_common::tls::local_ca::RoleFiles> for IdentityFiles {
    fn from(f: &hotel_common::tls::local_ca::RoleFiles) -> Self {
        IdentityFiles {
            ca: f.ca.clone(),
            cert: f.cert.clone(),
            key: f.key.clone(),
        }
    }
}

impl ClusterFile {
    /// With mutual TLS in the cluster, makes the operators' identity this process's, so
    /// its internal clients ([`hotel_common::tls::internal::reqwest_client`]) present it
    /// and its internal URLs are `https://`. Call before building those clients.
    pub fn install_identity(&self) -> Result<(), String> {
        if let Some(f) = &self.internal_tls {
            hotel_common::tls::internal::install(hotel_common::tls::internal::Identity::load(
                hotel_common::tls::internal::CONTROL_ROLE,
                &f.ca,
                &f.cert,
                &f.key,
            )?);
        }
        Ok(())
    }
}

/// Why a data directory's files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No `cluster.json`: nothing was started here.
    #[error("no cluster in {0}: start one with `hotel up --data-dir {0}`")]
    NoCluster(String),
    /// `cluster.json` exists but is not ours.
    #[error("{path} is not a cluster file: {why}")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        why: String,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another `hotel up` owns the directory.
    #[error(
        "a cluster is already running in {dir} (hotel up, pid {pid}); stop it with Ctrl-C or `kill {pid}`, or use another --data-dir"
    )]
    Locked {
        /// The data directory.
        dir: String,
        /// The owner's pid.
        pid: u32,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl ClusterFile {
    /// The path of `cluster.json` in `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(CLUSTER_FILE)
    }

    /// Reads `<data_dir>/cluster.json`.
    pub fn read(data_dir: &Path) -> Result<ClusterFile, FileError> {
        let path = Self::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FileError::NoCluster(data_dir.display().to_string()));
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_str(&text).map_err(|e| FileError::Corrupt {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Writes `<data_dir>/cluster.json` atomically: a reader sees the old or the new file,
    /// never half of one.
    pub fn write(&self, data_dir: &Path) -> Result<(), FileError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!(
            ".{CLUSTER_FILE}.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let body = serde_json::to_vec_pretty(self).map_err(|e| FileError::Corrupt {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = private_file(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(&path)(e)
        })
    }
}

/// Mode of every file `hotel up` writes in its data directory: the owner's only.
pub const FILE_MODE: u32 = 0o600;
/// Mode of the data directory and the directories in it.
pub const DIR_MODE: u32 = 0o700;

/// Creates (or truncates) `path` for writing; a new file gets [`FILE_MODE`].
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `dir` and its missing parents with [`DIR_MODE`]; an existing directory is
/// left as it is.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Whether a process with this pid exists (signal 0 probes without sending anything).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match kill(Pid::from_raw(raw), None) {
        Ok(()) => true,
        // EPERM: it exists but belongs to someone else.
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// `<data-dir>/up.lock`, held by one `hotel up` for its lifetime; removed on drop.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// Takes the lock of `data_dir`, replacing a stale one whose owner is gone.
    pub fn acquire(data_dir: &Path) -> Result<Lock, FileError> {
        let path = data_dir.join(LOCK_FILE);
        // Two attempts: the second after clearing a lock left by a dead process.
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id()).map_err(io_err(&path))?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if pid_alive(pid) && pid != std::process::id() => {
                            return Err(FileError::Locked {
                                dir: data_dir.display().to_string(),
                                pid,
                            });
                        }
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(FileError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(
                "the lock file keeps reappearing; is another hotel up starting?",
            ),
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tempdir() -> hotel_testkit::TempDir {
        hotel_testkit::TempDir::new("cluster")
    }

    #[test]
    fn cluster_file_round_trips_and_leaves_no_temp_files() {
        let dir = tempdir();
        let file = ClusterFile {
            gateway_url: Some("http://127.0.0.1:1".into()),
            api_key: "k".into(),
            instances: vec![InstanceEntry {
                name: "room-1".into(),
                service: "room".into(),
                pid: 42,
                address: Some("127.0.0.1:2".into()),
                state: "running".into(),
            }],
            ..ClusterFile::default()
        };
        file.write(&dir).unwrap();
        file.write(&dir).unwrap();
        assert_eq!(ClusterFile::read(&dir).unwrap(), file);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(CLUSTER_FILE)]);
    }

    #[test]
    fn cluster_file_and_lock_are_readable_by_their_owner_only_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempdir();
        let dir = root.join("data");
        private_dir(&dir.join("logs")).unwrap();
        ClusterFile::default().write(&dir).unwrap();
        let lock = Lock::acquire(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("logs")), 0o700);
        assert_eq!(mode(&ClusterFile::path(&dir)), 0o600);
        assert_eq!(mode(&dir.join(LOCK_FILE)), 0o600);
        drop(lock);
    }

    #[test]
    fn reading_an_empty_directory_says_no_cluster_runs_there() {
        let dir = tempdir();
        let err = ClusterFile::read(&dir).unwrap_err();
        assert!(err.to_string().contains("hotel up"), "{err}");
    }

    #[test]
    fn a_live_lock_refuses_a_second_owner_and_a_stale_one_is_replaced() {
        let dir = tempdir();
        // pid 1 is always alive: a lock naming it belongs to someone else.
        std::fs::write(dir.join(LOCK_FILE), "1\n").unwrap();
        let err = Lock::acquire(&dir).unwrap_err();
        assert!(matches!(err, FileError::Locked { pid: 1, .. }), "{err}");
        // A pid that cannot exist is stale.
        std::fs::write(dir.join(LOCK_FILE), format!("{}\n", i32::MAX)).unwrap();
        let lock = Lock::acquire(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
        assert!(!dir.join(LOCK_FILE).exists());
    }
}
