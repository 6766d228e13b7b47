//! Small durable files: checkpoints and timer status, written atomically.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Writes `value` as JSON to `path` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over the target, fsync the folder.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(value)?)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes a rename or a file creation in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Folder-safe form of a name (consumer groups like `$Default` are kept readable).
pub fn safe_name(name: &str) -> String {
    if name.is_empty() || name == "." || name == ".." {
        return "_".repeat(name.len().max(1));
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._$".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_round_trip() {
        let dir = std::env::temp_dir().join(format!("devhost-state-{}", std::process::id()));
        let path = dir.join("a/b.json");
        assert_eq!(read_json::<u32>(&path).unwrap(), None);
        write_atomic(&path, &41u32).unwrap();
        write_atomic(&path, &42u32).unwrap();
        assert_eq!(read_json::<u32>(&path).unwrap(), Some(42));
        assert!(!path.with_extension("tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("$Default"), "$Default");
        assert_eq!(safe_name("../x/y"), ".._x_y");
        assert_eq!(safe_name(".."), "__");
    }
}
