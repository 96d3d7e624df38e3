//! Where a logical unit's persistent reservations live while APTPL is set
//! (SPC-4 §5.9.4): `<LUN file>.pr` beside the backing file, replaced
//! crash-safely (write a temporary file, fsync it, rename it over the old
//! one, fsync the directory), read back when the target starts.
//!
//! A null LUN has no file to keep it beside: it has no store, so REPORT
//! CAPABILITIES says PTPL_C 0 and a REGISTER with APTPL set is refused with
//! INVALID FIELD IN PARAMETER LIST.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use scsi::LogicalUnit;
use scsi::persistent_reservation::{PersistentReservations, PrStore};

/// The APTPL file of the LUN backed by `lun_file`.
pub fn path_for(lun_file: &Path) -> PathBuf {
    let mut p = lun_file.as_os_str().to_owned();
    p.push(".pr");
    PathBuf::from(p)
}

/// A PR state file, replaced atomically on every change.
#[derive(Debug)]
pub struct FilePrStore {
    path: PathBuf,
}

impl FilePrStore {
    pub fn new(path: PathBuf) -> FilePrStore {
        FilePrStore { path }
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

impl PrStore for FilePrStore {
    fn save(&self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
            return sync_dir(&self.path);
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path)
    }
}

/// Give `unit` an APTPL store beside `lun_file` (none for a null LUN), loading
/// what an earlier run stored there.
pub fn attach(unit: LogicalUnit, lun_file: Option<&PathBuf>) -> anyhow::Result<LogicalUnit> {
    let Some(lun_file) = lun_file else {
        return Ok(unit);
    };
    let path = path_for(lun_file);
    let saved = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !saved.is_empty() {
        tracing::info!(
            "persistent reservations of {} restored from {} (APTPL)",
            lun_file.display(),
            path.display()
        );
    }
    let pr = PersistentReservations::with_store(Arc::new(FilePrStore::new(path.clone())), &saved)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(unit.with_persistent_reservations(pr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_replaces_and_empty_removes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lun.img.pr");
        let s = FilePrStore::new(p.clone());
        s.save(b"one").unwrap();
        s.save(b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("lun.img.pr.tmp").exists());
        s.save(b"").unwrap();
        assert!(!p.exists());
        s.save(b"").unwrap();
        assert_eq!(
            path_for(Path::new("/x/lun.img")),
            PathBuf::from("/x/lun.img.pr")
        );
    }
}
